"""Times as people write them: epoch milliseconds to ISO 8601 and back.

One place for the format the API, the notification payloads and the CLI print (UTC,
millisecond precision) and for what they accept (epoch ms, or ISO 8601 with a zone). No
third-party import, so the CLI's ``replay`` does not pull in the HTTP stack for it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


class TimeFormatError(ValueError):
    """Not epoch milliseconds, nor ISO 8601."""


class NoTimeZoneError(TimeFormatError):
    """ISO 8601 without a zone: ambiguous, so refused (add ``Z`` or an offset)."""


@overload
def iso(ms: int) -> str: ...
@overload
def iso(ms: None) -> None: ...
@overload
def iso(ms: int | None) -> str | None: ...
def iso(ms: int | None) -> str | None:
    """``2026-11-27T00:02:00.000+00:00`` for epoch ms (None stays None)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def parse_time(text: str) -> int:
    """Epoch milliseconds or ISO 8601 (with a zone) to epoch milliseconds.

    Raises ``NoTimeZoneError`` for an ISO time without a zone, ``TimeFormatError`` for
    anything else that is not a time; callers word the message for their users."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise TimeFormatError(text) from None
    if parsed.tzinfo is None:
        raise NoTimeZoneError(text)
    return int(parsed.timestamp() * 1000)
