"""Turn one OPC UA DataValue into a signal value, a time and a quality (pure, no I/O).

This is the hot path: one call per data-change notification, no exceptions escape, no
logging, no clock (the arrival time is passed in).

- **Value**: a number becomes a float; a Boolean becomes 1.0 or 0.0 (telemetry fields are
  numeric and thresholds work on it; map it with ``'0'``/``'1'`` keys); an integer, including
  an OPC UA enumeration value, becomes a float (the core looks maps up by its integer text,
  ``'6'``); a String stays a string, a LocalizedText gives its text and a QualifiedName its
  name (at most 256 characters). Anything else (arrays, structures, byte strings, dates,
  non-finite numbers) is refused with a reason.
- **Time**: the SourceTimestamp, else the ServerTimestamp, else the arrival time; a time
  outside 2000..2100 (an unset DateTime decodes as 1601) counts as absent.
- **Quality**: the StatusCode's severity: Good, Uncertain, Bad. A Bad value that carries no
  value at all still yields a result (``value`` None) so the Bad quality is recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from asyncua import ua

from pilotline.rules.sample import Quality, SignalValue

__all__ = [
    "NAN",
    "NO_VALUE",
    "REJECT_REASONS",
    "WRONG_TYPE",
    "Reading",
    "Rejection",
    "epoch_ms",
    "quality_of",
    "read_data_value",
]

WRONG_TYPE: Final = "wrong_type"
NAN: Final = "nan"
NO_VALUE: Final = "no_value"
REJECT_REASONS: Final = (WRONG_TYPE, NAN, NO_VALUE)

MAX_STRING_CHARS: Final = 256
MIN_TS_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_TS_MS: Final = 4_102_444_800_000  # 2100-01-01T00:00:00Z
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# StatusCode severity: the two top bits (00 Good, 01 Uncertain, 10/11 Bad).
_SEVERITY_SHIFT: Final = 30


@dataclass(frozen=True, slots=True)
class Reading:
    """What a DataValue says: ``value`` None only for a Bad status without a value."""

    value: SignalValue | None
    ts_ms: int
    quality: Quality
    status: str  # the StatusCode's name, e.g. "Good", "BadSensorFailure"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a value was refused: ``reason`` from ``REJECT_REASONS``, ``detail`` for humans."""

    reason: str
    detail: str
    ts_ms: int


def quality_of(code: int) -> Quality:
    severity = (code >> _SEVERITY_SHIFT) & 0b11
    if severity == 0:
        return Quality.GOOD
    if severity == 1:
        return Quality.UNCERTAIN
    return Quality.BAD


def status_name(code: int) -> str:
    try:
        return str(ua.StatusCode(code).name)
    except Exception:  # noqa: BLE001 - an unknown code must not break the hot path
        return f"0x{code:08X}"


def epoch_ms(when: object) -> int | None:
    """A DateTime as epoch milliseconds, or None when absent or outside 2000..2100."""
    if not isinstance(when, datetime):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        ms = (when - _EPOCH) // _MS
    except OverflowError:
        return None
    return ms if MIN_TS_MS <= ms < MAX_TS_MS else None


_MS: Final = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - _EPOCH


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def convert(value: Any) -> SignalValue | tuple[str, str]:
    """A Python value from asyncua as a signal value, or (reason, detail)."""
    vtype = type(value)
    if vtype is float:
        return value if math.isfinite(value) else (NAN, f"{value!r} is not a finite number")
    if vtype is bool:
        return 1.0 if value else 0.0
    if isinstance(value, int) and not isinstance(value, bool):  # ints and IntEnums
        return float(value)
    if isinstance(value, float):  # float subclasses
        return float(value) if math.isfinite(value) else (NAN, f"{value!r} is not finite")
    text: object
    if isinstance(value, str):
        text = value
    elif isinstance(value, ua.LocalizedText):
        text = value.Text
    elif isinstance(value, ua.QualifiedName):
        text = value.Name
    elif value is None:
        return (NO_VALUE, "the value is null")
    else:
        return (
            WRONG_TYPE,
            f"{type(value).__name__} {_short(value)}: expected a number, a boolean or a text",
        )
    if not isinstance(text, str):
        return (NO_VALUE, "the text is null")
    if len(text) > MAX_STRING_CHARS:
        return (WRONG_TYPE, f"a text of {len(text)} chars (max {MAX_STRING_CHARS})")
    return text


def read_data_value(dv: ua.DataValue | None, arrival_ms: int) -> Reading | Rejection:
    """One notification's DataValue as a Reading or a Rejection; never raises."""
    if dv is None:
        return Rejection(NO_VALUE, "no DataValue", arrival_ms)
    ts = epoch_ms(dv.SourceTimestamp)
    if ts is None:
        ts = epoch_ms(dv.ServerTimestamp)
    if ts is None:
        ts = arrival_ms
    status = dv.StatusCode
    code = int(status.value) if status is not None else 0
    quality = quality_of(code)
    variant = dv.Value
    raw = variant.Value if variant is not None else None
    converted = convert(raw)
    if isinstance(converted, tuple):
        if quality is Quality.BAD:  # Bad with no usable value: the quality is the news
            return Reading(None, ts, quality, status_name(code))
        return Rejection(converted[0], converted[1], ts)
    return Reading(converted, ts, quality, status_name(code) if code else "Good")


class Stamper:
    """Keeps each machine's sample times non-decreasing, and dates heartbeats.

    Values of different nodes arrive in any order (the initial values after (re)subscribing
    carry the time each value last *changed*). A value older than the last sample already
    handed out for its machine is still current, so it is stamped at that later time rather
    than refused by the core as out of order. A heartbeat is stamped at the machine's last
    sample time: it says "nothing changed and the link is alive", and the core applies it at
    its own clock, so the server's clock (possibly skewed from the devices') never matters.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def stamp(self, machine: str, ts_ms: int) -> int:
        last = self._last.get(machine)
        if last is not None and ts_ms < last:
            return last
        self._last[machine] = ts_ms
        return ts_ms

    def last(self, machine: str) -> int | None:
        return self._last.get(machine)
