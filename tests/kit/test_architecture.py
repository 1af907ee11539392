"""The architecture contracts cover the whole tree: lint-imports checks only the packages a
contract names, so a domain left off the layers contract would be checked by nothing."""

from __future__ import annotations

import tomllib
from pathlib import Path

from fastapi.routing import APIRoute, APIWebSocketRoute

import taskmanager
from taskmanager.registry import DOMAINS

PACKAGE = Path(taskmanager.__file__).parent
PYPROJECT = PACKAGE.parents[1] / "pyproject.toml"


def _layered() -> set[str]:
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    names: set[str] = set()
    for layer in layers:
        for part in layer.replace("|", ":").split(":"):
            names.add(part.strip().removeprefix("taskmanager."))
    return names


def test_every_package_and_module_is_in_a_layer() -> None:
    top_level = {
        path.stem if path.is_file() else path.name
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__")
        or (path.is_dir() and (path / "__init__.py").exists())
    }
    assert top_level - _layered() == set(), "add these to the layers contract in pyproject.toml"


def test_every_registered_domain_is_a_layered_package() -> None:
    packages = {
        route.endpoint.__module__.split(".")[1]
        for domain in DOMAINS
        for route in domain.router.routes
        if isinstance(route, APIRoute | APIWebSocketRoute)
    }
    assert len(packages) == len(DOMAINS)
    assert packages <= _layered()
