"""What the dispatcher reports: notifications for the channels, and each alert's state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pilotline.rules.alerts import AlertTransition

NotificationKind = Literal["firing", "resolved", "repeat"]


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for one channel about one group of alerts.

    ``kind``: ``firing`` when at least one alert in it newly fires, ``resolved`` when it only
    carries resolutions, ``repeat`` for a reminder of alerts still firing. ``alerts``: each
    notified alert's latest transition, firing ones first, then in the order the alerts
    joined the group (the alert core emits same-time transitions in configuration order).
    """

    channel: str
    group: tuple[tuple[str, str], ...]  # (label, value) pairs of the group key, in group_by order
    kind: NotificationKind
    ts_ms: int
    alerts: tuple[AlertTransition, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class AlertState:
    """What the dispatcher knows of one alert, for the API."""

    rule: str
    machine: str
    firing: bool
    acked_by: str | None
    acked_ms: int | None
    silenced_by: str | None  # id of the first active silence that matches it
