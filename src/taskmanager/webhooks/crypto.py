"""Webhook signing secrets: generated, shown once, stored encrypted.

A secret is ``whsec_`` + standard base64 of 32 random bytes (Standard Webhooks v1: the
receiver base64-decodes what follows the prefix and keys HMAC-SHA256 with it). The server
must sign with the secret itself, so unlike API keys it cannot keep only a digest; it keeps
it encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a key
derived with HKDF-SHA256 from the app's signing key (``TASKMANAGER_SECRET_KEY``). A copy of
the database alone therefore reveals no webhook secret. If the signing key changes, stored
secrets can no longer be decrypted: deliveries fail with an error saying so until the owner
rotates the webhook's secret.
"""

from __future__ import annotations

import base64
import secrets
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
SECRET_BYTES = 32  # API.md §7 asks for at least 24
_KDF_INFO = b"taskmanager/webhook-secrets/v1"


class SecretUnreadable(Exception):
    """A stored secret does not decrypt under the current signing key."""


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


class SecretBox:
    """Encrypts and decrypts webhook secrets with a key derived from the app's signing key."""

    def __init__(self, signing_key: str) -> None:
        self._signing_key = signing_key

    @cached_property
    def _fernet(self) -> Fernet:
        # Imported on first use: ``cryptography`` costs ~7 MiB and ~30 ms, which a server
        # without webhooks never needs (README § Performance, cold start and memory).
        from cryptography.fernet import Fernet
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KDF_INFO).derive(
            self._signing_key.encode()
        )
        return Fernet(base64.urlsafe_b64encode(key))

    def seal(self, secret: str) -> str:
        """The stored form of ``secret`` (a Fernet token, ASCII)."""
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        """The secret in ``sealed``; raises SecretUnreadable if the key has changed."""
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, ValueError) as exc:
            raise SecretUnreadable(
                "the webhook's secret cannot be decrypted (the server's secret key changed); "
                "rotate the secret"
            ) from exc
