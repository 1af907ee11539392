"""Structured logging with structlog: JSON lines, or a console renderer for humans.

Every line passes through ``redact_secrets``, so a password, token, key or credential
header given to a logger by mistake is masked before it is rendered.

Query strings are logged by allow-list (``redact_query``): only the parameters the matched
route declares are shown in clear, and not even those when their name looks like a
credential; every other value is ``[REDACTED]``, and a name that does not look like a
parameter name (it may be a secret pasted in the wrong place) is redacted too. Cursors carry
the filters and sort keys of a page (task titles among them), so they are logged as a short
digest, enough to tell two apart.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson
import structlog

from taskmanager.kit.config import Settings

REDACTED = "[REDACTED]"

# Field names (exact, lower-case) whose values never reach a log line.
_SENSITIVE_KEYS = frozenset(
    {
        "password",
        "current_password",
        "new_password",
        "confirm_password",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apikey",
        "x-api-key",
        "key",
        "secret",
        "client_secret",
        "authorization",
        "cookie",
        "set-cookie",
        "signature",
        "sig",
        "auth",
        "bearer",
        "jwt",
        "pwd",
        "passwd",
        "pass",
        "credential",
        "credentials",
        "session",
        "session_id",
        "sessionid",
    }
)
# Query parameters additionally masked (an OAuth authorization code is a credential).
_SENSITIVE_QUERY_KEYS = _SENSITIVE_KEYS | {"code"}
# Substrings that mark a field as sensitive whatever its exact name.
_SENSITIVE_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "authorization",
    "cookie",
    "jwt",
    "bearer",
    "credential",
)
# Parameter names shown even when undeclared (their value never is); anything else that
# arrives as a name is masked too: a key or token can be sent as a bare "?tm_...".
_PLAIN_NAME = re.compile(r"[A-Za-z][A-Za-z_-]{0,31}")
CURSOR_PARAMS = frozenset({"cursor"})
_NESTED = re.compile(r"[=;&]")
_MAX_LOGGED_PARAMS = 50

# Our handler carries this attribute so reconfiguring replaces it and nothing else
# (pytest's log capture, an operator's extra handler).
_HANDLER_MARK = "_taskmanager_handler"


@functools.lru_cache(maxsize=1024)
def is_sensitive(name: str) -> bool:
    # Cached: log field names repeat on every line, and this runs for each of them.
    lowered = name.lower()
    return lowered in _SENSITIVE_KEYS or any(part in lowered for part in _SENSITIVE_PARTS)


def _is_sensitive_param(name: str) -> bool:
    return name.lower() in _SENSITIVE_QUERY_KEYS or is_sensitive(name)


def cursor_digest(value: str) -> str:
    """A short, stable stand-in for a cursor in logs (it carries row values)."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


def redact_query(query: str, declared: frozenset[str] = frozenset()) -> str:
    """A query string fit for a log line: only ``declared`` parameters keep their values.

    Declared names that look like credentials are masked anyway; cursors become a digest.
    """
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    parts = []
    for name, value in pairs[:_MAX_LOGGED_PARAMS]:
        # "status=x;token=..." : a value that holds more pairs is not shown either.
        if name in declared and not _is_sensitive_param(name) and not _NESTED.search(value):
            shown = cursor_digest(value) if name in CURSOR_PARAMS else quote(value, safe="")
        else:
            shown = REDACTED
        parts.append(f"{name if _PLAIN_NAME.fullmatch(name) else REDACTED}={shown}")
    if len(pairs) > _MAX_LOGGED_PARAMS:
        parts.append(f"[{len(pairs) - _MAX_LOGGED_PARAMS} more]")
    return "&".join(parts)


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask sensitive fields (top level and one level of nesting)."""
    for name, value in event_dict.items():
        if name == "event":
            continue
        if is_sensitive(name):
            event_dict[name] = REDACTED
        elif isinstance(value, dict):
            event_dict[name] = {
                k: (REDACTED if isinstance(k, str) and is_sensitive(k) else v)
                for k, v in value.items()
            }
    return event_dict


def _orjson_dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


class RedactServerPaths(logging.Filter):
    """Redact query strings in uvicorn's own lines: it logs every WebSocket handshake as
    ``"WebSocket /path?query"``, and ``/api/v1/ws?token=`` carries an access token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_redact_path(arg) for arg in record.args)
        return True


