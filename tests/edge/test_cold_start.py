"""Start-up pays only for what the configuration uses (issue 13: cold start < 1.5 s, RSS
< 120 MB per worker).

Checked by what gets imported, never by a timer: with the default settings (SQLite, no
Redis, local attachment storage) building the app must not load the Redis client, the
PostgreSQL driver, the Argon2 bindings, Alembic, the S3 client or the password estimator,
nor ``cryptography`` (whose asymmetric algorithms PyJWT would load for HS256 tokens, which
need only hmac: an access token is issued and verified in the probe to show it); and
``taskmanager serve`` on an up-to-date SQLite file does not load Alembic to find out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from taskmanager import cli, migrate
from taskmanager.kit.config import Settings

# Each costs start-up time (measured on the bench machine: redis-py with cryptography
# ~0.1 s, Alembic ~0.17 s, asyncpg ~30 ms, httpx ~0.1 s until a webhook is delivered) and
# none is needed by the default configuration. cryptography: ~9 MiB of RSS per worker, needed
# only once a webhook secret is sealed or opened.
OPTIONAL = (
    "redis",
    "httpx",
    "asyncpg",
    "argon2",
    "pwdlib",
    "alembic",
    "botocore",
    "aiobotocore",
    "zxcvbn",
    "cryptography",
)

_PROBE = """
import sys, orjson
from taskmanager.main import create_app
create_app()
import taskmanager.cli, taskmanager.serving
from datetime import timedelta
from taskmanager.kit import security
token = security.create_access_token(7, "k" * 40, timedelta(minutes=5))
assert security.decode_access_token(token, "k" * 40, timedelta(minutes=5)).user_id == 7
print(orjson.dumps(sorted(m for m in {optional!r} if m in sys.modules)).decode())
"""


def _clean_environment(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMANAGER_")}
    env["TASKMANAGER_DATA_DIR"] = str(data_dir)
    env["TASKMANAGER_SECRET_KEY"] = "cold-start-test-secret-key-0123456789abcdef"
    return env


def test_default_app_imports_no_optional_dependency(tmp_path: Path) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE.format(optional=OPTIONAL)],
        env=_clean_environment(tmp_path / "data"),
        cwd=tmp_path,
        capture_output=True,
        check=True,
        timeout=120,
    )
    loaded = orjson.loads(probe.stdout.splitlines()[-1])
    assert loaded == [], f"imported at start-up although unused: {loaded}"


def test_shipped_head_is_alembics_head() -> None:
    assert cli.shipped_head() == migrate.head_revision()


def test_serve_migrates_a_sqlite_file_only_when_behind(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret_key="cold-start-test-secret-key-0123456789")
    assert settings.sqlite_path is not None
    assert not cli._sqlite_is_current(settings)  # no file yet
    migrate.upgrade(settings.effective_database_url, "0007_webhooks")
    assert not cli._sqlite_is_current(settings)  # one migration behind
    migrate.upgrade(settings.effective_database_url)
    assert cli._sqlite_is_current(settings)
