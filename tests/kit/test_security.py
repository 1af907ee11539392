"""Unit tests of the access-token cache in taskmanager.kit.security."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from taskmanager.kit import security
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
