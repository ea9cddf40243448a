"""The demo's bookings (demo/bookings.py): the site books with the demo's short rules and one
approving owner; the plan looks ahead in the simulation; and on the real gateway fed the
simulated line second by second (a fake clock, no broker) the booked machine runs and its
booking is ``active`` then ``completed`` with an overrun, the other is a ``no_show`` and the
third waits for its owner. The console's board follows them."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from tests.fakes import T0, Clock

from pilotline.collectors.mqtt.parse import decode
from pilotline.demo.bookings import (
    APPROVAL_OWNER,
    DEMO_BOOKING,
    TENANTS,
    Board,
    Planned,
    book,
    demo_rules,
    guide,
    plan,
)
from pilotline.demo.plant import Plant
from pilotline.demo.site import demo_site_yaml
from pilotline.gateway.api.times import api_time
from pilotline.gateway.config import SiteConfig, load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.rules import Sample
from pilotline.rules.booking import Accepted, Request, Status, check

SECOND = 1000
ORIGIN = T0 - 3_600_000  # the demo starts its schedules an hour before it opens


def line() -> Plant:
    return Plant(seed=7, start_ms=ORIGIN)


def site(tmp_path: Path) -> SiteConfig:
    path = tmp_path / "pilotline.yaml"
    path.write_text(
        demo_site_yaml(
            line(), mqtt_url="mqtt://127.0.0.1:1", store=tmp_path / "demo.db",
            api="127.0.0.1:1", min_idle_s=30, booking=DEMO_BOOKING,
            approving_owner=APPROVAL_OWNER,
        )
    )
    return load_config(path)


def the_plan(now_ms: int = T0) -> list[Planned]:
    probe = line()
    candidates = [m.id for m in probe.machines if m.owner != APPROVAL_OWNER]
    approving = [m.id for m in probe.machines if m.owner == APPROVAL_OWNER]
    return plan(probe, candidates, approving, now_ms, demo_rules())


def test_the_site_books_with_the_demo_rules_and_one_owner_approves(tmp_path: Path) -> None:
    config = site(tmp_path)
    for _, machine in config.machines():
        rules = config.booking_rules(machine.id)
        approving = machine.owner == APPROVAL_OWNER
        assert rules.approval is approving, machine.id
        if not approving:
            assert rules == demo_rules()
    assert set(config.owners) == {m.owner for m in line().machines}


@pytest.mark.parametrize("now_ms", [T0, T0 + 137_000])
def test_the_plan_books_a_run_a_miss_and_one_for_approval(now_ms: int) -> None:
    planned = {p.kind: p for p in the_plan(now_ms)}
    assert set(planned) == {"used", "no_show", "requested"}
    used, missed, asked = planned["used"], planned["no_show"], planned["requested"]
    rules = demo_rules()
    for p in planned.values():  # each one a request the rules accept on a free line
        request = Request(p.machine, p.tenant, p.start_ms, p.end_ms)
        verdict = check(request, rules, [], [(now_ms, now_ms + 86_400_000)], now_ms)
        assert isinstance(verdict, Accepted), (p, verdict)
    assert used.machine != missed.machine
    assert (used.tenant, missed.tenant, asked.tenant) == (TENANTS[0], TENANTS[1], TENANTS[0])
    assert next(m for m in line().machines if m.id == asked.machine).owner == APPROVAL_OWNER
    # what the simulation does then, seen by a third copy of the line
    probe = line()
    states = {}
    for t in range(now_ms, max(used.end_ms, missed.end_ms) + 60 * SECOND, SECOND):
        probe.payloads(t)
        states[t] = {m: probe.true_state(m) for m in (used.machine, missed.machine)}
    assert states[now_ms][used.machine] == "idle"
    began = next(t for t in states if states[t][used.machine] == "running")
    assert used.start_ms - rules.early_grace_ms <= began <= used.start_ms
    assert states[used.end_ms][used.machine] == "running"  # it overruns
    assert all(states[t][missed.machine] == "idle" for t in states if t <= missed.end_ms)


def test_the_demo_bookings_follow_the_simulated_line(tmp_path: Path) -> None:
    clock = Clock(T0)
    gateway = Gateway(site(tmp_path), writer=MemoryWriter(), clock_ms=clock,
                      monotonic_ms=clock.monotonic)
    gateway.caught_up = True
    planned = {p.kind: p for p in the_plan()}
    made = {res.machine: res for res in book(gateway, planned.values(), T0)}
    ids = {kind: made[p.machine].id for kind, p in planned.items()}
    assert {kind: made[p.machine].status for kind, p in planned.items()} == {
        "used": Status.CONFIRMED, "no_show": Status.CONFIRMED, "requested": Status.REQUESTED,
    }
    board = Board(T0)
    assert {r.id: r.status for r in board.refresh(gateway)} == {
        ids["used"]: "confirmed", ids["no_show"]: "confirmed", ids["requested"]: "requested",
    }
    sim = line()
    machine_of = {m.topic: m.id for m in sim.machines}
    changes: list[tuple[str, str]] = []
    end = planned["used"].end_ms + 60 * SECOND
    for t in range(T0, end, SECOND):
        clock.set(t)
        for topic, payload in sim.payloads(t):
            sample = decode(payload, machine_of[topic], t, 1 << 16)
            assert isinstance(sample, Sample)
            gateway.ingest.sample(sample)
        gateway.tick()
        gateway.commit()
        if (t - T0) % (5 * SECOND) == 0:  # the lifecycle's pace
            gateway.bookings.settle()
            changes += [(r.id, r.status) for r in board.refresh(gateway)]
    book_ = gateway.store.reservations()
    assert [s for s, *_ in book_.events(ids["used"])] == [
        Status.HELD, Status.CONFIRMED, Status.ACTIVE, Status.COMPLETED,
    ]
    assert [s for s, *_ in book_.events(ids["no_show"])] == [
        Status.HELD, Status.CONFIRMED, Status.NO_SHOW,
    ]
    assert book_.get(ids["requested"]).status is Status.REQUESTED  # type: ignore[union-attr]
    # the board printed each change once, in the order they happened
    assert changes == [
        (ids["no_show"], "no_show"), (ids["used"], "active"), (ids["used"], "completed"),
    ]
    usage = gateway.bookings.usage(ids["used"])
    assert usage is not None
    assert usage.running_ms > 0
    assert usage.overrun_ms > 0
    rows = {r.id: r for r in board.rows}
    assert rows[ids["used"]].running != "0m00s"
    assert rows[ids["no_show"]].running == "0m00s"
    gateway.store.close()


def test_the_guide_pastes_into_a_shell() -> None:
    tokens = {"operator": "/w/operator.token", f"tenant {TENANTS[0]}": "/w/tenant.token"}
    start = T0 + 7_200_000
    lines = guide("127.0.0.1:8080", tokens, "/w/tenant.token",
                  ("bonder-02", start, start + 1_800_000, "bonding"))
    assert lines[0] == (
        "booking: API http://127.0.0.1:8080; tokens: operator /w/operator.token, "
        "tenant demo-smallco /w/tenant.token"
    )
    offers, post, confirm = (shlex.split(text, comments=True) for text in lines[1:])
    assert offers[-1] == "http://127.0.0.1:8080/api/offers?capability=bonding"
    assert "Authorization: Bearer $(cat /w/tenant.token)" in offers
    assert post[-1] == "http://127.0.0.1:8080/api/reservations"
    body = json.loads(post[post.index("-d") + 1])
    assert body["machine"] == "bonder-02"
    assert (api_time(body["start"]), api_time(body["end"])) == (start, start + 1_800_000)
    assert "http://127.0.0.1:8080/api/reservations/ID/confirm" in confirm
