"""Work that must commit in the request's own transaction, or not at all.

``kit.deps.get_session`` owns the request's write transaction. A layer above the routes (the
``Idempotency-Key`` middleware) can attach a ``TransactionHook`` to the request's scope; the
session dependency then calls ``begin`` once the transaction is open and ``before_commit``
just before it commits, and the route class (``kit.routing.CheckedRoute``) hands the
hook the finished response first. What the hook writes commits atomically with the change
the request made: both survive a crash, or neither does.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response
from starlette.types import Scope

_STATE_KEY = "transaction_hook"


class TransactionHook(Protocol):
    async def begin(self, session: AsyncSession) -> None:
        """The request's write transaction is open; may raise to stop the request."""
        ...

    def response_ready(self, response: Response) -> None:
        """The route's response, complete, before the transaction commits."""
        ...

    async def before_commit(self, session: AsyncSession) -> None:
        """Last writes of the transaction, after the route returned."""
        ...


def attach(scope: Scope, hook: TransactionHook) -> None:
    scope.setdefault("state", {})[_STATE_KEY] = hook


def hook_of(scope: Scope) -> TransactionHook | None:
    state = scope.get("state")
    if not isinstance(state, dict):
        return None
    hook: TransactionHook | None = state.get(_STATE_KEY)
    return hook
