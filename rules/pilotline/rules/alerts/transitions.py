"""What the alert core reports: an instance's status, its transitions, and its view."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.Enum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """``alert``: an instance started firing (``firing``) or resolved (not ``firing``)."""

    rule: str
    machine: str  # for a collector rule: the collector's name
    zone: str  # for a collector rule: its machines' zone, or "*" when they differ
    owner: str  # for a collector rule: ""
    severity: str
    firing: bool
    value: float
    message: str
    ts_ms: int
    since_ms: int  # when the condition became true (for a resolution: of the episode)


@dataclass(frozen=True, slots=True)
class AlertView:
    """One pending or firing instance, for the API."""

    rule: str
    machine: str
    zone: str
    owner: str
    severity: str
    status: Status
    since_ms: int  # condition true since
    firing_since_ms: int | None
    value: float
    message: str
