"""Notification policy over alert transitions (Alertmanager's part): routing to channels,
grouping, repeats, silences and acknowledgements. Pure: no I/O, time is passed in.

CONTRACT STUB: the types below are shared by the gateway and the channels; the
``Dispatcher`` that produces ``Notification`` objects is built on top of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pilotline.rules.alerts import AlertTransition

NotificationKind = Literal["firing", "resolved", "repeat"]

GROUP_LABELS = ("rule", "zone", "severity", "machine", "owner")
"""The labels an alert can be grouped and silenced by."""


@dataclass(frozen=True, slots=True)
class Route:
    """One channel and what it wants: severities at or above ``min_severity``, alerts of
    ``zones`` (None: every zone)."""

    channel: str
    min_severity: str = "info"
    zones: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes every alert whose labels equal all of ``matchers`` while
    ``starts_ms <= now < ends_ms``."""

    id: str
    matchers: Mapping[str, str]
    starts_ms: int
    ends_ms: int
    created_by: str = ""
    comment: str = ""


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for one channel about one group of alerts.

    ``kind``: ``firing`` when at least one alert in it newly fires, ``resolved`` when it only
    carries resolutions, ``repeat`` for a reminder of alerts still firing. ``alerts``: each
    notified alert's latest transition, firing ones first, then in configuration order.
    """

    channel: str
    group: tuple[tuple[str, str], ...]  # (label, value) pairs of the group key, in group_by order
    kind: NotificationKind
    ts_ms: int
    alerts: tuple[AlertTransition, ...] = field(default_factory=tuple)
