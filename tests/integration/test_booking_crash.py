"""A gateway killed between the conflict check and the answer leaves no half-written booking,
and restarts with every booking, hold expiry and metering state intact (issue 15, "Bad input
and faults").

``pilotline run`` as a child process on a real Mosquitto. Before the kill: a booking of
laser-01 is used (the machine runs inside it, published through the broker) and completed,
and its usage read; a hold of laser-02 is made. Then a stream of concurrent ``POST
/api/reservations``, each with its own Idempotency-Key, for random slots of three presses
(many overlap: 409s), and the gateway is SIGKILLed part-way through, requests in flight. A
second ``pilotline run`` on the same store then shows: every reservation whole (its events
begin with ``held`` and end in its status), no two live ones of a machine overlapping
(buffers included), every request with its reservation or none (each reservation has its
key; every 201 before the kill is in the store under its key); re-sending every request with
its key answers the stored reservation (200, same id) or books it once, never twice; the hold
expires at its time; the used booking is metered as before.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.auth import cli_bearer
from tests.process import pilotline_command, until
from tests.sites import POWER_STATE, live_site, machine_config

from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port
from pilotline.demo.publisher import publish_timeline

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

MIN = 60_000
QUARTER = 15 * MIN
HOLD_S = 40  # laser-02's hold: long enough to outlive the kill and the restart
PRESSES = ("press-01", "press-02", "press-03")
TENANTS = ("co-a", "co-b", "co-c")
STREAM = 500  # requests in the stream
WORKERS = 12  # sent concurrently
KILL_AFTER = 100  # answers before the SIGKILL
USED = {"min_length_s": 1, "step_s": 1, "min_notice_s": 0, "early_grace_s": 2,
        "no_show_grace_s": 3, "hold_s": HOLD_S}
"""laser-01 and laser-02: bookable by the second, a few seconds ahead."""


@dataclass(frozen=True)
class Ask:
    key: str
    tenant: str
    machine: str
    start: int
    end: int

    def body(self) -> dict[str, Any]:
        return {"machine": self.machine, "start": self.start, "end": self.end}


class Gateway:
    """``pilotline run`` as a child process, its log in ``<name>.stderr``."""

    def __init__(self, config: Path, workdir: Path, name: str) -> None:
        self.stderr_path = workdir / f"{name}.stderr"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [*pilotline_command(), "run", "-c", str(config)], cwd=workdir,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def tail(self) -> str:
        return "\n".join(self.stderr_path.read_text().splitlines()[-30:])

    def healthy(self, url: str) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"gateway exited with {self.proc.returncode}:\n{self.tail()}")
        answer = httpx.get(f"{url}/health", timeout=2)
        return bool(answer.status_code == 200 and answer.json()["mqtt"]["healthy"])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gateway in started:
        gateway.kill()


def tenant_token(config: Path, company: str) -> dict[str, str]:
    done = subprocess.run(
        [*pilotline_command(), "token", "create", "--role", "tenant", "--company", company,
         "--name", f"tenant-{company}", "-c", str(config)],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return {"Authorization": f"Bearer {done.stdout.strip()}"}


class Machine(threading.Thread):
    """laser-01's power through the broker every 0.3 s, stamped now: 300 W (running) inside
    ``[on, off)``, 10 W (idle) outside."""

    def __init__(self, url: str, on: int, off: int) -> None:
        super().__init__(name="laser-01", daemon=True)
        self.url, self.on, self.off = url, on, off
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.time_ns() // 1_000_000
            watts = 300.0 if self.on <= now < self.off else 10.0
            payload = json.dumps({"ts": now, "power_w": watts}).encode()
            publish_timeline(self.url, [("t/laser-01", payload)], client_id="laser-01-sim")
            self.stop.wait(0.3)


def ms_of(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def asks(base: int) -> list[Ask]:
    """``STREAM`` requests of 1 to 4 quarters in the day from ``base``; many overlap."""
    rng = random.Random(15)
    out = []
    for i in range(STREAM):
        start = base + rng.randrange(96) * QUARTER
        out.append(Ask(f"stream-{i}", rng.choice(TENANTS), rng.choice(PRESSES), start,
                       start + rng.randint(1, 4) * QUARTER))
    return out


def read_store(store: Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[tuple[str, int]]],
                                     dict[tuple[str, str], str]]:
    """Reservations by id, each one's events (status, at_ms), and (tenant, key) -> id: read
    only, beside the running gateway (WAL)."""
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = {
            str(r[0]): {"machine": r[1], "tenant": r[2], "start": r[3], "end": r[4],
                        "status": r[5], "created": r[6], "hold_until": r[7]}
            for r in db.execute("SELECT id, machine, tenant, start_ms, end_ms, status,"
                                " created_ms, hold_until_ms FROM reservations")
        }
        events: dict[str, list[tuple[str, int]]] = {}
        for rid, status, at in db.execute(
            "SELECT reservation, status, at_ms FROM reservation_events ORDER BY id"
        ):
            events.setdefault(str(rid), []).append((str(status), int(at)))
        keys = {(str(t), str(k)): str(r)
                for t, k, r in db.execute("SELECT tenant, key, reservation FROM idempotency")}
    finally:
        db.close()
    return rows, events, keys


LIVE = {"held", "requested", "confirmed", "active"}


def assert_whole(store: Path, buffer_ms: int) -> tuple[dict[str, dict[str, Any]],
                                                       dict[tuple[str, str], str]]:
    """Every reservation whole, none overlapping a live one of its machine, each stream
    booking with its key; returns the reservations and the keys."""
    rows, events, keys = read_store(store)
    for rid, row in rows.items():
        seen = events.get(rid)
        assert seen, f"{rid} has no events: half written"
        assert seen[0] == ("held", row["created"]), (rid, seen)
        assert seen[-1][0] == row["status"], (rid, seen, row)
    assert set(events) <= set(rows), "events of a reservation that is not there"
    assert set(keys.values()) <= set(rows), "a key naming no reservation"
    for machine in PRESSES:
        live = sorted((r["start"], r["end"], rid) for rid, r in rows.items()
                      if r["machine"] == machine and r["status"] in LIVE)
        for (_, end, a), (start, _, b) in itertools.pairwise(live):
            assert end + buffer_ms <= start, f"{a} and {b} of {machine} overlap"
    stream = {rid for rid, r in rows.items() if r["machine"] in PRESSES}
    assert stream == {rid for (_, key), rid in keys.items() if key.startswith("stream-")}, \
        "a stream booking without its key, or a key without its booking"
    return rows, keys


def snipe(
    store: Path, answers: dict[str, Any], lock: threading.Lock, gateway: Gateway
) -> list[str]:
    """Kill ``gateway`` between the check and the answer: once a request's booking is
    committed (its key in the store) and its answer not in, SIGSTOP the gateway, give the
    client a moment for an answer already sent, and if none came, SIGKILL it; else SIGCONT
    and look again. Returns the keys the kill left committed and unanswered (none: it
    killed anyway after 20 s)."""
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            keys = [str(k) for (k,) in db.execute("SELECT key FROM idempotency")]
            with lock:
                pending = [k for k in keys if k.startswith("stream-") and k not in answers]
            if not pending:
                continue
            gateway.proc.send_signal(signal.SIGSTOP)
            time.sleep(0.3)
            with lock:
                unanswered = [k for k in pending if k not in answers]
            if unanswered:
                gateway.kill()
                return unanswered
            gateway.proc.send_signal(signal.SIGCONT)
    finally:
        db.close()
    gateway.kill()
    return []


def test_a_killed_gateway_leaves_whole_bookings_and_restarts_with_them(
    tmp_path: Path, broker: MosquittoBroker, gateways: list[Gateway]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    store = tmp_path / "gw.db"
    config = tmp_path / "site.yaml"
    buffer_s = 300
    config.write_text(live_site(
        {"z": [
            machine_config("laser-01", state=POWER_STATE, booking=USED),
            machine_config("laser-02", state=POWER_STATE, booking=USED),
            *(machine_config(p, state=POWER_STATE, booking={"buffer_s": buffer_s})
              for p in PRESSES),
        ]},
        site="crash-booking", mqtt_url=broker.url, client_id=f"gw-{port}", port=port,
        store=store,
        defaults={"debounce_s": 0, "stale_after_s": 60, "min_idle_s": 0,
                  "publish_interval_s": 60, "offering": "always"},
    ))
    operator = cli_bearer(pilotline_command(), config)
    tenant = {t: tenant_token(config, t) for t in TENANTS}

    first = Gateway(config, tmp_path, "gateway-1")
    gateways.append(first)
    until(lambda: first.healthy(url), 20, "the first gateway, healthy")

    # -- a booking used and completed before the kill: its usage as metered then
    begin = (time.time_ns() // 1_000_000 // 1000 + 4) * 1000
    used = httpx.post(f"{url}/api/reservations", headers=tenant["co-a"], json={
        "machine": "laser-01", "start": begin, "end": begin + 6000}, timeout=5)
    assert used.status_code == 201, used.text
    used_id = used.json()["id"]
    confirmed = httpx.post(f"{url}/api/reservations/{used_id}/confirm",
                           headers=tenant["co-a"], timeout=5)
    assert confirmed.json()["status"] == "confirmed", confirmed.text
    machine = Machine(broker.url, begin, begin + 4500)
    machine.start()

    def status(rid: str) -> str:
        answer = httpx.get(f"{url}/api/reservations/{rid}", headers=operator, timeout=5)
        return str(answer.json()["status"])

    try:
        until(lambda: status(used_id) == "completed", 40, "the used booking completed")
    finally:
        machine.stop.set()
        machine.join(timeout=10)

    def usage() -> dict[str, Any]:
        lines = httpx.get(f"{url}/api/usage", headers=operator, timeout=5, params={
            "from": begin - 60_000, "to": begin + 60_000}).json()["lines"]
        line: dict[str, Any] = next(x for x in lines if x["id"] == used_id)
        return line

    metered = usage()
    assert metered["used_min"] == pytest.approx(4.5 / 60, abs=0.6 / 60), metered
    assert metered["provisional"] is False

    # -- a hold made before the kill
    soon = (time.time_ns() // 1_000_000 // 1000 + 3600) * 1000
    held = httpx.post(f"{url}/api/reservations", headers=tenant["co-b"], json={
        "machine": "laser-02", "start": soon, "end": soon + 600_000}, timeout=5).json()
    hold_until = ms_of(held["hold_until"])

    # -- the stream, killed part-way
    base = (time.time_ns() // 1_000_000 // (60 * MIN) + 48) * 60 * MIN
    stream = asks(base)
    answers: dict[str, tuple[int, dict[str, Any]] | None] = {}
    in_flight: list[str] = []  # sent and not answered: the gateway died with them
    lock = threading.Lock()

    local = threading.local()  # a kept-alive connection per worker

    def send(ask: Ask) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=30)
        try:
            got = local.client.post(f"{url}/api/reservations", json=ask.body(), headers={
                **tenant[ask.tenant], "Idempotency-Key": ask.key})
            answer: tuple[int, dict[str, Any]] | None = (got.status_code, got.json())
        except httpx.ConnectError:
            answer = None  # never reached a gateway
        except httpx.TransportError:
            answer = None
            with lock:
                in_flight.append(ask.key)
        with lock:
            answers[ask.key] = answer

    def answered() -> int:
        with lock:
            return sum(1 for a in answers.values() if a is not None)

    with ThreadPoolExecutor(WORKERS) as pool:
        for ask in stream:
            pool.submit(send, ask)
        until(lambda: answered() >= KILL_AFTER, 60, f"{KILL_AFTER} answers")
        aimed = snipe(store, answers, lock, first)
        assert first.proc.returncode == -signal.SIGKILL
    before = dict(answers)
    lost = list(in_flight)
    unsent = sum(1 for a in before.values() if a is None) - len(lost)
    assert aimed, "the kill never came between a commit and its answer: nothing was tested"
    assert set(aimed) <= set(lost)
    assert len(before) == STREAM

    second = Gateway(config, tmp_path, "gateway-2")
    gateways.append(second)
    until(lambda: second.healthy(url), 20, "the restarted gateway, healthy")

    # every reservation whole; every request with its reservation or none
    rows, keys = assert_whole(store, buffer_s * 1000)
    stream_of = {a.key: a for a in stream}
    for key, answer in before.items():
        ask = stream_of[key]
        stored = keys.get((ask.tenant, key))
        if answer is None:
            continue  # booked or not: the re-send below tells
        code, body = answer
        if code == 201:
            assert stored == body["id"], (key, answer)
            row = rows[stored]
            assert (row["machine"], row["start"], row["end"]) == (ask.machine, ask.start,
                                                                   ask.end)
        else:
            assert code in (409, 422), answer
            assert stored is None, f"{key} was refused ({code}) but is booked"
    committed_unanswered = sum(1 for k in lost if keys.get((stream_of[k].tenant, k)))
    assert committed_unanswered >= len(aimed)

    # re-sending every request with its key: the stored reservation, or booked once now
    with httpx.Client(timeout=30) as client:
        def resend(ask: Ask) -> httpx.Response:
            return client.post(f"{url}/api/reservations", json=ask.body(), headers={
                **tenant[ask.tenant], "Idempotency-Key": ask.key})

        for ask in stream:
            stored = keys.get((ask.tenant, ask.key))
            again = resend(ask)
            if stored is not None:
                assert (again.status_code, again.json()["id"]) == (200, stored), again.text
                continue
            assert again.status_code in (201, 409, 422), again.text
            if again.status_code == 201:
                twice = resend(ask)
                assert (twice.status_code, twice.json()["id"]) == (200, again.json()["id"])
    after, keys_after = assert_whole(store, buffer_s * 1000)
    assert {k: v for k, v in keys_after.items() if k in keys} == keys

    # the hold expires at its time, no sooner; the used booking is metered as before
    if time.time() * 1000 < hold_until - 1000:
        assert status(held["id"]) == "held"
    until(lambda: status(held["id"]) == "expired", HOLD_S + 20, "the hold expired")
    _, events, _ = read_store(store)
    expired_at = events[held["id"]][-1][1]
    # the lifecycle expires due holds every 5 s
    assert hold_until <= expired_at <= hold_until + 8000, (hold_until, expired_at)
    assert status(used_id) == "completed"
    assert usage() == metered

    booked = sum(1 for a in before.values() if a is not None and a[0] == 201)
    print(f"\nbooking crash: {STREAM} requests, {booked} booked and {answered()} answered "
          f"before the kill, {len(lost)} in flight at the kill ({committed_unanswered} of "
          f"them committed, {len(aimed)} seen so at the kill), {unsent} never sent; "
          f"{len(after)} reservations after the re-send; hold expired "
          f"{expired_at - hold_until} ms after its time")
    assert second.proc.poll() is None, second.tail()
