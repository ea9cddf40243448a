"""Published back (issue 17): each machine's state, capacity and current booking, retained on
the site's broker for the rest of the plant's namespace. The topics and payloads are a
contract (README, "Published back").

Theory of operation. ``PublishBack`` is one of the event pipeline's handlers (handlers.py),
so it sees every batch of the core's events after ``adjust`` (service/reserved.py) made the
capacity booking-aware:

- ``StateChanged`` → ``<base>/state`` ``{"state", "since", "ts"}``;
- ``Capacity`` → ``<base>/capacity`` ``{"available", "offered", "reserved", "idle_for_s",
  "ts"}``, when its flags changed or it is the core's periodic one (every
  ``publish_interval_s`` of the machine): ``idle_for_s`` alone changes every second and is
  refreshed only at that pace;
- ``<base>/booking``: the reservation covering the machine now (the one that makes
  ``capacity.reserved`` true, on the machine's own clock, as ``BookedCapacity`` reads it),
  looked for every ``BOOKING_POLL_S`` and published when it, or its status, changed.

where ``<base>`` is ``<prefix>/<site>/<zone>/<machine>``. At start every machine's current
state, capacity and booking is published once, from the plant's views (restored machines
included). A topic is published at most every ``min_interval_s`` (``Throttle``: a change
sooner waits, and only the latest goes out). Published from the decisions as they are
staged, before their commit: a gateway killed in between decides them again from the
redelivered samples.

Times are ISO 8601 UTC with milliseconds, as the interlock's messages and the API print them;
``ts`` is when the content was decided, on the machine's clock. The tenant's id is in
``booking`` only with ``tenant_ids: true``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from pilotline.gateway.clock import Clock
from pilotline.gateway.config.publish_back import PublishBack as PublishBackConfig
from pilotline.gateway.notify.mqtt.channel import topic_level
from pilotline.gateway.service.publish_back_mqtt import Publisher
from pilotline.gateway.service.reserved import Reserved
from pilotline.gateway.service.staged import Staged
from pilotline.gateway.timefmt import iso
from pilotline.rules import Event, Plant, StateChanged
from pilotline.rules.booking import Reservation
from pilotline.rules.booking.capacity import covering, offered_now
from pilotline.rules.events import Capacity
from pilotline.rules.states import State

__all__ = [
    "PublishBack",
    "Throttle",
    "booking_payload",
    "capacity_payload",
    "machine_topic",
    "state_payload",
]

BOOKING_POLL_S: Final = 0.5
"""How often the booking holding each machine is looked for (a confirmed booking, its start,
its end show this late at most, plus ``min_interval_s``)."""


def machine_topic(prefix: str, site: str, zone: str, machine: str) -> str:
    """``<prefix>/<site>/<zone>/<machine>``: the base of one machine's topics."""
    return "/".join((prefix, topic_level(site), topic_level(zone), topic_level(machine)))


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def state_payload(state: State, since_ms: int | None, ts_ms: int) -> bytes:
    """Exactly ``{"state", "since", "ts"}``: ``since`` the state's first sample (null: never
    seen), ``ts`` when it was decided."""
    return _json({"state": state.value, "since": iso(since_ms), "ts": iso(ts_ms)})


def capacity_payload(
    available: bool, offered: bool, reserved: bool, idle_for_s: float, ts_ms: int
) -> bytes:
    """Exactly ``{"available", "offered", "reserved", "idle_for_s", "ts"}``."""
    return _json(
        {
            "available": available,
            "offered": offered,
            "reserved": reserved,
            "idle_for_s": round(idle_for_s, 3),
            "ts": iso(ts_ms),
        }
    )


def booking_payload(res: Reservation | None, ts_ms: int, *, tenant_ids: bool) -> bytes:
    """``{"reservation", "status", "start", "end", "ts"}`` (with ``"tenant"`` after
    ``"reservation"`` when ``tenant_ids``); every key but ``ts`` null when no booking holds
    the machine."""
    body: dict[str, Any] = {"reservation": None if res is None else res.id}
    if tenant_ids:
        body["tenant"] = None if res is None else res.tenant
    body["status"] = None if res is None else res.status.value
    body["start"] = None if res is None else iso(res.start_ms)
    body["end"] = None if res is None else iso(res.end_ms)
    body["ts"] = iso(ts_ms)
    return _json(body)


class Throttle:
    """At most one message per topic every ``min_interval_ms`` (of the monotonic clock given
    to each call); a message offered sooner waits, replaced by any later one."""

    def __init__(self, min_interval_ms: int) -> None:
        self._interval = min_interval_ms
        self._last: dict[str, int] = {}  # topic -> when its last message was released
        self._pending: dict[str, bytes] = {}

    def offer(self, topic: str, payload: bytes) -> None:
        self._pending[topic] = payload

    def due(self, now_ms: int) -> list[tuple[str, bytes]]:
        """The messages that may go now (in the order first offered), released."""
        out: list[tuple[str, bytes]] = []
        for topic, payload in self._pending.items():
            last = self._last.get(topic)
            if last is None or now_ms - last >= self._interval:
                out.append((topic, payload))
        for topic, _ in out:
            del self._pending[topic]
            self._last[topic] = now_ms
        return out

    def next_deadline(self) -> int | None:
        """When the earliest waiting message may go (None: nothing waits)."""
        return min(
            (self._last.get(t, 0) + self._interval for t in self._pending), default=None
        )

    def __len__(self) -> int:
        return len(self._pending)


