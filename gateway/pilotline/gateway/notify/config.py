"""What every notification channel's configuration has (each channel's own is in
``notify/<channel>/config.py``; the site's ``alerts:`` section assembles them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pilotline.collectors.fields import Connection, Id
from pilotline.rules.alerts import SEVERITIES
from pilotline.rules.dispatch import Route

__all__ = ["ChannelConfig", "Severity"]

# The core's severities, as a type pydantic validates (its "Input should be 'info', ..." is
# the message); for mypy a plain str, since a Literal cannot be built from a variable.
if TYPE_CHECKING:
    Severity = str
else:
    Severity = Literal[SEVERITIES]


class ChannelConfig(Connection):
    """What every alert channel has (``alerts.webhooks``, ``alerts.email``, ``alerts.mqtt``):
    a ``name`` unique across all of them (it keys the channel's rows in the store), the least
    severity it wants, and the zones it serves (None: all)."""

    KIND: ClassVar[str] = "channel"
    """The kind of channel in ``pilotline check``'s summary."""

    name: Id
    """The channel's id, unique across all channels (it keys the channel's rows in the store)."""
    min_severity: Severity = "info"
    """Only alerts at least this severe reach the channel."""
    zones: list[Id] | None = None
    """Only alerts of these zones (default: all)."""

    def route(self) -> Route:
        """What the dispatcher (rules/dispatch/) sends to this channel."""
        zones = frozenset(self.zones) if self.zones is not None else None
        return Route(self.name, self.min_severity, zones)
