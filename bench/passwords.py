"""The password hashing both servers use, so the login comparison is like for like.

The app hashes with Argon2id at the OWASP Password Storage Cheat Sheet's first setting
(m = 19 MiB, t = 2, p = 1; README, Security). pwdlib's default (argon2-cffi's RFC 9106
"low memory" profile, m = 64 MiB, t = 3, p = 4) costs several times more per login, so a
baseline using it would flatter the app. Restated here: the bench imports nothing from it.
"""

from __future__ import annotations

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1


def password_hasher() -> PasswordHash:
    """Argon2id with the app's parameters."""
    return PasswordHash(
        (
            Argon2Hasher(
                time_cost=ARGON2_TIME_COST,
                memory_cost=ARGON2_MEMORY_KIB,
                parallelism=ARGON2_PARALLELISM,
            ),
        )
    )
