"""Settings are validated at start: one line naming the variable, unsafe production refused."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskmanager.kit.config import SECRET_KEY_FILE, SettingsError, load_settings

TASKMANAGER = str(Path(sys.executable).parent / "taskmanager")
PROD_KEY = "p" * 48


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("TASKMANAGER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TASKMANAGER_MAX_BODY_BYTES", "lots"),
        ("TASKMANAGER_MAX_BODY_BYTES", "10"),
        ("TASKMANAGER_RATE_LIMIT_DEFAULT", "many per minute"),
        ("TASKMANAGER_DATABASE_URL", "mysql://localhost/db"),
        ("TASKMANAGER_REDIS_URL", "http://localhost:6379"),
        ("TASKMANAGER_ALLOWED_ORIGINS", "ftp://example.com"),
        ("TASKMANAGER_LOG_LEVEL", "LOUD"),
        ("TASKMANAGER_ENV", "staging"),
        ("TASKMANAGER_REQUEST_TIMEOUT_SECONDS", "-1"),
        ("TASKMANAGER_ACCESS_TOKEN_EXPIRE_MINUTES", "0"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(data_dir=tmp_path / "data")
    message = str(caught.value)
    assert message.startswith(variable + ":"), message
    assert "\n" not in message


def test_origins_accept_json_list_and_commas(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TASKMANAGER_ALLOWED_ORIGINS", '["https://a.example", "https://b.example"]')
    assert load_settings(data_dir=tmp_path).allowed_origins == [
        "https://a.example",
        "https://b.example",
    ]
    monkeypatch.setenv("TASKMANAGER_ALLOWED_ORIGINS", "https://a.example, https://b.example")
    assert len(load_settings(data_dir=tmp_path).allowed_origins) == 2


def test_generated_secret_key_is_written_once_and_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_settings(data_dir=data_dir).signing_key
    key_file = data_dir / SECRET_KEY_FILE
    assert key_file.read_text().strip() == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_settings(data_dir=data_dir).signing_key == first
    # A configured key wins and nothing is written for it.
    assert load_settings(data_dir=tmp_path / "other", secret_key="k" * 40).signing_key == "k" * 40
    assert not (tmp_path / "other" / SECRET_KEY_FILE).exists()


def _production(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "env": "production",
        "secret_key": PROD_KEY,
        "data_dir": tmp_path / "data",
        "database_url": "postgresql+asyncpg://app@db/app",
        "allowed_origins": ["https://app.example.com"],
        "metrics_token": "m" * 32,
    }
    values.update(overrides)
    return values


def test_production_accepts_safe_settings(tmp_path: Path) -> None:
    assert load_settings(**_production(tmp_path)).env == "production"
    # An open /metrics, said so explicitly; no CORS origins at all.
    opened = _production(tmp_path, metrics_token="", metrics_public=True, allowed_origins=[])
    assert load_settings(**opened).metrics_public


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"secret_key": ""}, "TASKMANAGER_SECRET_KEY"),
        ({"secret_key": "short"}, "TASKMANAGER_SECRET_KEY"),
        ({"database_url": ""}, "TASKMANAGER_DATABASE_URL"),  # SQLite under the temp dir
        ({"database_url": "sqlite+aiosqlite:///:memory:"}, "TASKMANAGER_DATABASE_URL"),
        ({"webhook_allow_private_targets": True}, "TASKMANAGER_WEBHOOK_ALLOW_PRIVATE_TARGETS"),
        ({"allowed_origins": ["*"]}, "TASKMANAGER_ALLOWED_ORIGINS"),
        ({"fault_injection": True}, "TASKMANAGER_FAULT_INJECTION"),
        ({"allowed_origins": ["http://app.example.com"]}, "TASKMANAGER_ALLOWED_ORIGINS"),
        ({"metrics_token": ""}, "TASKMANAGER_METRICS_TOKEN"),
        (
            {
                "smtp_url": "smtp://mail.example.com",
                "mail_from": "noreply@example.com",
                "password_reset_url": "http://app.example.com/reset?token={token}",
            },
            "TASKMANAGER_PASSWORD_RESET_URL",
        ),
    ],
)
def test_production_refuses_unsafe_defaults(
    tmp_path: Path, overrides: dict[str, Any], variable: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**_production(tmp_path, **overrides))
    assert variable in str(caught.value)
    assert "\n" not in str(caught.value)


def test_serve_with_a_bad_value_exits_with_one_line(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASKMANAGER_")},
        "TASKMANAGER_DATA_DIR": str(tmp_path / "data"),
        "TASKMANAGER_MAX_BODY_BYTES": "not-a-number",
    }
    result = subprocess.run(
        [TASKMANAGER, "serve", "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "TASKMANAGER_MAX_BODY_BYTES" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [
        ("TASKMANAGER_DATABSE_URL", "TASKMANAGER_DATABASE_URL"),
        ("TASKMANAGER_REDIS", "TASKMANAGER_REDIS_URL"),
        ("taskmanager_log_levl", "TASKMANAGER_LOG_LEVEL"),
    ],
)
def test_an_unknown_variable_stops_the_start_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, suggestion: str
) -> None:
    monkeypatch.setenv(variable, "postgresql+asyncpg://db/x")
    with pytest.raises(SettingsError) as caught:
        load_settings(data_dir=tmp_path / "data")
    message = str(caught.value)
    assert message == f"{variable.upper()}: unknown setting; did you mean {suggestion}?"


def test_an_unknown_variable_in_the_env_file_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TASKMANAGER_SECRT_KEY=abc\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(data_dir=tmp_path / "data")
    assert "did you mean TASKMANAGER_SECRET_KEY?" in str(caught.value)


def test_serve_with_a_misspelt_variable_exits_with_one_line(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASKMANAGER_")},
        "TASKMANAGER_DATA_DIR": str(tmp_path / "data"),
        "TASKMANAGER_DATABSE_URL": "postgresql+asyncpg://nowhere/db",
    }
    result = subprocess.run(
        [TASKMANAGER, "serve", "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: TASKMANAGER_DATABSE_URL: unknown setting; did you mean TASKMANAGER_DATABASE_URL?"
    ], result.stderr
    assert not (tmp_path / "data" / "taskmanager.db").exists()  # no silent SQLite fallback


def test_resilience_defaults_bound_every_wait(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    # Each bound keeps an outage's 503 within the contract's 3 s (API.md §1).
    assert settings.db_connect_timeout_seconds < 3
    assert settings.db_statement_timeout_seconds + 0.5 < 3
    assert settings.db_pool_timeout_seconds < 3
    assert settings.sqlite_busy_timeout_ms < 3000
    assert settings.sqlite_synchronous == "FULL"
    assert settings.max_header_bytes == 16384
    assert settings.drain_seconds == 5
    assert settings.effective_max_concurrency >= 64
    assert load_settings(data_dir=tmp_path / "d", max_concurrency=7).effective_max_concurrency == 7
