"""Field types of the site model: capabilities, state names, alert durations (with units).

Those every component shares (ids, signals, seconds, secrets and the files they are read
from) are in ``pilotline.collectors.fields``.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from pilotline.collectors.fields import DURATION_PATTERN, Id
from pilotline.collectors.fields import duration_ms as _shared_duration_ms
from pilotline.rules.plant import ALL_CAPABILITIES

__all__ = [
    "Capability",
    "DurationMs",
    "StateName",
    "dedupe",
    "duration_default",
    "duration_ms",
    "local_epoch_ms",
    "ms",
]

StateName = Literal["offline", "running", "idle", "down", "maintenance"]


def dedupe(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _check_capability(value: str) -> str:
    if value == ALL_CAPABILITIES:
        raise ValueError(
            f"{ALL_CAPABILITIES!r} is reserved: it tags the zone-wide row of zone_capacity"
        )
    return value


Capability = Annotated[Id, AfterValidator(_check_capability)]


def ms(seconds: float) -> int:
    """Seconds of the file as the core's integer milliseconds."""
    return round(seconds * 1000)


def local_epoch_ms(moment: datetime, tz: tzinfo) -> int:
    """A time of the file in epoch milliseconds: one without an offset is local time in
    ``tz`` (when the clocks go back, the first of the two readings)."""
    local = moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)
    return round(local.timestamp() * 1000)


def _duration_ms(value: Any) -> Any:
    """``"30s"``, ``"2m"``, ``"1h"``, ``"1h30m"``, ``"500ms"`` -> milliseconds.

    Unlike a ``*_s`` key, a bare number is refused: an alert's ``for: 5`` could mean
    seconds or minutes.
    """
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"a duration needs a unit, like 30s, 2m or 1h, got {value!r}"
        )
    return round(_shared_duration_ms(value))


def duration_ms(text: str) -> int:
    """A duration written with units, in milliseconds; ``ValueError`` if it is not one."""
    return int(_duration_ms(text))


DurationMs = Annotated[
    int,
    BeforeValidator(
        _duration_ms,
        json_schema_input_type=Annotated[str, Field(pattern=DURATION_PATTERN)],
    ),
]
"""A duration written with units (``30s``, ``2m``, ``1h``), held in milliseconds."""


def duration_default(text: str, **kwargs: Any) -> Any:
    """A ``DurationMs`` field's default, written as in the file (``"10s"``): held in
    milliseconds, shown as written in the JSON Schema and docs/configuration.md."""
    return Field(default=duration_ms(text), json_schema_extra={"default": text}, **kwargs)
