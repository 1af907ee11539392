"""Field types and normalisers shared by every domain's request schemas and query parameters.

Each type refuses what a database could not store or compare, so both backends answer 422
alike (never a 500), normalises what it accepts, and documents in its JSON schema exactly
what it accepts, so the OpenAPI document and the server agree:

- ``UTCTimestamp``: strict RFC 3339 date-times (an offset is required; numbers and digit
  strings are refused), normalised to UTC. The one type for every timestamp, body and query.
- ``Text(...)`` (``Annotated`` metadata): stored text. Surrounding white space is trimmed,
  the value is stored in Unicode NFC, NUL is refused, "blank" (nothing left once white
  space and invisible characters are removed) is refused, and length limits apply to the
  sent value (as the schema says) and to the stored form.
- One normaliser per kind of identifier — ``normalize_email``, ``normalize_username``,
  ``normalize_login``, ``normalize_password`` — used identically on registration, login,
  update and lookup.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

# Ids (and offsets) are at most 2**53 - 1: the integers every JSON reader holds exactly
# (I-JSON, RFC 7493 §2.2; JavaScript's MAX_SAFE_INTEGER), so a client, a schema validator and
# the server agree on the boundary (beyond it doubles round, and 2**63 - 1 is not even a
# double). Well inside BIGINT: a larger value is a 422, never a driver overflow (a 500).
MAX_ID = 2**53 - 1

# ---- timestamps (RFC 3339 §5.6) ---------------------------------------------------------------

EXAMPLE_TIMESTAMP = "2026-12-01T17:00:00Z"


def format_timestamp(moment: datetime) -> str:
    """A stored (UTC) time as the API writes it: RFC 3339 with ``Z``
    (``2026-12-01T17:00:00.5Z``), the form Pydantic gives response models, for JSON and CSV
    built by hand."""
    return moment.isoformat().replace("+00:00", "Z")


_EXPECTED_TIMESTAMP = (
    f"expected an RFC 3339 date-time with a time and an offset, e.g. {EXAMPLE_TIMESTAMP} "
    "or 2026-12-01T18:00:00+01:00"
)
# RFC 3339 §5.6 ``date-time``; "T" and "Z" may be lower case (§5.6, note). ASCII digits only.
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]"
    r"(?P<time>[0-9]{2}:[0-9]{2}):(?P<second>[0-9]{2})(?P<fraction>\.[0-9]+)?"
    r"(?P<offset>[Zz]|[+-](?P<oh>[0-9]{2}):(?P<om>[0-9]{2}))"
)
_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# A time whose offset lost its "+" to form decoding (a "+" in a query string is a space).
_PLUS_DECODED = re.compile(r".*[Tt][0-9:.]+ [0-9]{2}:[0-9]{2}")
_NAIVE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?")
TIMESTAMP_JSON_SCHEMA: dict[str, Any] = {
    "type": "string",
    "format": "date-time",
    "description": "RFC 3339 date-time with an offset, e.g. " + EXAMPLE_TIMESTAMP,
    "examples": [EXAMPLE_TIMESTAMP],
}


def _timestamp_error(message: str) -> PydanticCustomError:
    return PydanticCustomError("rfc3339_datetime", message)


def parse_timestamp(value: Any) -> datetime:
    """An RFC 3339 date-time string as an aware ``datetime`` in UTC.

    Refuses (``PydanticCustomError``, type ``rfc3339_datetime``) numbers, digit strings,
    dates without a time, times without an offset and anything else; each message names
    the expected form with an example. A leap second (``:60``) is read as the last
    microsecond of its minute, which Python's ``datetime`` cannot go past.
    """
    if isinstance(value, datetime):  # from code, not from a client
        if value.tzinfo is None:
            raise _timestamp_error("has no offset; " + _EXPECTED_TIMESTAMP)
        return _to_utc(value)
    if not isinstance(value, str):
        raise _timestamp_error("is a number, not a date-time string; " + _EXPECTED_TIMESTAMP)
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise _timestamp_error(_why_not_rfc3339(value))
    if int(match["oh"] or 0) > 23 or int(match["om"] or 0) > 59:
        raise _timestamp_error("has an offset out of range; " + _EXPECTED_TIMESTAMP)
    second = int(match["second"])
    leap = second == 60
    text = (
        f"{match['date']}T{match['time']}:{59 if leap else second:02d}{match['fraction'] or ''}"
        f"{'+00:00' if match['offset'] in 'Zz' else match['offset']}"
    )
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _timestamp_error("is not a valid date or time; " + _EXPECTED_TIMESTAMP) from None
    if leap:
        parsed = parsed.replace(microsecond=999_999)
    return _to_utc(parsed)


def _why_not_rfc3339(value: str) -> str:
    text = value.strip()
    if text.isascii() and text.lstrip("+-").replace(".", "", 1).isdigit():
        return "is a number, not a date-time; " + _EXPECTED_TIMESTAMP
    if _DATE_ONLY.fullmatch(text):
        return "is a date without a time; " + _EXPECTED_TIMESTAMP
    if _PLUS_DECODED.fullmatch(text):
        return "lost the '+' of its offset: in a query string send it as %2B; " + (
            _EXPECTED_TIMESTAMP
        )
    if _NAIVE.fullmatch(text):
        return "has no offset (Z or ±hh:mm); " + _EXPECTED_TIMESTAMP
    return "is not an RFC 3339 date-time; " + _EXPECTED_TIMESTAMP


def _to_utc(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
        # The year must stay within 1..9999 once in UTC (what every backend can hold).
        _ = utc + timedelta(0)
    except OverflowError:
        raise _timestamp_error("is outside the years 0001-9999 once in UTC") from None
    return utc


# The one timestamp type, for bodies and query strings alike (``QueryDateTime`` is its name
# where it reads better). Serialises as a datetime; its schema is ``format: date-time``.
UTCTimestamp = Annotated[
    datetime, BeforeValidator(parse_timestamp), WithJsonSchema(TIMESTAMP_JSON_SCHEMA)
]
QueryDateTime = UTCTimestamp

# ---- ids ----------------------------------------------------------------------------------------


def json_integer(value: Any) -> Any:
    """A JSON integer as JSON Schema counts them: ``7`` or ``7.0`` (RFC 8259 numbers have no
    integer type; a zero fraction is an integer), never ``true``, ``"7"`` or ``7.5``."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**63:
        return int(value)
    return value


