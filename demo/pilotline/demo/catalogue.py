"""The demo line's catalogue: its machines, their kinds and physical levels, and the words each
state vocabulary (OPC 40001-1, PackML, MTConnect) reports per phase of a machine's life.

``plant.py`` draws each machine's schedule from these; nothing here changes with time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, NamedTuple


class Phase(enum.Enum):
    """What a machine is doing in a segment; ``canonical`` is DESIGN.md's state name."""

    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    DOWN = "down"
    MAINTENANCE = "maintenance"
    OFFLINE = "offline"

    @property
    def canonical(self) -> str:
        return "running" if self is Phase.PAUSED else self.value


# What each vocabulary reports per phase (every word is in DESIGN.md's default table, except
# OPC 40001-1 maintenance, which needs the machine's explicit map; see SimMachine.state_map).
WORDS: dict[str, dict[Phase, str]] = {
    "opc40001": {
        Phase.IDLE: "NotExecuting",
        Phase.RUNNING: "Executing",
        Phase.PAUSED: "Executing",
        Phase.DOWN: "OutOfService",
        Phase.MAINTENANCE: "OutOfService",
    },
    "packml": {
        Phase.IDLE: "Idle",
        Phase.RUNNING: "Execute",
        Phase.PAUSED: "Held",
        Phase.DOWN: "Aborted",
        Phase.MAINTENANCE: "Resetting",
    },
    "mtconnect": {
        Phase.IDLE: "READY",
        Phase.RUNNING: "ACTIVE",
        Phase.PAUSED: "FEED_HOLD",
        Phase.DOWN: "STOPPED",
    },
}

Vocabulary = Literal["opc40001", "packml", "mtconnect", "power"]


@dataclass(frozen=True, slots=True)
class Profile:
    """Physical levels of one machine."""

    run_w: float
    idle_w: float
    run_c: float
    idle_c: float
    extra: str  # the third signal's name, "" for none



# Physical levels per kind of machine; each machine varies them by a few percent.
PROFILES: dict[str, Profile] = {
    "laser-cut": Profile(1400.0, 42.0, 41.0, 27.0, "chiller_c"),
    "laser-mark": Profile(420.0, 31.0, 36.0, 25.0, "chiller_c"),
    "laser": Profile(1200.0, 40.0, 40.0, 26.0, "chiller_c"),
    "coater": Profile(2300.0, 45.0, 62.0, 30.0, "vacuum_mbar"),
    "aoi-cam": Profile(240.0, 33.0, 37.0, 28.0, "frames_per_s"),
    "cam": Profile(240.0, 33.0, 37.0, 28.0, "frames_per_s"),
    "bonder": Profile(620.0, 46.0, 45.0, 27.0, "force_n"),
}


class Row(NamedTuple):
    id: str
    zone: str
    owner: str
    capabilities: tuple[str, ...]
    vocabulary: Vocabulary
    maintenance: bool = False


STANDARD: tuple[Row, ...] = (
    Row("laser-cut-01", "photonics", "acme-optics", ("laser-cutting",), "opc40001"),
    Row("laser-cut-02", "photonics", "lumen-group", ("laser-cutting", "laser-marking"), "power"),
    Row("laser-mark-01", "photonics", "acme-optics", ("laser-marking",), "mtconnect"),
    Row("laser-mark-02", "photonics", "visiotech", ("laser-marking",), "power"),
    Row("coater-01", "photonics", "lumen-group", ("coating",), "opc40001", maintenance=True),
    Row("aoi-cam-01", "imaging", "visiotech", ("optical-inspection",), "opc40001"),
    Row("aoi-cam-02", "imaging", "acme-optics", ("optical-inspection",), "power"),
    Row("aoi-cam-03", "imaging", "visiotech", ("optical-inspection",), "power"),
    Row("bonder-01", "imaging", "lumen-group", ("bonding",), "packml"),
    Row("bonder-02", "imaging", "acme-optics", ("bonding",), "power"),
)

# Generated lines (benchmarks): kinds of machine cycle through these.
GENERATED: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("laser", "photonics", ("laser-cutting", "laser-marking")),
    ("coater", "photonics", ("coating",)),
    ("cam", "imaging", ("optical-inspection",)),
    ("bonder", "imaging", ("bonding",)),
)
OWNERS = ("acme-optics", "lumen-group", "visiotech")
ENUM_VOCABS: tuple[Vocabulary, ...] = ("opc40001", "packml", "mtconnect")
MAINT_MAP = (("OutOfService", "maintenance"),)
