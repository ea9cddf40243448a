"""The one type for a time the API accepts, in a query (``since``, ``from``, ``to``) or a
body (a silence's ``starts_at``, ``ends_at``).

``ApiTime`` is epoch milliseconds (an integer, or its digits in a query) or ISO 8601 with a
zone, at most ``MAX_TEXT`` characters, between 1970 and the end of the year 9999
(``timefmt.parse_time``), as an ``int`` of epoch ms; absent or null stays None. Pydantic runs
it before the handler, so a bad time is a 422 whose ``loc`` names the parameter
(``["query", "since"]``, ``["body", "ends_at"]``), never a 500 from a later ``iso()``,
comparison or SQLite bind: a route that takes a time declares it with this type instead of
parsing it itself.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import BeforeValidator, WithJsonSchema

from pilotline.gateway.timefmt import (
    TimeFormatError,
    in_range,
    parse_time,
)

__all__ = ["MAX_TEXT", "ApiTime", "Instant", "api_time"]

MAX_TEXT: Final = 40
"""Longer than any epoch ms or ISO 8601 time with a zone and nanoseconds."""


def api_time(value: object) -> int | None:
    """``value`` (a query's text or a JSON value) as epoch ms; ``ValueError`` says why not."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not in_range(value):
            raise ValueError(f"{value} ms is before 1970 or after 9999")
        return value
    if not isinstance(value, str):
        raise ValueError("a time is epoch ms (an integer) or an ISO 8601 string")
    if len(value) > MAX_TEXT:
        raise ValueError(f"a time has at most {MAX_TEXT} characters")
    try:
        return parse_time(value)
    except TimeFormatError as e:
        raise ValueError(str(e)) from None


ApiTime = Annotated[
    int | None,
    BeforeValidator(api_time),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "description": "epoch ms"},
                {"type": "string", "format": "date-time", "maxLength": MAX_TEXT},
                {"type": "null"},
            ]
        }
    ),
]


Instant = Annotated[
    str | None,
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}),
]
"""A time the API answers with: ISO 8601 with the offset (``timefmt.iso``), or null."""