# In a JSON body a strict integer; in a path or query (``kit.http``) canonical decimal digits.
EntityId = Annotated[int, Field(strict=True, ge=1, le=MAX_ID), BeforeValidator(json_integer)]
QueryId = Annotated[int, Field(ge=1, le=MAX_ID)]

# ---- text ---------------------------------------------------------------------------------------

# Characters that show nothing: white space (``str.isspace``) and the Unicode
# Default_Ignorable_Code_Point set (DerivedCoreProperties.txt: zero-width spaces and joiners,
# bidi controls, variation selectors, Hangul fillers, tags...). A value made only of these
# is blank. As (first, last) code point ranges, so the schema pattern is built from the same.
INVISIBLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x09, 0x0D),
    (0x1C, 0x20),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0xAD, 0xAD),
    (0x34F, 0x34F),
    (0x61C, 0x61C),
    (0x115F, 0x1160),
    (0x1680, 0x1680),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2000, 0x200F),
    (0x2028, 0x202F),
    (0x205F, 0x206F),
    (0x3000, 0x3000),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


def _class_item(first: int, last: int) -> str:
    def one(code: int) -> str:
        # BMP as \uXXXX escapes; astral characters literally (JSON carries them as pairs).
        return chr(code) if code > 0xFFFF else f"\\u{code:04X}"

    return one(first) if first == last else f"{one(first)}-{one(last)}"


_INVISIBLE_CLASS = "".join(_class_item(first, last) for first, last in INVISIBLE_RANGES)
_INVISIBLE_RE = re.compile(f"[{_INVISIBLE_CLASS}]")
# The schema patterns (ECMA-262 and Python ``re`` read them alike): no NUL anywhere, and for
# a required text, at least one visible character. Written without nested quantifiers so a
# validator never backtracks badly.
_NUL = "\\u0000"
_CONTROLS = "\\u0000-\\u001F\\u007F-\\u009F"  # Unicode category Cc


def text_pattern(*, not_blank: bool, single_line: bool) -> str:
    """The schema pattern of a ``Text``: what it forbids anywhere, and whether one visible
    character is required."""
    forbidden = _CONTROLS if single_line else _NUL
    if not not_blank:
        return f"^[^{forbidden}]*$"
    return f"^[^{forbidden}]*[^{forbidden}{_INVISIBLE_CLASS}][^{forbidden}]*$"


NO_NUL_PATTERN = text_pattern(not_blank=False, single_line=False)
NOT_BLANK_PATTERN = text_pattern(not_blank=True, single_line=False)
BLANK_MESSAGE = "must not be blank"


def is_blank(value: str) -> bool:
    """True when nothing visible is left once white space and invisible characters go."""
    return _INVISIBLE_RE.sub("", value) == ""


def storable_text(value: str) -> str:
    """Refuse what a database cannot store, so both backends answer 422 alike (never a 500).

    PostgreSQL text cannot hold NUL. A lone surrogate (a JSON ``\\ud800`` escape) is not
    encodable as UTF-8; pydantic's ``str`` validation already refuses it in request bodies,
    and this check keeps the guarantee for any other way a value reaches a model.
    """
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("invalid_unicode", "must be valid Unicode text") from None
    return value


def normalize_text(value: str) -> str:
    """Stored text: valid, NUL-free Unicode in NFC (Unicode Standard Annex #15)."""
    return unicodedata.normalize("NFC", storable_text(value))


