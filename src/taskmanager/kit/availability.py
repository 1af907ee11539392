"""Dependency outages: which failures mean "unreachable", and a breaker that remembers them.

Every failure to reach a dependency — refused, DNS, authentication, a missing database, a
connection lost mid-query, a timeout, an exhausted pool — is answered with 503
``SERVICE_UNAVAILABLE`` and ``Retry-After`` (API.md §1), never a 500. ``is_unavailable``
decides whether an exception is such a failure, whichever layer raised it (SQLAlchemy, the
asyncpg or sqlite3 driver, the socket, redis-py).

A ``Breaker`` per dependency remembers an outage: after a failure that means the server
cannot be reached (not merely one lost connection), calls fail fast for a back-off period
that doubles while the outage lasts (capped), so a black-holed database or a frozen Redis
costs a request a few microseconds instead of a timeout each. The first failure of an
incident logs one warning line (no traceback) and the first success afterwards logs the
recovery; failures in between are only counted.
"""

from __future__ import annotations

import math
import sqlite3
import sys
import time
from types import ModuleType

import anyio
import structlog
from sqlalchemy import exc as sa_exc

from taskmanager.kit.errors import ServiceUnavailable

log = structlog.get_logger("taskmanager.availability")

# Caps the doubling back-off: an outage is re-probed at least this often.
MAX_BACKOFF_SECONDS = 5.0


class Backoff:
    """The waits of a background loop whose step fails (a database or Redis outage):
    ``initial`` seconds, doubling to at most ``ceiling``, back to ``initial`` on success."""

    def __init__(self, initial: float, ceiling: float = 30.0) -> None:
        self.initial = self.current = initial
        self.ceiling = ceiling

    async def failed(self, event: str, exc: Exception) -> None:
        """Log one line (no traceback: an outage is not a bug) and wait the current delay."""
        log.warning(event, error=f"{type(exc).__name__}: {exc}"[:300])
        await anyio.sleep(self.current)
        self.current = min(self.current * 2, self.ceiling)

    def succeeded(self) -> None:
        self.current = self.initial


# Server-side conditions that mean "cannot serve now", as opposed to a bad query
# (asyncpg's exception classes, by name).
_ASYNCPG_UNAVAILABLE = (
    "PostgresConnectionError",  # class 08: connection failures
    "InterfaceError",  # the client-side connection is closed or unusable
    "CannotConnectNowError",  # 57P03: starting up / shutting down
    "AdminShutdownError",
    "CrashShutdownError",
    "QueryCanceledError",  # 57014: statement_timeout
    "InsufficientResourcesError",  # class 53: too many connections, disk full
    "InvalidCatalogNameError",  # 3D000: the database does not exist
    "InvalidAuthorizationSpecificationError",  # class 28: authentication failed
    # The database is up but this statement lost to another transaction: a row lock held
    # past lock_timeout (55P03), a deadlock or serialization failure (class 40). Busy, not
    # an outage (not in _ASYNCPG_OUTAGE): this request is refused, the next may succeed.
    "LockNotAvailableError",
    "TransactionRollbackError",
)
# Of those, the ones that say the server is unreachable (``is_outage``).
_ASYNCPG_OUTAGE = (
    "CannotConnectNowError",
    "InvalidCatalogNameError",
    "InvalidAuthorizationSpecificationError",
    "QueryCanceledError",
)


