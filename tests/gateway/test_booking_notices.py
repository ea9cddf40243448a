"""Booking notifications (service/booking_notices.py, store/booking_notices.py,
notify/booking.py): which moves are told to which channel (``bookings:`` with owners, tenants,
events), exactly once across runs and restarts, a store's earlier history not told, the text
each channel kind renders, and the configuration's mistakes with their paths. Delivery to a
real receiver: tests/integration/test_notify_bookings.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.gateway.config import ConfigError, load_config
from pilotline.gateway.notify.email.channel import body, subject
from pilotline.gateway.notify.mqtt.channel import messages
from pilotline.gateway.notify.webhook.channel import render
from pilotline.gateway.service import Gateway
from pilotline.gateway.store import Store
from pilotline.rules import Sample
from pilotline.rules.booking import Request, Reservation, Status

HOUR = 3_600_000
DAY = 24 * HOUR
OFFERED = [(T0, T0 + 10 * DAY)]

CHANNELS = {
    "webhooks": [
        # the facility's desk: alerts, and every booking notification
        {"name": "ops", "url": "http://127.0.0.1:9/ops", "bookings": {}},
        # acme's planning: bookings on its machines only, no alert
        {"name": "acme-desk", "url": "http://127.0.0.1:9/acme", "alerts": False,
         "bookings": {"owners": ["acme"]}},
        # alerts only (no bookings:)
        {"name": "chat", "url": "http://127.0.0.1:9/chat", "format": "slack"},
    ],
    "email": [
        # smallco's inbox: its own confirmations and no-shows
        {"name": "smallco", "host": "smtp.example.com", "from": "pilotline@example.com",
         "to": ["ops@smallco.example"], "alerts": False,
         "bookings": {"tenants": ["smallco"], "events": ["confirmed", "no_show"]}},
    ],
}


def write_site(tmp_path: Path, alerts: dict[str, Any]) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"z": [
                machine_config("laser-01", "acme"),
                machine_config("press-01", "umbra", booking={"approval": True}),
            ]},
            influx=None,
            store=tmp_path / "gw.db",
            defaults={**UNIT_DEFAULTS, "offering": "always"},
            alerts=alerts,
        )
    )
    return path


def gateway_of(tmp_path: Path, clock: Clock) -> Gateway:
    return Gateway(load_config(write_site(tmp_path, CHANNELS)), clock_ms=clock)


def queued(store: Store) -> list[tuple[str, dict[str, Any]]]:
    return [(r["channel"], json.loads(r["payload"]))
            for r in store._rows("SELECT channel, payload FROM notifications ORDER BY id")]


def told(store: Store, channel: str) -> list[tuple[str, str, bool | None]]:
    """(event, reservation id, late) of each notification queued for ``channel``."""
    return [(p["event"], p["reservation"]["id"], p["late"])
            for c, p in queued(store) if c == channel]


class Bookings:
    def __init__(self, gateway: Gateway, clock: Clock) -> None:
        self.gateway, self.clock = gateway, clock
        self.book = gateway.store.reservations()

    def hold(self, machine: str, tenant: str, start: int, length: int = HOUR) -> Reservation:
        rules = self.gateway.config.booking_rules(machine)
        made = self.book.request(
            Request(machine, tenant, start, start + length), rules, OFFERED, self.clock.ms
        ).reservation
        assert made is not None
        return made

    def confirmed(self, machine: str, tenant: str, start: int, length: int = HOUR) -> str:
        rid = self.hold(machine, tenant, start, length).id
        approval = self.gateway.config.booking_rules(machine).approval
        self.book.confirm(rid, self.clock.ms, approval=approval, by=tenant)
        return rid


def test_each_move_is_told_once_to_the_channels_that_want_it(tmp_path: Path) -> None:
    clock = Clock(T0)
    gateway = gateway_of(tmp_path, clock)
    b = Bookings(gateway, clock)
    book = b.book
    used = b.confirmed("laser-01", "smallco", T0 + 2 * HOUR)          # confirmed
    approved = b.confirmed("press-01", "bigco", T0 + 2 * HOUR)        # requested
    book.approve(approved, clock.ms, by="umbra-token")                 # confirmed
    refused = b.confirmed("press-01", "bigco", T0 + 4 * HOUR)         # requested
    book.reject(refused, clock.ms, by="umbra-token", note="maintenance that day")
    late = b.confirmed("laser-01", "smallco", T0 + 5 * HOUR)          # confirmed
    book.cancel(late, clock.ms, by="smallco")                          # late: < 24 h ahead
    early = b.confirmed("laser-01", "smallco", T0 + 3 * DAY)          # confirmed
    book.cancel(early, clock.ms, by="smallco")                         # in time
    hold = b.hold("laser-01", "bigco", T0 + 6 * DAY)
    book.cancel(hold.id, clock.ms, by="bigco")                         # a hold: not told
    clock.ms = T0 + 2 * HOUR + 20 * 60_000
    book.settle([(used, Status.CONFIRMED, Status.NO_SHOW, "idle")], clock.ms)

    assert gateway.booking_notices.run_once() == 10 + 6 + 4
    assert told(gateway.store, "ops") == [
        ("confirmed", used, None),
        ("requested", approved, None), ("confirmed", approved, None),
        ("requested", refused, None), ("rejected", refused, None),
        ("confirmed", late, None), ("cancelled", late, True),
        ("confirmed", early, None), ("cancelled", early, False),
        ("no_show", used, None),
    ]
    assert told(gateway.store, "acme-desk") == [
        ("confirmed", used, None), ("confirmed", late, None), ("cancelled", late, True),
        ("confirmed", early, None), ("cancelled", early, False), ("no_show", used, None),
    ]
    assert told(gateway.store, "smallco") == [
        ("confirmed", used, None), ("confirmed", late, None), ("confirmed", early, None),
        ("no_show", used, None),
    ]
    assert told(gateway.store, "chat") == []
    no_show = queued(gateway.store)[-1][1]
    assert no_show["reservation"] | {"start_ms": 0} == {
        "id": used, "machine": "laser-01", "zone": "z", "owner": "acme", "tenant": "smallco",
        "status": "no_show", "start": "2026-11-27T02:00:00.000+00:00", "start_ms": 0,
        "end": "2026-11-27T03:00:00.000+00:00", "end_ms": T0 + 3 * HOUR,
        "predecessor": None, "purpose": "",
    }
    assert (no_show["by"], no_show["note"], no_show["ts_ms"]) == ("pilotline", "idle", clock.ms)

    # exactly once: nothing new, nothing again; nor after a restart on the same store
    assert gateway.booking_notices.run_once() == 0
    gateway.store.close()
    again = gateway_of(tmp_path, clock)
    assert again.booking_notices.run_once() == 0
    assert len(queued(again.store)) == 20
    again.store.close()


def test_a_store_with_bookings_does_not_tell_its_history_on_upgrade(tmp_path: Path) -> None:
    clock = Clock(T0)
    gateway = gateway_of(tmp_path, clock)
    Bookings(gateway, clock).confirmed("laser-01", "smallco", T0 + 2 * HOUR)
    # as a store of schema 8 would be: no cursor yet
    gateway.store._db.execute("DROP TABLE booking_notices_cursor")
    gateway.store.close()
    upgraded = gateway_of(tmp_path, clock)
    assert upgraded.booking_notices.run_once() == 0
    b = Bookings(upgraded, clock)
    b.confirmed("laser-01", "bigco", T0 + 5 * HOUR)  # what happens after the upgrade is told
    assert upgraded.booking_notices.run_once() == 2  # ops, acme-desk (smallco: not its own)
    upgraded.store.close()


def test_each_channel_kind_renders_a_booking_notification(tmp_path: Path) -> None:
    clock = Clock(T0)
    gateway = gateway_of(tmp_path, clock)
    b = Bookings(gateway, clock)
    rid = b.confirmed("press-01", "bigco", T0 + 2 * HOUR)
    gateway.booking_notices.run_once()
    p = queued(gateway.store)[0][1]
    assert p["event"] == "requested"

    slack = json.loads(render("slack", p))["text"]
    assert slack.splitlines()[0] == "[BOOKING requested] press-01 2026-11-27T02:00:00.000+00:00" \
        " (bigco)"
    assert f"POST /api/reservations/{rid}/approve" in slack
    assert json.loads(render("json", p)) == p
    assert subject(p) == f"[pilotline unit] {slack.splitlines()[0]}"
    assert "owner umbra" in body(p)
    [(topic, payload, retain)] = messages("pilotline/unit", p)
    assert (topic, retain) == ("pilotline/unit/bookings", False)
    assert json.loads(payload) == p
    gateway.store.close()


def problems(tmp_path: Path, alerts: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write_site(tmp_path, alerts))
    return [f"{i.path}: {i.message}" for i in caught.value.issues]


def test_booking_routes_are_checked_with_their_path(tmp_path: Path) -> None:
    hook = {"name": "x", "url": "http://127.0.0.1:9/x"}
    found = problems(tmp_path, {"webhooks": [{**hook, "bookings": {"tenants": ["smallco"]}}]})
    assert len(found) == 1
    assert found[0].startswith("alerts.webhooks[0]: ")
    assert "set alerts: false" in found[0]
    assert problems(tmp_path, {"webhooks": [
        {**hook, "alerts": False, "bookings": {"owners": ["acme", "acmee"]}}
    ]}) == ["alerts.webhooks[0].bookings.owners[1]: no machine has the owner 'acmee': did you "
            "mean 'acme'?"]
    found = problems(tmp_path, {"webhooks": [{**hook, "bookings": {"events": ["approved"]}}]})
    assert found[0].startswith("alerts.webhooks[0].bookings.events[0]: ")
    # a channel of bookings only gets no alert
    config = load_config(write_site(tmp_path, CHANNELS))
    routes = {r.channel: r for r in config.alerts.routes()}
    assert not routes["acme-desk"].matches("critical", "z")
    assert routes["ops"].matches("critical", "z")


MIN = 60_000
REMINDED = {
    "webhooks": [
        {"name": "ops", "url": "http://127.0.0.1:9/ops", "bookings": {}},
        # the owner's desk: overruns on its machines, never a tenant's reminder
        {"name": "acme-desk", "url": "http://127.0.0.1:9/acme", "alerts": False,
         "bookings": {"owners": ["acme"]}},
        # the tenant's: its reminders only
        {"name": "smallco", "url": "http://127.0.0.1:9/smallco", "alerts": False,
         "bookings": {"tenants": ["smallco"], "events": ["starting_soon", "overrun"]}},
    ],
}


def reminded_gateway(tmp_path: Path, clock: Clock, **alerts: Any) -> Gateway:
    path = write_site(tmp_path, {**REMINDED, **alerts})
    # samples a minute apart: not stale in between
    path.write_text(path.read_text().replace("stale_after_s: 60", "stale_after_s: 600"))
    return Gateway(load_config(path), clock_ms=clock, collectors=False)


def reminders(store: Store) -> list[tuple[str, str, str]]:
    """(channel, event, reservation id) of each reminder queued."""
    return [(c, p["event"], p["reservation"]["id"]) for c, p in queued(store)
            if p["event"] in ("starting_soon", "overrun")]


def test_starting_soon_is_told_once_to_the_tenants_channels(tmp_path: Path) -> None:
    clock = Clock(T0)
    gateway = reminded_gateway(tmp_path, clock)
    b = Bookings(gateway, clock)
    later = b.confirmed("laser-01", "smallco", T0 + 2 * HOUR)
    asked = b.confirmed("press-01", "smallco", T0 + 15 * MIN)  # requested, not confirmed
    gateway.booking_notices.run_once()
    assert reminders(gateway.store) == []

    # confirmed 10 min before its start, inside the lead: told at once
    clock.ms = T0 + HOUR + 35 * MIN
    close = b.confirmed("laser-01", "bigco", T0 + HOUR + 45 * MIN, 15 * MIN)
    gateway.booking_notices.run_once()
    clock.ms = T0 + 2 * HOUR - 15 * MIN - 1
    assert gateway.booking_notices.run_once() == 0
    clock.ms = T0 + 2 * HOUR - 15 * MIN  # the default lead
    assert gateway.booking_notices.run_once() == 2
    clock.ms = T0 + 2 * HOUR - 1
    assert gateway.booking_notices.run_once() == 0
    assert reminders(gateway.store) == [
        ("ops", "starting_soon", close),  # smallco's channel: not its booking
        ("ops", "starting_soon", later), ("smallco", "starting_soon", later),
    ]
    p = [p for c, p in queued(gateway.store) if p["event"] == "starting_soon"][1]
    assert (p["event_id"], p["by"], p["ts_ms"]) == (None, "pilotline", T0 + 2 * HOUR - 15 * MIN)
    assert "starts soon" in json.loads(render("slack", p))["text"]
    assert asked not in {rid for _, _, rid in reminders(gateway.store)}
    gateway.store.close()

    again = reminded_gateway(tmp_path, clock)  # a restart tells nothing again
    assert again.booking_notices.run_once() == 0
    again.store.close()


def run_machine(gateway: Gateway, clock: Clock, state: str, until: int) -> None:
    """The machine reports ``state`` every minute up to ``until``; each turn as the gateway
    runs it (ingest, rules, commit, lifecycle, notices)."""
    while clock.ms < until:
        clock.ms += MIN
        gateway.ingest.sample(Sample("laser-01", clock.ms, {"state": state}), None)
        gateway.tick()
        gateway.commit()
        gateway.bookings.settle()
        gateway.booking_notices.run_once()


def test_an_overrun_is_told_once_to_the_owners_and_the_tenants_channels(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    gateway = reminded_gateway(tmp_path, clock, booking_overrun="10m")
    start, end = T0 + HOUR, T0 + 2 * HOUR
    rid = Bookings(gateway, clock).confirmed("laser-01", "smallco", start)
    run_machine(gateway, clock, "NotExecuting", start - 5 * MIN)
    run_machine(gateway, clock, "Executing", end + 10 * MIN)  # not yet more than 10 min
    assert gateway.store.reservations().get(rid).status is Status.COMPLETED  # type: ignore[union-attr]
    assert [e for _, e, _ in reminders(gateway.store)] == ["starting_soon"] * 2
    run_machine(gateway, clock, "Executing", end + 11 * MIN)
    overruns = [(c, r) for c, e, r in reminders(gateway.store) if e == "overrun"]
    assert overruns == [("ops", rid), ("acme-desk", rid), ("smallco", rid)]
    p = next(p for _, p in queued(gateway.store) if p["event"] == "overrun")
    assert p["note"] == "running 11 min past the end"
    run_machine(gateway, clock, "Executing", end + 30 * MIN)
    gateway.store.close()
    again = reminded_gateway(tmp_path, clock, booking_overrun="10m")
    run_machine(again, clock, "Executing", end + 32 * MIN)
    assert len([e for _, e, _ in reminders(again.store) if e == "overrun"]) == 3
    again.store.close()


def test_no_overrun_when_the_machine_stopped_at_the_end(tmp_path: Path) -> None:
    clock = Clock(T0)
    gateway = reminded_gateway(tmp_path, clock)
    start = T0 + HOUR
    Bookings(gateway, clock).confirmed("laser-01", "smallco", start)
    run_machine(gateway, clock, "NotExecuting", start - 5 * MIN)
    run_machine(gateway, clock, "Executing", start + HOUR - MIN)
    # stopped before the end, then runs again later (its owner's job): not an overrun
    run_machine(gateway, clock, "NotExecuting", start + HOUR + MIN)
    run_machine(gateway, clock, "Executing", start + HOUR + 30 * MIN)
    assert [e for _, e, _ in reminders(gateway.store) if e == "overrun"] == []
    gateway.store.close()
