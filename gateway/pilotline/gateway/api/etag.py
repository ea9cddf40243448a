"""``ETag`` on answers a client polls (capacity, forecast): a 304 when nothing changed.

The tag is weak (``W/"..."``: the same JSON, not necessarily the same bytes on the wire) and
is a hash of the body as this caller gets it, so two principals seeing different answers
get different tags. ``Vary: Authorization`` and ``Cache-Control: private, no-cache`` keep a
shared cache from handing one caller's answer to another and make every client revalidate.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from fastapi import Request, Response

__all__ = ["ETAG_HEADERS", "etagged", "matches", "weak_etag"]

_CACHE_HEADERS: Final = {"Vary": "Authorization", "Cache-Control": "private, no-cache"}

ETAG_HEADERS: Final[dict[str, Any]] = {
    "ETag": {"description": "weak tag of this answer: send it back in `If-None-Match`",
             "schema": {"type": "string"}},
}


def weak_etag(body: bytes) -> str:
    return f'W/"{hashlib.sha256(body).hexdigest()[:32]}"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, RFC 9110 13.1.2)."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in if_none_match.split(","))


def etagged(request: Request, body: bytes) -> Response:
    """``body`` (JSON) with its ETag, or an empty 304 if the client has it already."""
    etag = weak_etag(body)
    headers = {"ETag": etag, **_CACHE_HEADERS}
    if matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
