"""What waits for the next commit: one batch, shared by everything that stages.

The hot path, the event handlers, the rules timer and the forecasts append to the same
``Staged`` object; the committer ``take()``s its contents and leaves it empty, so no part
holds a stale batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pilotline.collectors.mqtt.collector import AckToken
from pilotline.gateway.store import QuarantineRow
from pilotline.rules import Event


@dataclass
class Staged:
    lines: list[tuple[int, str]] = field(default_factory=list)  # (priority, line protocol)
    events: list[Event] = field(default_factory=list)
    quarantined: list[QuarantineRow] = field(default_factory=list)
    acks: list[AckToken] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)  # machines whose checkpoint to keep
    notifications: list[tuple[str, str]] = field(default_factory=list)  # (channel, payload)
    alert_state: bool = False  # the alert cores' checkpoints are due with this commit
    # The hot path's lower bound of the newest acceptable source time (it only grows):
    # samples below it skip the clock reads. Per batch, so the first sample after each
    # commit reads the clocks again and a step of the wall clock is noticed.
    future_floor: float = -math.inf
    future_base: int = 0  # the wall clock the floor was measured from
    # The gateway's clock (watermark) every sample of this batch reaches the core with.
    arrival_ms: int | None = None

    def __len__(self) -> int:
        return (
            len(self.notifications)
            + len(self.lines)
            + len(self.events)
            + len(self.quarantined)
            + len(self.acks)
            + len(self.touched)
            + self.alert_state
        )

    def take(self) -> Staged:
        """Everything staged so far; this batch is left empty."""
        taken = Staged(
            self.lines,
            self.events,
            self.quarantined,
            self.acks,
            self.touched,
            self.notifications,
            self.alert_state,
        )
        self.lines = []
        self.events = []
        self.quarantined = []
        self.acks = []
        self.touched = set()
        self.notifications = []
        self.alert_state = False
        self.future_floor = -math.inf
        self.arrival_ms = None
        return taken
