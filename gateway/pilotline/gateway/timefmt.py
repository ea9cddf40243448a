"""Times as people write them: epoch milliseconds to ISO 8601 and back.

One place for the format the API, the notification payloads and the CLI print (UTC,
millisecond precision) and for what they accept (epoch ms, or ISO 8601 with a zone, between
1970 and the end of the year 9999: what ``iso`` can print and SQLite's 64-bit integers can
hold). No third-party import, so the CLI's ``replay`` does not pull in the HTTP stack for it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final, overload

MIN_MS: Final = 0
"""1970-01-01T00:00:00Z: nothing the gateway records is older."""
MAX_MS: Final = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the last instant ``iso`` can print."""

_EPOCH_MS: Final = re.compile(r"-?[0-9]{1,20}")  # ASCII digits only: int() takes "٣" and "²"


class TimeFormatError(ValueError):
    """Not epoch milliseconds, nor ISO 8601."""


class NoTimeZoneError(TimeFormatError):
    """ISO 8601 without a zone: ambiguous, so refused (add ``Z`` or an offset)."""


class TimeRangeError(TimeFormatError):
    """A time before 1970 or after the year 9999 (``MIN_MS`` .. ``MAX_MS``)."""


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
    # Whole seconds and milliseconds apart: ms / 1000 as a float rounds near the year 9999.
    moment = datetime.fromtimestamp(ms // 1000, tz=UTC).replace(microsecond=ms % 1000 * 1000)
    return moment.isoformat(timespec="milliseconds")


def in_range(ms: int) -> bool:
    """Whether ``ms`` is a time ``parse_time`` accepts (and ``iso`` can print)."""
    return MIN_MS <= ms <= MAX_MS


def parse_time(text: str) -> int:
    """Epoch milliseconds or ISO 8601 (with a zone) to epoch milliseconds.

    Raises ``NoTimeZoneError`` for an ISO time without a zone, ``TimeRangeError`` for a time
    outside ``MIN_MS`` .. ``MAX_MS``, ``TimeFormatError`` for anything else that is not a time;
    each one's text is a sentence a person can act on (the API and the CLI show it as is)."""
    if _EPOCH_MS.fullmatch(text):
        ms = int(text)
    else:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise TimeFormatError(
                f"{text!r} is not a time (epoch ms or ISO 8601 with a zone)"
            ) from None
        if parsed.tzinfo is None:
            raise NoTimeZoneError(f"{text!r} has no time zone: add Z or an offset")
        try:
            ms = int(parsed.timestamp() * 1000)
        except (OverflowError, ValueError):  # an offset that moves it past year 1 or 9999
            raise TimeRangeError(f"{text!r} is before 1970 or after 9999") from None
    if not in_range(ms):
        raise TimeRangeError(f"{text!r} is before 1970 or after 9999")
    return ms
