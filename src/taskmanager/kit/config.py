"""Typed settings, read from the environment (prefix ``TASKMANAGER_``) or a ``.env`` file."""

from __future__ import annotations

import difflib
import ipaddress
import os
import secrets
import tempfile
from collections.abc import Callable, Iterable
from email.utils import parseaddr
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from limits import parse as parse_rate_limit
from limits import parse_many
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "TASKMANAGER_"
SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name, not a secret


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


def _url_schemes(schemes: tuple[str, ...], message: str) -> Callable[[str], str]:
    """A URL setting's validator: empty (not set), or starting with one of ``schemes``."""

    def check(value: str) -> str:
        if value and not value.startswith(schemes):
            raise ValueError(message)
        return value

    return check


def _parsed_by(parse: Callable[[str], object], what: str) -> Callable[[str], str]:
    """A setting's validator: ``parse`` (raising ValueError) must read it as ``what``."""

    def check(value: str) -> str:
        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not {what}") from exc
        return value

    return check


class SettingsError(Exception):
    """A setting is invalid; the message is one line that names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    env: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path("./data")
    database_url: str = ""
    redis_url: str = ""
    secret_key: str = Field(default="", repr=False)

    access_token_expire_minutes: int = Field(default=30, ge=1, le=24 * 60)
    refresh_token_expire_days: int = Field(default=14, ge=1, le=365)
    # Absolute lifetime of one login's refresh-token family, however often it is rotated.
    session_max_days: int = Field(default=90, ge=1, le=3650)
    allow_registration: bool = True
    allowed_origins: Annotated[list[str], NoDecode] = ["http://localhost:3000"]

    rate_limit_enabled: bool = True
    rate_limit_default: str = "300/minute"
    rate_limit_auth: str = "10/minute"
    # Failed logins for one account from one address, and (with back-off tiers) for one
    # account from addresses that have not logged in to it before.
    rate_limit_login_address: str = "5/minute;20/hour"
    rate_limit_login_account: str = "20/minute;100/hour;300/day"
    # Who may set X-Forwarded-For/-Proto: IPs or networks, comma-separated, or "*".
    forwarded_allow_ips: str = "127.0.0.1"

    # Argon2 hashes one worker computes at once (each holds ~19 MiB); the rest wait briefly.
    password_hash_concurrency: int = Field(default=2, ge=1, le=64)
    password_hash_wait_seconds: float = Field(default=2.0, gt=0, le=60)

    metrics_token: str = Field(default="", repr=False)
    # Production refuses an open /metrics unless the operator says it is meant to be open
    # (e.g. reachable only on a private network that Prometheus scrapes).
    metrics_public: bool = False
    docs_enabled: bool = True

    # Outgoing mail (password reset): smtp://user:pass@host:port or smtps://...
    smtp_url: str = Field(default="", repr=False)
    mail_from: str = ""
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Where the reset mail links to; "{token}" is replaced by the single-use token.
    password_reset_url: str = "http://localhost:3000/reset-password?token={token}"  # noqa: S105

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    request_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    shutdown_timeout_seconds: float = Field(default=20.0, ge=0, le=3600)

    webhook_allow_private_targets: bool = False

    # Where attachments live: file:///absolute/dir, or s3://bucket/prefix (endpoint and
    # credentials from the usual AWS_* variables). Empty: file://<data dir>/attachments.
    storage_url: str = ""
    # How long events stay in the outbox, replayable with ?since= (API.md §7).
    event_retention_days: int = Field(default=7, ge=1, le=3650)
    # How often a process looks for events without being told (no Redis, a Redis outage,
    # events committed by a process that died before numbering them).
    event_poll_seconds: float = Field(default=2.0, gt=0, le=60)
    # false: ``serve`` runs none of the background loops (event numbering, pruning, ...),
    # only its WebSocket hub; ``taskmanager worker`` processes do that work.
    background_in_serve: bool = True
    # WebSocket /api/v1/ws (API.md §7): events queued per connection before it is closed
    # as too slow (4408); open connections per user and server process (4429); how often a
    # connection re-checks that its user is active and its credential still good (4403,
    # 4401); protocol-level ping interval, a client not answering within it is closed.
    ws_queue_size: int = Field(default=1000, ge=1, le=100_000)
    ws_max_connections_per_user: int = Field(default=10, ge=1, le=10_000)
    ws_recheck_seconds: float = Field(default=30.0, gt=0, le=3600)
    ws_ping_seconds: float = Field(default=20.0, gt=0, le=600)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    # Sized for the concurrency a worker admits (``effective_max_concurrency`` is twice it):
    # a request holds its connection for most of its life, so a pool far below the admitted
    # concurrency turns into a queue inside the worker, with the latency of a queue
    # (README, Performance). Workers x pool must stay under PostgreSQL's max_connections.
    db_pool_size: int = Field(default=32, ge=1, le=200)
    # No overflow by default: QueuePool closes overflow connections on check-in, so load
    # above pool_size reconnects (TCP, TLS, auth) on every burst; queueing is far cheaper.
    db_max_overflow: int = Field(default=0, ge=0, le=200)
    # Every wait on the database is bounded so that an outage answers 503 within 3 s.
    db_pool_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    db_connect_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    db_statement_timeout_seconds: float = Field(default=2.0, gt=0, le=3600)
    db_pool_pre_ping: bool = True
    sqlite_busy_timeout_ms: int = Field(default=2_000, ge=0, le=600_000)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"

    redis_timeout_seconds: float = Field(default=0.25, gt=0, le=30)
    # After a dependency is found unreachable it is not tried for this long (doubling while
    # the outage lasts, up to 5 s): requests answer 503 at once instead of each timing out.
    outage_backoff_seconds: float = Field(default=0.5, gt=0, le=5)

    # Requests in progress per worker before shedding with 503; 0 picks 2 x the pool size
    # (at least 64). A request over the limit waits admission_timeout_ms for a slot.
    max_concurrency: int = Field(default=0, ge=0, le=100_000)
    admission_timeout_ms: int = Field(default=20, ge=0, le=10_000)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    drain_seconds: float = Field(default=5.0, ge=0, le=3600)

    # Test-only: lets a request ask the server to die at a chosen point (see kit.faults).
    fault_injection: bool = False

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper_synchronous(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        """Accept a JSON list (as documented) or a comma-separated string."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import orjson

                try:
                    return orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    raise ValueError("must be a JSON list of origins") from exc
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an http(s) origin")
        return value

    _check_rate = field_validator("rate_limit_default", "rate_limit_auth")(
        _parsed_by(parse_rate_limit, "a rate such as '300/minute'")
    )
    _check_rates = field_validator("rate_limit_login_address", "rate_limit_login_account")(
        _parsed_by(parse_many, "a rate list such as '5/minute;20/hour'")
    )

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_forwarded(cls, value: str) -> str:
        for item in (part.strip() for part in value.split(",")):
            if item == "*" or item.startswith("unix:"):
                continue
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp(cls, value: str) -> str:
        if not value:
            return value
        url = urlsplit(value)
        if url.scheme not in ("smtp", "smtps") or not url.hostname:
            raise ValueError("must be smtp://host[:port] or smtps://host[:port]")
        try:
            _ = url.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value

    @field_validator("mail_from")
    @classmethod
    def _check_mail_from(cls, value: str) -> str:
        if value and "@" not in parseaddr(value)[1]:
            raise ValueError("must be an address such as 'Taskmanager <noreply@example.com>'")
        return value

    @field_validator("password_reset_url")
    @classmethod
    def _check_reset_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or "{token}" not in value:
            raise ValueError("must be an http(s) URL containing {token}")
        return value

    @model_validator(mode="after")
    def _check_mail(self) -> Settings:
        if self.smtp_url and not self.mail_from:
            raise ValueError("TASKMANAGER_MAIL_FROM must be set with TASKMANAGER_SMTP_URL")
        return self

    _check_database_url = field_validator("database_url")(
        _url_schemes(
            ("sqlite+aiosqlite://", "postgresql+asyncpg://"),
            "must start with sqlite+aiosqlite:// or postgresql+asyncpg://",
        )
    )
    _check_storage_url = field_validator("storage_url")(
        _url_schemes(("file:///", "s3://"), "must be file:///absolute/path or s3://bucket[/prefix]")
    )
    _check_redis_url = field_validator("redis_url")(
        _url_schemes(
            ("redis://", "rediss://", "unix://"), "must start with redis://, rediss:// or unix://"
        )
    )

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env is not Environment.PRODUCTION:
            return self
        if not self.secret_key:
            raise ValueError("TASKMANAGER_SECRET_KEY must be set when TASKMANAGER_ENV=production")
        if len(self.secret_key) < 32:
            raise ValueError("TASKMANAGER_SECRET_KEY must be at least 32 characters in production")
        if self.is_sqlite:
            path = self.sqlite_path
            temp = Path(tempfile.gettempdir()).resolve()
            if path is None or path.resolve().is_relative_to(temp):
                raise ValueError(
                    "TASKMANAGER_DATABASE_URL points SQLite at memory or a temp dir in production"
                )
        if self.webhook_allow_private_targets:
            raise ValueError(
                "TASKMANAGER_WEBHOOK_ALLOW_PRIVATE_TARGETS must be false in production"
            )
        if "*" in self.allowed_origins:
            raise ValueError("TASKMANAGER_ALLOWED_ORIGINS may not contain '*' in production")
        plain = [origin for origin in self.allowed_origins if not origin.startswith("https://")]
        if plain:
            # A page served over plain HTTP can be rewritten in transit, and with it every
            # credentialed request it makes to the API (the Fetch standard's CORS model
            # trusts the origin, not the network path).
            raise ValueError(
                f"TASKMANAGER_ALLOWED_ORIGINS: {plain[0]!r} is not https:// in production; "
                "list your front end's https:// origins, or [] for none"
            )
        if not self.metrics_token and not self.metrics_public:
            raise ValueError(
                "TASKMANAGER_METRICS_TOKEN is empty, so /metrics would be open: set it "
                "(a bearer token for the scraper), or set TASKMANAGER_METRICS_PUBLIC=true "
                "if /metrics is meant to be open"
            )
        if self.smtp_url and not self.password_reset_url.startswith("https://"):
            raise ValueError(
                "TASKMANAGER_PASSWORD_RESET_URL must be an https:// URL in production: "
                "the reset mail's link carries a single-use token"
            )
        if self.fault_injection:
            raise ValueError(
                "TASKMANAGER_FAULT_INJECTION is test-only; it must be false in production"
            )
        return self

    @property
    def effective_max_concurrency(self) -> int:
        """Requests in progress per worker before load is shed.

        Twice the pool, at least 64: every admitted request can get a connection after at
        most one other request's turn, and the requests that need none (the fast read's
        is brief; a login's password check holds none) fill the rest.
        """
        return self.max_concurrency or max(64, 2 * self.db_pool_size)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'taskmanager.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file, or None for an in-memory database."""
        url = self.effective_database_url
        if not url.startswith("sqlite"):
            return None
        path = url.split(":///", 1)[1] if ":///" in url else ""
        path = path.split("?", 1)[0]
        if not path or path == ":memory:":
            return None
        return Path(path)

    @property
    def attachments_dir(self) -> Path:
        return self.data_dir / "attachments"

    @property
    def effective_storage_url(self) -> str:
        """Where attachments are stored: the configured URL, else the data dir's folder."""
        return self.storage_url or self.attachments_dir.resolve().as_uri()

    @cached_property
    def signing_key(self) -> str:
        """The JWT signing key: the configured one, else one generated once into the data dir."""
        if self.secret_key:
            return self.secret_key
        return _load_or_create_secret(self.data_dir / SECRET_KEY_FILE)