def _redact_path(value: object) -> object:
    if isinstance(value, str) and value.startswith("/") and "?" in value:
        path, _, query = value.partition("?")
        return f"{path}?{redact_query(query)}"
    return value


_SERVER_PATHS_FILTER = RedactServerPaths()

# The level ``configure_logging`` gave structlog's filtering loggers (the access log's fast
# path checks it too, so both paths drop exactly the same lines).
_configured_level = logging.INFO
# Set on an access-log record: its finished event dict, for ``_Formatter``'s fast path.
_PREBUILT = "_taskmanager_event"


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """structlog's formatter, plus a fast path for the access log's prebuilt records.

    An access record's event dict has already been through the shared processors
    (``AccessLog.emit``), so only the final ones run: no copy of the record, no pre-chain.
    """

    def __init__(self, *, final: list[structlog.types.Processor], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._final = final

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, _PREBUILT, None)
        if event is None:
            return super().format(record)
        rendered: Any = dict(event)  # the renderer may change the dict it is given
        for processor in self._final:
            rendered = processor(None, "info", rendered)
        return str(rendered)


class AccessLog:
    """The access log: one INFO line per request on the ``logger_name`` logger.

    The line is exactly what ``structlog.get_logger(logger_name).info(event, **fields)``
    writes — the same fields in the same order, the request id from the context, the level,
    logger name and ISO timestamp, and ``redact_secrets`` — and reaches the same handlers as
    a ``LogRecord`` (log capture included). What it skips is structlog's per-call machinery:
    the bound-logger proxy, the stack walk for the caller and the formatter's copy of the
    record; that machinery was most of the ~60 us an access line cost (issue 13).
    """

    def __init__(self, logger_name: str, event: str) -> None:
        self.logger = logging.getLogger(logger_name)
        self.name = logger_name
        self.event = event
        self._extra = {"_logger": self.logger, "_name": "info"}

    def enabled(self) -> bool:
        """Whether an access line would be written at the configured levels."""
        return _configured_level <= logging.INFO and self.logger.isEnabledFor(logging.INFO)

    def emit(self, fields: dict[str, Any]) -> None:
        """Write the line (``fields`` is taken over; call ``enabled()`` first)."""
        fields["event"] = self.event
        event = structlog.contextvars.merge_contextvars(None, "info", fields)
        event["level"] = "info"
        event["logger"] = self.name
        # structlog's TimeStamper(fmt="iso", utc=True) spelling.
        event["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        redact_secrets(None, "info", event)
        record = self.logger.makeRecord(
            self.name, logging.INFO, "(unknown file)", 0, event, (), None, extra=self._extra
        )
        setattr(record, _PREBUILT, event)
        self.logger.handle(record)


def configure_logging(settings: Settings) -> None:
    global _configured_level
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: structlog.types.Processor
    if settings.log_format == "console":
        # Colours only for a terminal: ANSI escapes in a file or a pipe are noise.
        renderer = structlog.dev.ConsoleRenderer(colors=_is_terminal(sys.stdout))
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    level = logging.getLevelNamesMapping()[settings.log_level]
    _configured_level = level
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Filters below the level before any processor runs: a disabled line costs nothing.
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Not cached: each app built (tests build several) may bring its own level.
        cache_logger_on_first_use=False,
    )
    formatter = _Formatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
        final=[structlog.processors.format_exc_info, renderer],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, _HANDLER_MARK, False)]
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    server_log = logging.getLogger("uvicorn.error")
    if _SERVER_PATHS_FILTER not in server_log.filters:
        server_log.addFilter(_SERVER_PATHS_FILTER)
    # Our own access log replaces uvicorn's, which would log raw query strings.
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False


def log_formatter() -> logging.Formatter | None:
    """The formatter of our handler (the tests render captured records with it)."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, _HANDLER_MARK, False):
            return handler.formatter
    return None
