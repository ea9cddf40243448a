"""Booking-aware capacity in the shell (issue 15): the live reservations of the gateway's
machines in memory, and the capacity events rewritten with them.

``Reserved`` loads the live reservations once, then follows the store's
``reservation_events`` from the last id it saw: whoever moved a reservation (the API, the
lifecycle, the command line), the next read sees it, for one indexed query when nothing
moved. ``BookedCapacity`` asks the pure core (``rules.booking.capacity``) what a machine
offers given them: every ``Capacity`` and ``ZoneCapacity`` event goes through ``adjust``
before any handler sees it (store, points, alert rules), so a reserved machine is written,
kept and alerted on as not offered. The machine's core knows nothing of bookings, so a
booking that begins or ends changes no core state: ``tick`` notices the edge (on each
machine's own clock) and emits one ``Capacity`` event for it, like the core does for a
change of availability.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from pilotline.gateway.store.reservations import Reservations
from pilotline.rules import Plant
from pilotline.rules.booking import LIVE, Reservation
from pilotline.rules.booking.capacity import covering, offered_now, reserved_count
from pilotline.rules.events import Capacity, Event, ZoneCapacity
from pilotline.rules.plant import ALL_CAPABILITIES
from pilotline.rules.spec import MachineSpec

TICK_S: Final = 1.0
"""How often a booking's start and end are looked for: ``capacity`` shows one this late at
most (plus the gateway's ``lateness``, as for everything the core decides)."""


class Reserved:
    """The live reservations, per machine, kept current from the store's events."""

    def __init__(self, book: Reservations) -> None:
        self._book = book
        self._seen = book.last_event_id()
        self._live: dict[str, Reservation] = {r.id: r for r in book.list(statuses=LIVE)}
        self._by_machine: dict[str, list[Reservation]] | None = None

    def refresh(self) -> None:
        """Take in every status move since the last call."""
        while moves := self._book.events_since(self._seen):
            self._seen = moves[-1][0]
            for rid in {rid for _, rid, _, _ in moves}:
                res = self._book.get(rid)
                if res is not None and res.live:
                    self._live[rid] = res
                else:
                    self._live.pop(rid, None)
            self._by_machine = None

    def by_machine(self) -> Mapping[str, Sequence[Reservation]]:
        """Each machine's live reservations (as of the last ``refresh``)."""
        if self._by_machine is None:
            grouped: dict[str, list[Reservation]] = {}
            for res in self._live.values():
                grouped.setdefault(res.machine, []).append(res)
            self._by_machine = grouped
        return self._by_machine

    def holding(self, t_ms: int) -> dict[str, Reservation]:
        """Machine → the live reservation holding it at ``t_ms`` (refreshed first, once)."""
        self.refresh()
        return {
            machine: res
            for machine, booked in self.by_machine().items()
            if (res := covering(booked, t_ms)) is not None
        }


def zone_members(machines: Sequence[MachineSpec]) -> dict[tuple[str, str], list[str]]:
    """``(zone, capability)`` → its machines, as the core groups them for ``zone_capacity``
    (with the zone-wide ``all`` row)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for m in machines:
        groups.setdefault((m.zone, ALL_CAPABILITIES), []).append(m.id)
        for capability in m.capabilities:
            groups.setdefault((m.zone, capability), []).append(m.id)
    return groups


class BookedCapacity:
    def __init__(self, reserved: Reserved, plant: Plant, machines: Sequence[MachineSpec]) -> None:
        self._reserved = reserved
        self._plant = plant
        self._members = zone_members(machines)
        self._shown: dict[str, bool] = {}  # machine → the ``reserved`` last emitted

    def adjust(self, events: Sequence[Event]) -> Sequence[Event]:
        """``events`` with each ``Capacity`` and ``ZoneCapacity`` carrying the bookings at its
        own time; the same sequence when it has none."""
        if not any(isinstance(e, Capacity | ZoneCapacity) for e in events):
            return events
        self._reserved.refresh()
        live = self._reserved.by_machine()
        out: list[Event] = []
        for event in events:
            if isinstance(event, Capacity):
                now = offered_now(event.offered, live.get(event.machine, ()), event.ts_ms)
                self._shown[event.machine] = now.reserved
                out.append(
                    dataclasses.replace(event, offered=now.offered, reserved=now.reserved)
                )
            elif isinstance(event, ZoneCapacity):
                members = self._members.get((event.zone, event.capability), ())
                count = reserved_count(members, live, event.ts_ms)
                out.append(dataclasses.replace(event, reserved=count))
            else:
                out.append(event)
        return out

    def tick(self) -> list[Event]:
        """A ``Capacity`` event for each machine whose ``reserved`` changed since it was last
        emitted (a booking began or ended), stamped on the machine's own clock; not yet
        adjusted (``adjust`` does it with the rest)."""
        now = self._plant.now_ms
        if now is None:
            return []
        self._reserved.refresh()
        live = self._reserved.by_machine()
        out: list[Event] = []
        for view in self._plant.view():
            t = now - max(0, view.lag_ms)
            reserved = covering(live.get(view.id, ()), t) is not None
            if reserved != self._shown.get(view.id, False):
                out.append(
                    Capacity(
                        view.id, view.zone, view.owner, t, view.available, view.idle_for_s,
                        view.offered,
                    )
                )
        return out

    async def run(self, stage: Callable[[Sequence[Event]], None], request: Callable[[], None],
                  interval_s: float = TICK_S) -> None:
        """``tick`` every ``interval_s``; what it emits goes through ``stage`` (the event
        pipeline, which adjusts it) to the next commit (``request``)."""
        while True:
            events = self.tick()
            if events:
                stage(events)
                request()
            await asyncio.sleep(interval_s)
