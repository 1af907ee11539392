"""Unit tests of taskmanager.kit.security: the access-token cache and bounded Argon2."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from taskmanager.kit import security
from taskmanager.kit.errors import ServiceUnavailable
from taskmanager.kit.security import InvalidToken, create_access_token, decode_access_token

KEY = "unit-test-signing-key-0123456789abcdef"
LIFETIME = timedelta(minutes=5)


def test_a_cached_token_still_expires() -> None:
    token = create_access_token(7, KEY, timedelta(minutes=5))
    assert decode_access_token(token, KEY, LIFETIME).user_id == 7
    cached = security._VERIFIED[(KEY, token)]
    # Age the cached entry past its expiry: the cache must not outlive the token.
    security._VERIFIED[(KEY, token)] = dataclasses.replace(
        cached, expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    with pytest.raises(InvalidToken):
        decode_access_token(token, KEY, LIFETIME)
    assert (KEY, token) not in security._VERIFIED


def test_the_cache_is_keyed_by_signing_key_and_exact_token() -> None:
    token = create_access_token(8, KEY, timedelta(minutes=5))
    decode_access_token(token, KEY, LIFETIME)
    with pytest.raises(InvalidToken):
        # The same token under another key is verified afresh.
        decode_access_token(token, KEY + "-other", LIFETIME)
    with pytest.raises(InvalidToken):
        decode_access_token(token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), KEY, LIFETIME)


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security, "_VERIFIED", {})
    monkeypatch.setattr(security, "_VERIFIED_MAX", 3)
    tokens = [create_access_token(n, KEY, timedelta(minutes=5)) for n in range(1, 6)]
    for token in tokens:
        decode_access_token(token, KEY, LIFETIME)
    assert len(security._VERIFIED) == 3
    assert (KEY, tokens[0]) not in security._VERIFIED
    assert (KEY, tokens[-1]) in security._VERIFIED


# ---- Argon2: OWASP parameters, bounded per worker, nothing at import -----------------------


async def test_hashes_use_the_owasp_parameters() -> None:
    hashed = await security.hash_password("Violet-Tractor-88")
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


async def test_excess_hashing_waits_briefly_then_503(monkeypatch: pytest.MonkeyPatch) -> None:
    security.configure_password_hashing(concurrency=1, wait_seconds=0.05)
    try:
        slot = security._semaphore()
        await slot.acquire()  # a hash in progress holds the only slot
        with pytest.raises(ServiceUnavailable) as refused:
            await security.hash_password("Violet-Tractor-88")
        assert refused.value.headers["Retry-After"] == "1"
        with pytest.raises(ServiceUnavailable):
            await security.verify_password("x", None)
        slot.release()
        ok, _ = await security.verify_password(
            "Violet-Tractor-88", await _hash("Violet-Tractor-88")
        )
        assert ok
    finally:
        security.configure_password_hashing(concurrency=2, wait_seconds=2.0)


async def _hash(password: str) -> str:
    return await security.hash_password(password)


def test_nothing_is_hashed_at_import_or_app_creation(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import argon2

        def refuse(*args, **kwargs):
            raise SystemExit("an Argon2 hash was computed")

        argon2.PasswordHasher.hash = refuse
        argon2.PasswordHasher.verify = refuse
        from taskmanager.kit.config import load_settings
        from taskmanager.main import create_app

        create_app(load_settings(env="test", data_dir={str(tmp_path)!r}))
        import taskmanager.kit.security as security

        assert security._dummy_hash is None
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
