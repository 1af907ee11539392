"""The password policy for new passwords, in one function: ``password_problem``.

Registration, password change, password reset and ``taskmanager create-admin`` all call it
(through the ``users.schemas`` types or directly). Existing passwords are never re-judged:
login only verifies the hash, so accounts created under an older policy keep working.

A new password must:
- be 8-128 characters once NFKC-normalised (API.md §3), so a length cannot be gamed with
  compatibility characters;
- contain an upper-case letter, a lower-case letter and a digit;
- not be trivially guessable: refused when the zxcvbn estimator (Dropbox's, the model of
  NIST SP 800-63B §5.1.1.2 "commonly-used values") gives it its lowest score (0, fewer than
  10^3 guesses: ``Password1``, ``Passw0rd``, ``Qwerty123``) or finds the whole password in
  its list of leaked passwords (``Aaaaaaa1``, ``Welcome1``);
- not contain the username or the local part of the email (case-insensitively).
The message says which rule failed, so the client can tell the user.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
# zxcvbn's own cap: its matching grows fast with length, and a longer password is judged
# by its first 72 characters (a weak prefix that long is weak however it goes on).
_ESTIMATOR_MAX_CHARS = 72
# Shorter identifiers would refuse too much ("al" in "Salt-and-pepper9").
_MIN_IDENTIFIER_CHARS = 3


def normalized(password: str) -> str:
    """The NFKC form of a password: the form its length limits apply to."""
    return unicodedata.normalize("NFKC", password)


def _composition_problem(password: str) -> str | None:
    missing = []
    if not any(c.isupper() for c in password):
        missing.append("an upper-case letter")
    if not any(c.islower() for c in password):
        missing.append("a lower-case letter")
    if not any(c.isdigit() for c in password):
        missing.append("a digit")
    if missing:
        return "must contain at least " + ", ".join(missing)
    return None


def _estimate(password: str) -> dict[str, Any]:
    # Imported on first use: its dictionaries cost ~60 ms, which start-up need not pay.
    from zxcvbn import zxcvbn

    return dict(zxcvbn(password[:_ESTIMATOR_MAX_CHARS]))


def _is_leaked_whole(result: dict[str, Any], password: str) -> bool:
    sequence = result.get("sequence") or []
    if len(sequence) != 1:
        return False
    match = sequence[0]
    return (
        match.get("pattern") == "dictionary"
        and match.get("dictionary_name") == "passwords"
        and len(match.get("token", "")) == len(password[:_ESTIMATOR_MAX_CHARS])
    )


def _guessability_problem(password: str) -> str | None:
    result = _estimate(password)
    if result.get("score", 0) == 0 or _is_leaked_whole(result, password):
        warning = (result.get("feedback") or {}).get("warning") or ""
        reason = f" ({warning.rstrip('.')})" if warning else ""
        return f"is too easy to guess{reason}; add another uncommon word or two"
    return None


def identifier_problem(password: str, username: str | None, email: str | None) -> str | None:
    """Why ``password`` may not be the password of this account: it contains the username or
    the email's local part (case-insensitively, after NFKC). None if it does not."""
    folded = normalized(password).casefold()
    if username and len(username) >= _MIN_IDENTIFIER_CHARS and username.casefold() in folded:
        return "must not contain the username"
    local = email.rpartition("@")[0] if email else ""
    if len(local) >= _MIN_IDENTIFIER_CHARS and local.casefold() in folded:
        return "must not contain the email address's local part"
    return None


def password_problem(
    password: str, *, username: str | None = None, email: str | None = None
) -> str | None:
    """Why ``password`` may not become a new password, or None if it may.

    ``username`` and ``email`` are the account's (when known); the message completes the
    sentence "The password ...", e.g. "must contain at least a digit".
    """
    form = normalized(password)
    if len(form) < PASSWORD_MIN_LENGTH:
        return f"must be at least {PASSWORD_MIN_LENGTH} characters long"
    if len(form) > PASSWORD_MAX_LENGTH:
        return f"must be at most {PASSWORD_MAX_LENGTH} characters long"
    return (
        _composition_problem(form)
        or identifier_problem(form, username, email)
        or _guessability_problem(form)
    )


def matches_new_password(value: str, info: ValidationInfo) -> str:
    """Pydantic validator for ``confirm_password``: it must equal ``new_password``.

    Silent when ``new_password`` itself failed (that error is reported already).
    """
    new_password = info.data.get("new_password")
    if new_password is not None and value != new_password:
        raise ValueError("does not match new_password")
    return value


def _check_new_password(value: str) -> str:
    problem = password_problem(value)
    if problem:
        raise ValueError(problem)
    return value


# Bound on any password-like input before normalisation or an estimate is spent on it; the
# real limit (128 after NFKC) is the policy's.
PASSWORD_INPUT_MAX_CHARS = 1024

# A new password, as request bodies take it: the whole policy except the identifier rule,
# which needs the account (``identifier_problem``; registration applies it in its schema).
Password = Annotated[
    str,
    Field(
        max_length=PASSWORD_INPUT_MAX_CHARS,
        json_schema_extra={"minLength": PASSWORD_MIN_LENGTH, "maxLength": PASSWORD_MAX_LENGTH},
        description=(
            "8-128 characters (after NFKC) with an upper-case letter, a lower-case letter and "
            "a digit; not trivially guessable; not containing the username or the email's "
            "local part"
        ),
    ),
    AfterValidator(_check_new_password),
]
# A password-like field that is only compared (confirmation), never judged.
PasswordInput = Annotated[str, Field(max_length=PASSWORD_INPUT_MAX_CHARS)]
# Step-up: the caller's current password, asked again before a sensitive change.
CurrentPassword = Annotated[
    str,
    Field(
        min_length=1,
        max_length=PASSWORD_INPUT_MAX_CHARS,
        description="The caller's current password (401 if wrong)",
    ),
]