def _load_or_create_secret(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    key = secrets.token_urlsafe(48)
    # O_EXCL: two processes starting at once must agree on one key, not each write their own.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first offending variable, e.g. for a start-up failure."""
    first = exc.errors()[0]
    loc = [str(part) for part in first.get("loc", ())]
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if loc:
        return f"{ENV_PREFIX}{loc[0].upper()}: {message}"
    return message if message.startswith(ENV_PREFIX) else f"invalid settings: {message}"


# Settings the contract names (API.md §9) for parts still being built elsewhere: accepted so
# a deployment written against the contract (compose.yaml, the Kubernetes ConfigMap) starts.
# Each becomes a field of ``Settings`` when its part lands; then its line here can go.
CONTRACT_ONLY_VARIABLES = frozenset(
    {
        "TASKMANAGER_DRAIN_SECONDS",
        "TASKMANAGER_MAX_HEADER_BYTES",
        "TASKMANAGER_MAX_CONCURRENCY",
        "TASKMANAGER_STORAGE_URL",
        "TASKMANAGER_EVENT_RETENTION_DAYS",
    }
)


def known_variables() -> list[str]:
    """Every ``TASKMANAGER_*`` name a setting is read from (or the contract reserves)."""
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(fields | CONTRACT_ONLY_VARIABLES)


def _env_file_names() -> list[str]:
    env_file = Path(str(Settings.model_config.get("env_file") or ""))
    if not env_file.name or not env_file.is_file():
        return []
    from dotenv import dotenv_values

    return [name for name in dotenv_values(env_file) if name]


def check_unknown_variables(names: Iterable[str]) -> None:
    """Refuse a ``TASKMANAGER_*`` name no setting reads (a typo would silently fall back to
    a default: ``TASKMANAGER_DATABSE_URL`` to SQLite). One line, with the closest known name.
    """
    known = known_variables()
    for name in sorted(names):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f"; known names: {', '.join(known)}"
        raise SettingsError(f"{upper}: unknown setting{hint}")


def load_settings(**overrides: Any) -> Settings:
    """Build and validate settings; raise SettingsError with a one-line message.

    Unknown ``TASKMANAGER_*`` names in the environment or the ``.env`` file are errors too.
    """
    check_unknown_variables([*os.environ, *_env_file_names()])
    try:
        settings = Settings(**overrides)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        _ = settings.signing_key
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None
    except OSError as exc:
        raise SettingsError(f"{ENV_PREFIX}DATA_DIR: cannot use data directory: {exc}") from None
    return settings
