"""Every table, one module per domain. Importing this package registers all of them.

Modules are discovered, not listed: a new ``models/<domain>.py`` is part of the metadata
(Alembic autogenerate, ``alembic check``, the tests' table cleanup) with no registry edit.
"""

from __future__ import annotations

import importlib
import pkgutil

from taskmanager.models.base import Base

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Base"]
