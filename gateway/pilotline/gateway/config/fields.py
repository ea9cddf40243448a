"""Field types of the site model: capabilities, state names, durations written with units.

Those every component shares (ids, signals, seconds, secrets and the files they are read
from) are in ``pilotline.collectors.fields``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BeforeValidator

from pilotline.collectors.fields import MAX_SECONDS, Id
from pilotline.rules.plant import ALL_CAPABILITIES

__all__ = ["Capability", "DurationMs", "StateName", "dedupe", "duration_ms", "ms"]

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


_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS: Final = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _duration_ms(value: Any) -> Any:
    """``"30s"``, ``"2m"``, ``"1h"``, ``"1h30m"``, ``"500ms"`` -> milliseconds."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"a duration needs a unit, like 30s, 2m or 1h, got {value!r}"
        )
    text = value.strip()
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"not a duration (like 30s, 2m, 1h or 1h30m): {value!r}")
    if total > MAX_SECONDS * 1000:
        raise ValueError(f"duration {value!r} is too long")
    return round(total)


def duration_ms(text: str) -> int:
    """A duration written with units, in milliseconds; ``ValueError`` if it is not one."""
    return int(_duration_ms(text))


DurationMs = Annotated[int, BeforeValidator(_duration_ms)]
"""A duration written with units (``30s``, ``2m``, ``1h``), held in milliseconds."""