@dataclass(frozen=True, slots=True)
class Text:
    """Stored text rules, as ``Annotated`` metadata: ``Title = Annotated[str, Text(200)]``.

    Surrounding white space is trimmed (unless ``strip=False``), the value is stored in NFC
    and may not hold NUL. ``min_length=1`` means "not blank". The length limit is checked on
    the sent value (as the schema states it) and again on the stored form, which NFC can
    lengthen.
    """

    max_length: int
    min_length: int = 1
    strip: bool = True
    single_line: bool = False  # no control characters at all (names, labels)

    def check(self, value: str) -> str:
        value = normalize_text(value.strip() if self.strip else value)
        if self.single_line and any(unicodedata.category(c) == "Cc" for c in value):
            raise PydanticCustomError("control_character", "must not contain control characters")
        if self.min_length and is_blank(value):
            # Also for "": "must not be blank" says what is wrong; "at least 1 character" not.
            raise PydanticCustomError("blank", BLANK_MESSAGE)
        if len(value) > self.max_length:
            raise PydanticCustomError(
                "string_too_long",
                "is longer than {max_length} characters once stored (Unicode NFC)",
                {"max_length": self.max_length},
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            self.check, core_schema.str_schema(max_length=self.max_length)
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "minLength": self.min_length,
            "maxLength": self.max_length,
            "pattern": text_pattern(not_blank=self.min_length > 0, single_line=self.single_line),
        }


@dataclass(frozen=True, slots=True)
class Password:
    """A new password, as ``Annotated`` metadata: ``Annotated[str, Password(8, 128)]``.

    ``min_length`` to ``max_length`` characters as sent and once in NFKC; the model holds the
    NFKC form, the one to hash. NUL is allowed: a password is only ever hashed.
    """

    min_length: int
    max_length: int

    def check(self, value: str) -> str:
        value = normalize_password(value)
        if not self.min_length <= len(value) <= self.max_length:
            raise PydanticCustomError(
                "password_length",
                "must be {min_length}-{max_length} characters once normalised (NFKC)",
                {"min_length": self.min_length, "max_length": self.max_length},
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            self.check,
            core_schema.str_schema(min_length=self.min_length, max_length=self.max_length),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "format": "password",
            "minLength": self.min_length,
            "maxLength": self.max_length,
            "writeOnly": True,
        }


StorableText = Annotated[str, AfterValidator(normalize_text)]


# ---- identifiers: one normaliser per kind --------------------------------------------------

EMAIL_MAX_LENGTH = 254  # RFC 5321 §4.5.3.1.3: a path is at most 256 octets with its <>
USERNAME_PATTERN = "^[A-Za-z0-9_]{3,50}$"
_USERNAME_RE = re.compile(USERNAME_PATTERN)


def normalize_email(value: str) -> str:
    """An email address as stored and looked up: NFC, the domain as IDNA U-labels, lower-case.

    Raises ValueError for text that is not an email address (RFC 5322 addr-spec with
    internationalised parts, checked by ``email-validator``), or longer than 254 characters.
    """
    try:
        # ``.test`` (RFC 6761) is accepted: it is reserved for testing, not unusable.
        parsed = validate_email(
            unicodedata.normalize("NFC", value),
            check_deliverability=False,
            allow_smtputf8=True,
            test_environment=True,
        )
    except EmailNotValidError as exc:
        raise ValueError(f"is not a valid email address: {exc}") from None
    normalized = unicodedata.normalize("NFC", parsed.normalized.lower())
    if len(normalized) > EMAIL_MAX_LENGTH:
        raise ValueError(f"must be at most {EMAIL_MAX_LENGTH} characters")
    return normalized


def normalize_username(value: str) -> str:
    """A username as stored and looked up: NFC, lower-case (uniqueness ignores case)."""
    return unicodedata.normalize("NFC", value).lower()


def check_username(value: str) -> str:
    """Registration's rule (3-50 ASCII letters, digits, underscores), then normalised."""
    if not _USERNAME_RE.fullmatch(value):
        raise PydanticCustomError(
            "username", "must be 3-50 characters of ASCII letters, digits and underscores"
        )
    return normalize_username(value)


def normalize_login(value: str) -> str:
    """What a login form's ``username`` field is looked up as: an email or a username.

    Normalised exactly as registration stored it; text that is not a valid address is looked
    up as typed (NFC, lower-case) and simply finds nobody.
    """
    if "@" in value:
        try:
            return normalize_email(value)
        except ValueError:
            pass
    return normalize_username(value)


def normalize_password(value: str) -> str:
    """A password as hashed and verified: NFKC (NIST SP 800-63B §5.1.1.2), so every way of
    typing the same characters (composed or not, full-width or not) is the same password."""
    return unicodedata.normalize("NFKC", value)


Email = Annotated[
    str,
    AfterValidator(lambda value: _email_or_error(value)),
    WithJsonSchema(
        {"type": "string", "format": "email", "maxLength": EMAIL_MAX_LENGTH},
    ),
]
Username = Annotated[
    str,
    AfterValidator(check_username),
    WithJsonSchema(
        {"type": "string", "minLength": 3, "maxLength": 50, "pattern": USERNAME_PATTERN}
    ),
]


def _email_or_error(value: str) -> str:
    try:
        return normalize_email(value)
    except ValueError as exc:
        raise PydanticCustomError("email", str(exc)) from None