def _classes(module_name: str, names: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    """The named exception classes of a driver, or none while it is not imported.

    The drivers are imported by whatever uses them (SQLAlchemy's asyncpg dialect, the Redis
    client); until then none of their exceptions can exist, and start-up need not pay for
    importing them (redis-py with its cryptography import: ~0.1 s; asyncpg: ~30 ms).
    """
    module: ModuleType | None = sys.modules.get(module_name)
    if module is None:
        return ()
    return tuple(getattr(module, name) for name in names)


def redis_errors() -> tuple[type[BaseException], ...]:
    """redis-py's base error class (none before redis-py is imported)."""
    return _classes("redis.exceptions", ("RedisError",))


_SQLITE_UNAVAILABLE = (sqlite3.OperationalError,)  # locked, I/O error, cannot open


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(chain) < 8:
        seen.add(id(current))
        chain.append(current)
        orig = getattr(current, "orig", None)
        current = (
            orig if isinstance(orig, BaseException) else current.__cause__ or current.__context__
        )
    return chain


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means a dependency could not be reached or could not answer in time.

    True for SQLAlchemy's operational, interface, disconnection and pool-timeout errors,
    a DBAPI error on an invalidated connection, the asyncpg connection, shutdown, timeout,
    resource, missing-database and authentication errors, a statement that lost to another
    transaction (lock timeout, deadlock, serialization failure), sqlite3's operational errors,
    any ``OSError`` (refused, reset, DNS, socket timeouts; ``TimeoutError`` is one) and any
    redis-py error. False for everything else, including integrity and data errors.
    """
    for error in _causes(exc):
        if isinstance(error, sa_exc.IntegrityError | sa_exc.DataError | sa_exc.ProgrammingError):
            return False
        if isinstance(
            error,
            sa_exc.OperationalError
            | sa_exc.InterfaceError
            | sa_exc.DisconnectionError
            | sa_exc.TimeoutError,
        ):
            return True
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, (*_classes("asyncpg", _ASYNCPG_UNAVAILABLE), *_SQLITE_UNAVAILABLE)):
            return True
        if isinstance(error, (OSError, *redis_errors())):
            return True
    return False


def is_contention(exc: BaseException) -> bool:
    """Whether ``exc`` says the statement lost to another transaction while the database
    answered: a row lock held past ``lock_timeout`` (55P03), a deadlock or serialization
    failure (class 40). A retry may succeed at once; nothing about the database is wrong."""
    contended = _classes("asyncpg", ("LockNotAvailableError", "TransactionRollbackError"))
    return any(isinstance(error, contended) for error in _causes(exc))


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the server is unreachable (not just one connection or a busy pool).

    Connect failures, timeouts and authentication/missing-database errors open the breaker;
    a single dropped connection (a restart, an idle kill) or pool exhaustion do not.
    """
    for error in _causes(exc):
        if isinstance(error, sa_exc.TimeoutError):
            return False  # pool exhausted: overload, not an outage
        if isinstance(
            error, (TimeoutError, ConnectionRefusedError, *_classes("asyncpg", _ASYNCPG_OUTAGE))
        ):
            return True
        if isinstance(error, OSError) and not isinstance(error, ConnectionResetError):
            # DNS failures (socket.gaierror), unreachable networks, refused connections.
            return True
        if isinstance(error, redis_errors()):
            return True
    return False


class Breaker:
    """Remembers that a dependency is down, so calls fail fast until the back-off ends.

    ``check()`` raises ServiceUnavailable while the dependency is known down; ``failed()``
    records a failure (opening the breaker if it is an outage); ``succeeded()`` closes it.
    Cheap when healthy: ``check`` and ``succeeded`` are an attribute test each.
    """

    def __init__(self, name: str, *, backoff_seconds: float) -> None:
        self.name = name
        self.initial_backoff = backoff_seconds
        self._down_until = 0.0
        self._backoff = 0.0
        self._incident_failures = 0
        self._incident_started = 0.0

    @property
    def is_open(self) -> bool:
        return self._down_until > 0.0 and time.monotonic() < self._down_until

    def retry_after(self) -> int:
        """Whole seconds until the next attempt (at least 1), for ``Retry-After``."""
        return max(1, math.ceil(self._down_until - time.monotonic()))

    def error(self, detail: str | None = None) -> ServiceUnavailable:
        return ServiceUnavailable(
            detail or f"The {self.name} is unavailable; try again shortly",
            headers={"Retry-After": str(self.retry_after() if self.is_open else 1)},
        )

    def check(self) -> None:
        """Raise ServiceUnavailable (with Retry-After) while the dependency is known down."""
        if self._down_until and time.monotonic() < self._down_until:
            raise self.error()

    def failed(self, exc: BaseException) -> None:
        """Record a failure to reach the dependency; log once per incident."""
        if self._incident_failures == 0:
            self._incident_started = time.monotonic()
            log.warning(
                "dependency_unavailable",
                dependency=self.name,
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
            )
        self._incident_failures += 1
        if is_outage(exc):
            self._backoff = min(
                MAX_BACKOFF_SECONDS,
                self._backoff * 2 if self._backoff else self.initial_backoff,
            )
            self._down_until = time.monotonic() + self._backoff

    def succeeded(self) -> None:
        """The dependency answered: close the breaker and log the recovery once."""
        if self._incident_failures == 0:
            return
        log.warning(
            "dependency_recovered",
            dependency=self.name,
            failures=self._incident_failures,
            outage_s=round(time.monotonic() - self._incident_started, 3),
        )
        self._incident_failures = 0
        self._backoff = 0.0
        self._down_until = 0.0
