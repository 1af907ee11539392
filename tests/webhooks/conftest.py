"""Fixtures of the webhook tests: a receiver on loopback, deliverers, a subscribed owner."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from taskmanager.webhooks.delivery import Deliverer
from tests.conftest import UserFactory
from tests.factories import create_project
from tests.webhooks.support import Receiver, Subscription, create_webhook, running_receiver

DelivererFactory = Callable[..., Deliverer]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture
async def make_deliverer(app: FastAPI) -> AsyncIterator[DelivererFactory]:
    """Deliverers on the test app's database (``allow_private=`` overrides the setting),
    stopped after the test."""
    made: list[Deliverer] = []

    def factory(**options: Any) -> Deliverer:
        settings = app.state.settings
        if "allow_private" in options:
            settings = settings.model_copy(
                update={"webhook_allow_private_targets": options.pop("allow_private")}
            )
        deliverer = Deliverer(app.state.database, settings, **options)
        made.append(deliverer)
        return deliverer

    yield factory
    for deliverer in made:
        await deliverer.stop()


Subscribe = Callable[..., Awaitable[Subscription]]


@pytest.fixture
def subscribe(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory, receiver: Receiver
) -> Subscribe:
    """A new owner's project and the owner's webhook to ``url`` (default: ``receiver``'s
    /hook) for every event unless ``fields`` (the create body's) say otherwise."""

    async def factory(url: str | None = None, **fields: Any) -> Subscription:
        owner = await make_user()
        project = await create_project(app, owner)
        hook = await create_webhook(client, owner, url or receiver.url(), **fields)
        return Subscription(client, app, owner, project, hook)

    return factory


@pytest.fixture
async def subscribed(subscribe: Subscribe) -> Subscription:
    """``subscribe()``: an owner's project and a webhook for every event to the receiver."""
    return await subscribe()
