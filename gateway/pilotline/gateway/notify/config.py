"""What every notification channel's configuration has (each channel's own is in
``notify/<channel>/config.py``; the site's ``alerts:`` section assembles them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final, Literal

from pydantic import model_validator

from pilotline.collectors.fields import Connection, Id, Model
from pilotline.rules.alerts import SEVERITIES
from pilotline.rules.dispatch import Route

__all__ = ["BOOKING_EVENTS", "BookingRouteConfig", "ChannelConfig", "Severity"]

# The core's severities, as a type pydantic validates (its "Input should be 'info', ..." is
# the message); for mypy a plain str, since a Literal cannot be built from a variable.
if TYPE_CHECKING:
    Severity = str
else:
    Severity = Literal[SEVERITIES]


BOOKING_EVENTS: Final = (
    "requested", "confirmed", "rejected", "cancelled", "no_show", "preempted",
    "starting_soon", "overrun",
)
"""What is told to a channel with ``bookings:`` (notify/booking.py): the reservation moves,
and the reminders ``starting_soon`` and ``overrun``."""
if TYPE_CHECKING:
    BookingEventName = str
else:
    BookingEventName = Literal[BOOKING_EVENTS]


class BookingRouteConfig(Model):
    """A channel's ``bookings:``: which booking notifications it gets (``{}``: every one)."""

    owners: list[Id] | None = None
    """Only bookings on these owners' machines (default: all)."""
    tenants: list[Id] | None = None
    """Only these tenants' (companies') bookings (default: all)."""
    events: list[BookingEventName] | None = None
    """Only these: the moves requested (approval needed), confirmed, rejected, cancelled,
    no_show, preempted, and the reminders starting_soon (to tenants' channels: not to one
    with only ``owners:``) and overrun (default: all)."""

    def wants(self, owner: str, tenant: str, event: str) -> bool:
        if event == "starting_soon" and self.owners is not None and self.tenants is None:
            return False  # a reminder for the tenant, not the owner's desk
        return (
            (self.owners is None or owner in self.owners)
            and (self.tenants is None or tenant in self.tenants)
            and (self.events is None or event in self.events)
        )


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

    alerts: bool = True
    """Alert notifications to this channel; ``false`` for a channel of booking notifications
    only (required with ``bookings.owners`` or ``bookings.tenants``)."""
    bookings: BookingRouteConfig | None = None
    """Booking notifications to this channel too (default: none); ``{}`` for every one."""

    @model_validator(mode="after")
    def _scoped_bookings_only(self) -> ChannelConfig:
        # A channel addressed to one owner or tenant must not carry the site's alerts, which
        # name every owner's machines.
        scoped = self.bookings is not None and (
            self.bookings.owners is not None or self.bookings.tenants is not None
        )
        if scoped and self.alerts:
            raise ValueError(
                "a channel for some owners' or tenants' bookings would also get every alert "
                "of the site: set alerts: false (and use another channel for alerts)"
            )
        return self

    def route(self) -> Route:
        """What the dispatcher (rules/dispatch/) sends to this channel."""
        if not self.alerts:
            return Route(self.name, self.min_severity, frozenset())  # no zone: no alert
        zones = frozenset(self.zones) if self.zones is not None else None
        return Route(self.name, self.min_severity, zones)
