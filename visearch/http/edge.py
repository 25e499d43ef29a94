"""Checks at the edge of the HTTP API, before any handler parses a body (a ``before_request`` hook).

Hostile bodies used to end in 500s deep inside parsers; here they become 400s with a reason:

* JSON nested deeper than :data:`MAX_JSON_DEPTH` levels (Python's and msgspec's decoders
  recurse, so ~1000 levels raised ``RecursionError``), in a JSON body or in a multipart part
  that carries JSON (``params``, ``metadata``);
* numbers that do not fit a double (``1e400`` decodes to ``inf``, which JSON and ``jsonb``
  cannot store);
* multipart bodies that do not parse (malformed or missing boundary, truncated parts, unknown
  charsets) or whose text parts are not valid UTF-8, and file names that cannot be stored.

The hook reads the body (or form) once; Litestar caches it for the handler.
"""

from __future__ import annotations

import math
import re

from litestar import Request
from litestar.datastructures import UploadFile
from litestar.exceptions import HTTPException, ValidationException

#: Deepest JSON nesting accepted (objects and arrays); visearch's own bodies need 3.
MAX_JSON_DEPTH = 32
#: Multipart parts that carry JSON texts.
_JSON_PARTS = ("params", "metadata")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET_OR_NUMBER = re.compile(rb"[\[\]{}]|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def check_json_text(raw: bytes | str, what: str = "the JSON body") -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH` or with a number beyond a double's
    range, without decoding it (a linear scan; strings are skipped).

    Raises:
        ValidationException: (400) with the reason. Malformed JSON is left to the decoder.
    """
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    depth = 0
    for m in _BRACKET_OR_NUMBER.finditer(_STRING.sub(b'""', data)):
        token = m.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ValidationException(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
        elif token in (b"]", b"}"):
            depth -= 1
        elif not math.isfinite(float(token)):
            raise ValidationException(
                f"{what} has the number {token[:40].decode()!r}, beyond the range of a double (about 1.8e308)"
            )


def _storable(text: str) -> bool:
    # lone surrogates (undecodable bytes) and NUL cannot go into PostgreSQL text
    return "\x00" not in text and not any("\ud800" <= c <= "\udfff" for c in text)


async def check_request(request: Request) -> None:
    """``before_request`` hook: the checks in the module docs, on JSON and multipart bodies."""
    if request.method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return
    content_type = request.content_type[0]
    if content_type == "multipart/form-data":
        try:
            form = await request.form()
        except HTTPException as exc:
            if exc.status_code == 413:
                raise
            raise ValidationException(f"malformed multipart/form-data body: {exc.detail}") from exc
        except UnicodeDecodeError as exc:
            raise ValidationException(
                f"a multipart part is not valid UTF-8 text (byte {exc.start}: {exc.reason})"
            ) from exc
        except (LookupError, ValueError) as exc:  # unknown charset=..., malformed headers
            raise ValidationException(f"malformed multipart/form-data body: {exc}") from exc
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if value.filename and not _storable(value.filename):
                    raise ValidationException(f"part {name!r}: the file name is not valid UTF-8 text")
                continue
            if not _storable(value):
                raise ValidationException(f"part {name!r} contains a NUL character or invalid UTF-8")
            if name in _JSON_PARTS:
                check_json_text(value, f"part {name!r}")
    elif content_type == "application/json" or content_type.endswith("+json"):
        check_json_text(await request.body())
