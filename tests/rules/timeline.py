"""The alert tests' synthetic timelines: times in seconds from T0, and the laser they run on."""

from __future__ import annotations

from tests.fakes import MONDAY_0800

from pilotline.rules import DEFAULT_STATE_MAP, MachineSpec, MappedState

T0 = MONDAY_0800
HOUR = 3_600_000


def at(seconds: float) -> int:
    return T0 + int(seconds * 1000)


def laser(mid: str = "laser-01", zone: str = "photonics", **kw: int) -> MachineSpec:
    """A machine reporting its ``state`` signal: 10 s debounce, stale after 1 min, idle
    windows from 2 min; ``kw`` overrides any of these."""
    params: dict[str, int] = {
        "debounce_ms": 10_000,
        "stale_after_ms": 60_000,
        "min_idle_ms": 120_000,
        "publish_interval_ms": HOUR,
    }
    params.update(kw)
    return MachineSpec(
        id=mid,
        zone=zone,
        owner="acme",
        state=MappedState("state", DEFAULT_STATE_MAP),
        **params,
    )
