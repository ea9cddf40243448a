"""Canonical machine states and the default mappings from industrial vocabularies.

The table follows ../shared/DESIGN.md: OPC 40001-1 MachineryItemState, PackML, MTConnect
Execution and SEMI E10 names map to five canonical states. A machine's own ``map`` is laid
over these defaults, so most equipment needs no mapping at all.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class State(enum.Enum):
    """Canonical state; ``code`` is the ``state_code`` field of the time-series contract."""

    OFFLINE = "offline"
    RUNNING = "running"
    IDLE = "idle"
    DOWN = "down"
    MAINTENANCE = "maintenance"

    @property
    def code(self) -> int:
        return _CODES[self]


_CODES = {
    State.OFFLINE: 0,
    State.RUNNING: 1,
    State.IDLE: 2,
    State.DOWN: 3,
    State.MAINTENANCE: 4,
}

_DEFAULTS: dict[State, tuple[str, ...]] = {
    State.RUNNING: (
        # OPC 40001-1
        "Executing",
        # PackML: paused jobs keep the machine committed, so they count as running
        "Execute", "Starting", "Completing", "Held", "Holding", "Unholding",
        "Suspended", "Suspending", "Unsuspending",
        # MTConnect Execution
        "ACTIVE", "INTERRUPTED", "FEED_HOLD", "WAIT", "OPTIONAL_STOP",
        # SEMI E10
        "PRD",
    ),
    State.IDLE: (
        "NotExecuting",
        "Idle", "Complete",
        "READY", "PROGRAM_COMPLETED",
        "SBY",
    ),
    State.DOWN: (
        "OutOfService",
        "Aborted", "Stopped", "Aborting", "Stopping", "Clearing",
        "STOPPED", "PROGRAM_STOPPED",
        "UDT",
    ),
    State.MAINTENANCE: (
        "Resetting",
        "SDT", "ENG",
    ),
    State.OFFLINE: (
        "NotAvailable",
        "UNAVAILABLE",
        "NST",
    ),
}

DEFAULT_STATE_MAP: Mapping[str, State] = MappingProxyType(
    {name: state for state, names in _DEFAULTS.items() for name in names}
)
