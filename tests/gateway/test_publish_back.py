"""Published back without a network (issue 17): the ``publish_back:`` section, the payloads
as the README's contract gives them, the per-topic throttle, and what the pipeline's events
and the store's bookings make it publish, into the bundled in-memory publisher (the real
broker and subscriber: tests/integration/test_publish_back_mqtt.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.fakes import T0, Clock
from tests.sites import load_text, machine_config, refused, site_yaml

from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.service.publish_back import (
    PublishBack,
    Throttle,
    booking_payload,
    capacity_payload,
    machine_topic,
    state_payload,
)
from pilotline.gateway.service.publish_back_mqtt import MemoryPublisher
from pilotline.gateway.service.staged import Staged
from pilotline.rules import Sample, StateChanged
from pilotline.rules.booking import BookingRules, Request, Reservation, Status
from pilotline.rules.events import Capacity
from pilotline.rules.states import State

MIN = 60_000
HOUR = 60 * MIN
BASE = "uns/unit/photonics/laser-01"


# -- the section ---------------------------------------------------------------------------


def test_off_by_default_and_read_with_its_defaults(tmp_path: Path) -> None:
    zones = {"photonics": [machine_config("laser-01")]}
    assert load_text(tmp_path, site_yaml(zones)).publish_back is None
    config = load_text(tmp_path, site_yaml(zones, publish_back={"prefix": "acme/plant-7"}))
    assert config.publish_back is not None
    assert config.publish_back.model_dump() == {
        "prefix": "acme/plant-7", "qos": 1, "min_interval_s": 1.0, "tenant_ids": False,
    }


@pytest.mark.parametrize(
    ("prefix", "why"),
    [
        ("uns/#", "wildcards"),
        ("uns/+/x", "wildcards"),
        ("/uns", "leading"),
        ("uns/", "trailing"),
        ("uns//x", "doubled"),
        ("$SYS/uns", "broker's"),
        ("spBv1.0/uns", "Sparkplug"),
        ("", "non-empty"),
    ],
)
def test_a_prefix_that_is_no_plain_topic_prefix_is_refused_at_its_path(
    tmp_path: Path, prefix: str, why: str
) -> None:
    text = site_yaml({"z": [machine_config("a")]}, publish_back={"prefix": prefix})
    issues = {i.path: i.message for i in refused(tmp_path, text)}
    assert list(issues) == ["publish_back.prefix"]
    assert why in issues["publish_back.prefix"]


def test_the_section_needs_the_broker_and_knows_its_keys(tmp_path: Path) -> None:
    text = site_yaml(
        {"z": [machine_config("a", opcua={"endpoint": "opc.tcp://h:4840", "nodes": {}})]},
        mqtt=None,
        publish_back={"prefix": "uns", "qos": 2, "min_interval_s": -1, "tenant": True},
    )
    issues = {i.path: i.message for i in refused(tmp_path, text)}
    assert issues["publish_back"] == "publishing back needs the site's mqtt: broker section"
    assert {"publish_back.qos", "publish_back.min_interval_s", "publish_back.tenant"} <= set(
        issues
    )


# -- the payloads --------------------------------------------------------------------------


def body(payload: bytes) -> Any:
    return json.loads(payload)


def test_the_payloads_have_exactly_the_contracts_keys() -> None:
    assert machine_topic("uns", "unit", "photonics", "laser-01") == BASE
    state = body(state_payload(State.IDLE, T0, T0 + 5_000))
    assert state == {
        "state": "idle",
        "since": "2026-11-27T00:00:00.000+00:00",
        "ts": "2026-11-27T00:00:05.000+00:00",
    }
    assert list(state) == ["state", "since", "ts"]
    assert body(state_payload(State.OFFLINE, None, T0))["since"] is None

    capacity = body(capacity_payload(True, False, True, 912.3456, T0))
    assert list(capacity) == ["available", "offered", "reserved", "idle_for_s", "ts"]
    assert capacity["idle_for_s"] == 912.346

    res = Reservation("r_1", "laser-01", "smallco", T0, T0 + HOUR, Status.ACTIVE)
    assert body(booking_payload(res, T0 + 1, tenant_ids=False)) == {
        "reservation": "r_1",
        "status": "active",
        "start": "2026-11-27T00:00:00.000+00:00",
        "end": "2026-11-27T01:00:00.000+00:00",
        "ts": "2026-11-27T00:00:00.001+00:00",
    }
    named = body(booking_payload(res, T0, tenant_ids=True))
    assert list(named) == ["reservation", "tenant", "status", "start", "end", "ts"]
    assert named["tenant"] == "smallco"
    assert body(booking_payload(None, T0, tenant_ids=False)) == {
        "reservation": None, "status": None, "start": None, "end": None,
        "ts": "2026-11-27T00:00:00.000+00:00",
    }


# -- the throttle --------------------------------------------------------------------------


def test_a_topic_goes_out_at_most_once_per_interval_and_only_its_latest() -> None:
    t = Throttle(1_000)
    t.offer("a", b"1")
    t.offer("b", b"1")
    assert t.due(0) == [("a", b"1"), ("b", b"1")]
    assert t.next_deadline() is None
    t.offer("a", b"2")
    t.offer("a", b"3")  # replaces 2: only the latest waits
    assert t.due(400) == []
    assert t.next_deadline() == 1_000
    assert len(t) == 1
    assert t.due(1_000) == [("a", b"3")]
    t.offer("b", b"2")  # b last went at 0: free to go
    assert t.due(1_200) == [("b", b"2")]


def test_zero_interval_lets_everything_through() -> None:
    t = Throttle(0)
    for n in range(3):
        t.offer("a", str(n).encode())
        assert t.due(5) == [("a", str(n).encode())]


# -- the handler, the snapshot and the bookings --------------------------------------------


class Mono:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms


def parts(tmp_path: Path, **keys: Any) -> tuple[Gateway, PublishBack, MemoryPublisher, Mono]:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"photonics": [machine_config("laser-01")]}, store=tmp_path / "gw.db", influx=None,
            publish_back={"prefix": "uns", **keys},
        )
    )
    clock = Clock(T0 + 2_000)  # the plant decides 2 s behind (ServiceOptions.lateness_ms): at T0
    gw = Gateway(load_config(path), clock_ms=clock, collectors=False)
    assert gw.publish_back is not None  # wired as a handler of the pipeline
    assert gw.publish_back in gw.stage_events.handlers
    memory, mono = MemoryPublisher(), Mono()
    settings = gw.config.publish_back
    assert settings is not None
    pb = PublishBack(
        settings=settings, site="unit", plant=gw.plant, reserved=gw.reserved,
        publisher=memory, clock_ms=clock, monotonic_ms=mono,
    )
    return gw, pb, memory, mono


def sent(memory: MemoryPublisher) -> list[tuple[str, Any]]:
    out = [(topic.removeprefix(BASE + "/"), body(p)) for topic, p in memory.messages]
    memory.messages.clear()
    return out


def capacity(ts: int, *, available: bool = False, offered: bool = False,
             idle_for_s: float = 0.0, periodic: bool = False) -> Capacity:
    return Capacity("laser-01", "photonics", "acme", ts, available, idle_for_s, offered,
                    periodic=periodic)


def test_states_and_capacity_flags_go_out_at_once_and_idle_for_s_only_when_periodic(
    tmp_path: Path,
) -> None:
    _, pb, memory, mono = parts(tmp_path, min_interval_s=0)
    staged = Staged()
    pb([StateChanged("laser-01", "photonics", "acme", State.IDLE, State.OFFLINE, T0, T0 + 500),
        capacity(T0)], staged)
    pb.flush()
    assert sent(memory) == [
        ("state", {"state": "idle", "since": "2026-11-27T00:00:00.000+00:00",
                   "ts": "2026-11-27T00:00:00.500+00:00"}),
        ("capacity", {"available": False, "offered": False, "reserved": False,
                      "idle_for_s": 0.0, "ts": "2026-11-27T00:00:00.000+00:00"}),
    ]
    pb([capacity(T0 + 1_000, idle_for_s=1.0)], staged)  # same flags, not periodic: nothing
    pb.flush()
    assert sent(memory) == []
    pb([capacity(T0 + 60_000, idle_for_s=60.0, periodic=True)], staged)
    pb([capacity(T0 + 61_000, available=True, offered=True, idle_for_s=61.0)], staged)
    pb.flush()
    assert [(kind, b["idle_for_s"], b["offered"]) for kind, b in sent(memory)] == [
        ("capacity", 61.0, True)  # the flags' change replaced the periodic one, unsent
    ]
    assert pb.flush() == 0
    assert memory.messages == []
    assert mono.ms == 0  # no interval: nothing was held back


def test_a_flapping_machine_is_published_once_per_interval(tmp_path: Path) -> None:
    _, pb, memory, mono = parts(tmp_path, min_interval_s=2)
    staged = Staged()
    states = [State.IDLE, State.RUNNING] * 5
    for n, (new, old) in enumerate(zip(states, [State.OFFLINE, *states], strict=False)):
        pb([StateChanged("laser-01", "photonics", "acme", new, old, T0 + n * 100)], staged)
        mono.ms = n * 100
        pb.flush()
    assert [b["state"] for _, b in sent(memory)] == ["idle"]  # the first, at once
    mono.ms = 2_000
    pb.flush()
    assert sent(memory) == [
        ("state", {"state": "running", "since": "2026-11-27T00:00:00.900+00:00",
                   "ts": "2026-11-27T00:00:00.900+00:00"})  # the latest, 2 s after
    ]


def test_the_snapshot_then_a_booking_as_it_holds_the_machine_and_lets_it_go(
    tmp_path: Path,
) -> None:
    gw, pb, memory, _ = parts(tmp_path, min_interval_s=0)
    gw.ingest.sample(Sample("laser-01", T0, {"state": "NotExecuting"}), None)
    gw.commit()
    memory.messages.clear()  # what the events staged: the test above
    pb.snapshot()
    pb.bookings()
    pb.flush()
    got = dict(sent(memory))
    assert got["state"]["state"] == "idle"
    assert got["capacity"]["reserved"] is False
    assert got["booking"] == {"reservation": None, "status": None, "start": None,
                              "end": None, "ts": "2026-11-27T00:00:00.000+00:00"}
    assert pb.bookings() == 0  # nothing moved: nothing again

    book = gw.store.reservations()
    rules = BookingRules(min_length_ms=15 * MIN, min_notice_ms=0)
    held = book.request(Request("laser-01", "smallco", T0, T0 + HOUR), rules,
                        [(T0 - HOUR, T0 + 24 * HOUR)], T0).reservation
    assert held is not None
    assert pb.bookings() == 1
    confirmed = book.confirm(held.id, T0, approval=False, by="smallco")
    assert pb.bookings() == 1  # its status moved
    pb.flush()
    assert sent(memory) == [("booking", {
        "reservation": held.id, "status": "confirmed",
        "start": "2026-11-27T00:00:00.000+00:00", "end": "2026-11-27T01:00:00.000+00:00",
        "ts": "2026-11-27T00:00:00.000+00:00",
    })]  # held, then confirmed within one flush: only the latest went out
    book.cancel(confirmed.id, T0 + MIN, by="smallco")
    assert pb.bookings() == 1
    pb.flush()
    assert sent(memory)[0][1]["reservation"] is None


@pytest.mark.parametrize("allowed", [False, True])
def test_the_tenant_is_named_only_when_the_site_allows_it(tmp_path: Path, allowed: bool) -> None:
    gw, pb, memory, _ = parts(tmp_path, tenant_ids=allowed)
    book = gw.store.reservations()
    rules = BookingRules(min_length_ms=15 * MIN, min_notice_ms=0)
    book.request(Request("laser-01", "smallco", T0, T0 + HOUR), rules,
                 [(T0 - HOUR, T0 + 24 * HOUR)], T0)
    gw.ingest.sample(Sample("laser-01", T0, {"state": "NotExecuting"}), None)
    pb.bookings()
    pb.flush()
    booking = dict(sent(memory))["booking"]
    assert booking["status"] == "held"
    assert ("tenant" in booking) is allowed
    assert ("smallco" in json.dumps(booking)) is allowed
