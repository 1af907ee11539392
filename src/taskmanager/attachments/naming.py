"""File names and media types as the client sends them, made safe to store and to serve.

Pure functions, shared by the upload (what is recorded) and the download (what is sent).
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

FILENAME_MAX = 255
FALLBACK_FILENAME = "file"
OCTET_STREAM = "application/octet-stream"

# RFC 6838 §4.2 restricted names: type "/" subtype, each 1-127 characters.
_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(f"{_NAME}/{_NAME}")
# In the ASCII fallback ``filename="..."``: anything but printable ASCII, and the characters
# that end or escape a quoted string or could start a path, is replaced.
_UNSAFE_ASCII = re.compile(r'[^\x20-\x7e]|["\\/%;]')


def display_filename(raw: str | None) -> str:
    """The name recorded for an upload: the last path segment of what the client sent.

    Browsers send a bare name, but a client may send ``../../etc/passwd`` or
    ``C:\\Users\\x\\a.txt``: only the last segment (``passwd``, ``a.txt``) is kept, in NFC,
    without control or format characters, trimmed and cut to 255 characters. It is only ever
    a label: files are stored under generated keys. An empty result becomes ``file``.
    """
    if not raw:
        return FALLBACK_FILENAME
    name = unicodedata.normalize("NFC", raw)
    name = re.split(r"[/\\]", name)[-1]
    # Control (Cc) and format (Cf) characters: CR/LF, NUL, bidi overrides that disguise
    # an extension (``invoice\u202efdp.exe``).
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf"))
    name = name.strip().strip(".").strip()
    if not name:
        return FALLBACK_FILENAME
    return name[:FILENAME_MAX]


def media_type(raw: str | None) -> str:
    """The recorded content type: ``type/subtype`` lower-cased, parameters dropped, or
    ``application/octet-stream`` when missing or not a valid media type (RFC 6838 §4.2)."""
    if not raw:
        return OCTET_STREAM
    essence = raw.split(";", 1)[0].strip().lower()
    return essence if _MEDIA_TYPE.fullmatch(essence) else OCTET_STREAM


def ascii_fallback(filename: str) -> str:
    """The ``filename=`` of Content-Disposition for clients without RFC 8187 support:
    accents dropped (NFKD), every other unsafe character replaced with ``_``."""
    decomposed = unicodedata.normalize("NFKD", filename)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    safe = _UNSAFE_ASCII.sub("_", stripped).strip()
    return safe or FALLBACK_FILENAME


def content_disposition(filename: str) -> str:
    """``attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>``.

    RFC 6266 §4.3 (both parameters; clients that understand ``filename*`` prefer it) with
    RFC 8187 encoding. Neither form can carry a quote, CR, LF or a path separator.
    """
    encoded = quote(filename, safe="!#$&+-.^_`|~")
    return f"attachment; filename=\"{ascii_fallback(filename)}\"; filename*=UTF-8''{encoded}"