class PublishBack:
    """Machines' state, capacity and booking to ``publisher``; an event handler of the
    pipeline, and a task (``run``) that publishes."""

    name = "publish_back"

    def __init__(
        self,
        *,
        settings: PublishBackConfig,
        site: str,
        plant: Plant,
        reserved: Reserved,
        publisher: Publisher,
        clock_ms: Clock,
        monotonic_ms: Callable[[], int] | None = None,
    ) -> None:
        self._settings = settings
        self._plant = plant
        self._reserved = reserved
        self.publisher = publisher
        self._clock_ms = clock_ms
        self._monotonic_ms = monotonic_ms or (lambda: int(time.monotonic() * 1000))
        self.prefix = settings.prefix
        self._base = {
            v.id: machine_topic(settings.prefix, site, v.zone, v.id) for v in plant.view()
        }
        self._throttle = Throttle(round(settings.min_interval_s * 1000))
        self._flags: dict[str, tuple[bool, bool, bool]] = {}  # machine -> capacity flags sent
        self._booking: dict[str, tuple[str | None, str | None]] = {}  # machine -> (id, status)
        self._offered: set[str] = set()  # topics with a message offered in this run
        self._wake = asyncio.Event()
        self.published = 0

    # -- the event pipeline's handler ------------------------------------------------------

    def __call__(self, events: Sequence[Event], staged: Staged) -> None:
        offered = False
        for event in events:
            if isinstance(event, StateChanged):
                ts = event.decided_ms if event.decided_ms >= 0 else event.ts_ms
                self._offer(event.machine, "state", state_payload(event.state, event.ts_ms, ts))
                offered = True
            elif isinstance(event, Capacity):
                flags = (event.available, event.offered, event.reserved)
                if event.periodic or flags != self._flags.get(event.machine):
                    self._flags[event.machine] = flags
                    self._offer(
                        event.machine,
                        "capacity",
                        capacity_payload(*flags, event.idle_for_s, event.ts_ms),
                    )
                    offered = True
        if offered:
            self._wake.set()

    def _offer(self, machine: str, kind: str, payload: bytes) -> None:
        base = self._base.get(machine)
        if base is None:  # not one of this gateway's machines
            return
        topic = f"{base}/{kind}"
        self._offered.add(topic)
        self._throttle.offer(topic, payload)

    # -- what is looked for ----------------------------------------------------------------

    def _machine_time(self, lag_ms: int) -> int:
        now = self._plant.now_ms
        return (self._clock_ms() if now is None else now) - max(0, lag_ms)

    def snapshot(self) -> None:
        """Every machine's state and capacity as the plant's views show them, for the topics
        that have no message yet in this run (the start: restored machines included)."""
        live = self._reserved.by_machine()
        for view in self._plant.view():
            t = self._machine_time(view.lag_ms)
            base = self._base[view.id]
            if f"{base}/state" not in self._offered:
                self._offer(view.id, "state", state_payload(view.state, view.since_ms, t))
            if f"{base}/capacity" not in self._offered:
                now = offered_now(view.offered, live.get(view.id, ()), t)
                flags = (view.available, now.offered, now.reserved)
                self._flags[view.id] = flags
                self._offer(view.id, "capacity", capacity_payload(*flags, view.idle_for_s, t))

    def bookings(self) -> int:
        """Offer the ``booking`` message of each machine whose covering reservation (or its
        status) changed; how many."""
        self._reserved.refresh()
        live = self._reserved.by_machine()
        changed = 0
        for view in self._plant.view():
            t = self._machine_time(view.lag_ms)
            res = covering(live.get(view.id, ()), t)
            key = (None, None) if res is None else (res.id, res.status.value)
            if view.id in self._booking and self._booking[view.id] == key:
                continue
            self._booking[view.id] = key
            payload = booking_payload(res, t, tenant_ids=self._settings.tenant_ids)
            self._offer(view.id, "booking", payload)
            changed += 1
        return changed

    def flush(self) -> int:
        """Publish what the throttle lets go now; how many."""
        due = self._throttle.due(self._monotonic_ms())
        for topic, payload in due:
            self.publisher.publish(topic, payload)
        self.published += len(due)
        return len(due)

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Publish until cancelled (the connection closed on the way out)."""
        self.publisher.start()
        try:
            self.snapshot()
            while True:
                self._wake.clear()
                self.bookings()
                self.flush()
                wait = BOOKING_POLL_S
                deadline = self._throttle.next_deadline()
                if deadline is not None:
                    wait = min(wait, max(0.0, (deadline - self._monotonic_ms()) / 1000))
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            self.publisher.stop()

    # -- what /health shows ----------------------------------------------------------------

    def health_report(self, _now_ms: int) -> dict[str, Any]:
        """Unhealthy while the broker is not connected: the namespace is then out of date."""
        mqtt = self.publisher.health()
        why = None
        if not self.publisher.connected:
            why = f"mqtt: not connected ({mqtt.get('last_error') or 'connecting'})"
        return {
            "healthy": why is None,
            "why": why,
            "prefix": self.prefix,
            "published": self.published,
            "waiting": len(self._throttle),
            "mqtt": mqtt,
        }
