"""A notification channel's route: which alerts it wants."""

from __future__ import annotations

from dataclasses import dataclass

from pilotline.rules.labels import at_least


@dataclass(frozen=True, slots=True)
class Route:
    """One channel and what it wants: severities at or above ``min_severity``, alerts of
    ``zones`` (None: every zone)."""

    channel: str
    min_severity: str = "info"
    zones: frozenset[str] | None = None

    def matches(self, severity: str, zone: str) -> bool:
        return at_least(severity, self.min_severity) and (self.zones is None or zone in self.zones)
