"""Cursor pagination for the lists that grow: windows, alerts, silences, quarantine.

A list answers at most ``limit`` items, in a fixed order with a unique key per item (a
window's start and machine, a quarantine row's id, ...). When more follow, the answer has
``Link: </api/windows?...&cursor=...>; rel="next"`` (RFC 8288): the same query with an opaque
``cursor`` holding the key of the last item sent. The next page starts strictly after that
key, so items added or removed between two requests neither repeat nor shift the pages
(an item added before the cursor is not seen by that walk). The body stays a JSON array:
a caller that never passes a cursor gets the first page, as before.

A cursor is base64url of JSON ``[list, key]``; it carries no right of its own (each page
is filtered for the caller as the first was), so it needs no signature. One that does not
decode, or that belongs to another list, is a 422 naming ``cursor``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final, TypeVar
from urllib.parse import urlencode

from fastapi import Query, Request, Response

from pilotline.gateway.api.problems import invalid

__all__ = ["CURSOR_MAX", "LINK_HEADER", "Cursor", "Key", "after_key", "page", "set_next"]

CURSOR_MAX: Final = 400
"""Characters: far more than any key of ours, little enough to bound the parsing."""

Key = tuple[int | str, ...]
T = TypeVar("T")

Cursor = Annotated[
    str | None,
    Query(
        max_length=CURSOR_MAX,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="from the `Link: <...>; rel=\"next\"` header of the previous page",
    ),
]

LINK_HEADER: Final = {
    "Link": {
        "description": 'RFC 8288 `<...&cursor=...>; rel="next"` when more items follow',
        "schema": {"type": "string"},
    }
}


def encode(name: str, key: Key) -> str:
    raw = json.dumps([name, list(key)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def after_key(name: str, cursor: str | None, shape: Sequence[type]) -> Key | None:
    """The key in ``cursor`` (None without one); a 422 naming ``cursor`` unless it is a
    cursor of list ``name`` whose key has the types of ``shape``."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        decoded = None
    if (
        isinstance(decoded, list)
        and len(decoded) == 2
        and decoded[0] == name
        and isinstance(decoded[1], list)
        and len(decoded[1]) == len(shape)
        and all(type(v) is t for v, t in zip(decoded[1], shape, strict=True))
    ):
        return tuple(decoded[1])
    raise invalid(("query", "cursor"), f"not a cursor of {name}: pass the one a Link header gave")


def page(items: Sequence[T], limit: int, key: Callable[[T], Key], after: Key | None) -> list[T]:
    """At most ``limit + 1`` of ``items`` (sorted by ``key``) after the key ``after``: the
    extra one tells ``set_next`` that more follow."""
    start = 0
    if after is not None:
        start = next((i for i, item in enumerate(items) if key(item) > after), len(items))
    return list(items[start : start + limit + 1])


def set_next(
    request: Request,
    response: Response,
    name: str,
    items: list[T],
    *,
    limit: int,
    key: Callable[[T], Key],
    **pinned: Any,
) -> list[T]:
    """``items`` cut to ``limit``; if one more was there, a ``Link`` to the next page: the
    request's own query with the cursor of the last item kept and ``pinned`` values (a
    default that would move, like ``since``, is fixed to what the first page used)."""
    if len(items) <= limit:
        return items
    kept = items[:limit]
    query = {k: v for k, v in request.query_params.items() if k != "cursor"}
    query.update({k: str(v) for k, v in pinned.items() if v is not None})
    query["limit"] = str(limit)
    query["cursor"] = encode(name, key(kept[-1]))
    # A relative reference (RFC 8288 resolves it against the request): no Host reflected.
    response.headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return kept
