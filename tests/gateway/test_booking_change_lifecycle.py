"""A booking extended while in use (issue 15): on a real gateway with a fake clock, the
successor of an ``active`` booking stays ``active`` (its use started already: never judged a
no-show, not completed at the old end), completes at its own end, and meters the whole chain
from the common start. A confirmed booking extended before its start is judged as usual."""

from __future__ import annotations

from pathlib import Path

from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.collectors.mqtt.collector import AckToken
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.rules import Sample
from pilotline.rules.booking import Request, Reservation, Status

MIN = 60_000
HOUR = 60 * MIN
START = T0 + 2 * HOUR
END = START + HOUR
_delivery = iter(range(1, 1_000_000))


def test_an_active_booking_extended_stays_active_and_meters_the_whole_chain(
    tmp_path: Path,
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml(
        {"photonics": [machine_config("laser-01"), machine_config("laser-02")]},
        store=tmp_path / "gw.db",
        defaults={**UNIT_DEFAULTS, "stale_after_s": 3600, "publish_interval_s": 600,
                  "offering": "always"},
    ))
    clock = Clock()
    gateway = Gateway(load_config(path), writer=MemoryWriter(), clock_ms=clock,
                      monotonic_ms=clock.monotonic)
    gateway.caught_up = True
    book = gateway.store.reservations()
    rules = gateway.config.booking_rules("laser-01")
    offered = [(T0, T0 + 24 * HOUR)]

    def confirmed(machine: str) -> Reservation:
        held = book.request(Request(machine, "tenant-a", START, END), rules, offered, T0)
        assert held.reservation is not None
        return book.confirm(held.reservation.id, T0, approval=False, by="tenant-a")

    def at(ts: int, states: dict[str, str]) -> None:
        clock.set(ts)
        for machine, state in states.items():
            n = next(_delivery)
            gateway.ingest.sample(Sample(machine, ts, {"state": state}), AckToken(1, n, n))
        gateway.tick()
        gateway.commit()
        gateway.bookings.settle()

    def status(rid: str) -> Status:
        res = book.get(rid)
        assert res is not None
        return res.status

    used, planned = confirmed("laser-01"), confirmed("laser-02")
    for ts in range(T0, START, 10 * MIN):
        at(ts, {"laser-01": "NotExecuting", "laser-02": "NotExecuting"})
    # laser-02's booking grows before it starts: its successor is judged as any booking
    grown = book.change(planned.id, START, END + HOUR, START - 10 * MIN, rules=rules,
                        offered=offered, by="tenant-a").reservation
    assert grown is not None
    at(START + 5 * MIN, {"laser-01": "Executing", "laser-02": "NotExecuting"})
    assert status(used.id) is Status.ACTIVE

    longer = book.change(used.id, START, END + HOUR, START + 30 * MIN, rules=rules,
                         offered=offered, by="tenant-a").reservation
    assert longer is not None
    assert (longer.status, longer.predecessor) == (Status.ACTIVE, used.id)
    # runs past the old end, inside the new one, then stops
    for ts in range(START + 30 * MIN, END + 2 * HOUR, 10 * MIN):
        at(ts, {"laser-01": "Executing" if ts < END + 30 * MIN else "NotExecuting",
                "laser-02": "NotExecuting"})
        if ts < END + HOUR:
            assert status(longer.id) is Status.ACTIVE, ts
    assert status(used.id) is Status.CANCELLED
    assert status(longer.id) is Status.COMPLETED
    assert status(grown.id) is Status.NO_SHOW
    assert [s for s, *_ in book.events(longer.id)] == [Status.ACTIVE, Status.COMPLETED]
    usage = gateway.bookings.usage(longer.id)
    assert usage is not None
    # from the common start: idle until the run at +5 min, running 85 min, idle 30 min
    assert (usage.running_ms, usage.idle_ms, usage.overrun_ms) == (85 * MIN, 35 * MIN, 0)
    gateway.store.close()
