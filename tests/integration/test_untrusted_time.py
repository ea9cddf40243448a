"""One bad publisher cannot move time or forge capacity (issue 19), and a backlog applies at
its own time (issue 14): a real gateway on the wall clock, a real Mosquitto, publishers
sending what the security probe sent.

Each attack failed on the code before per-machine clocks: a stamp 120 s ahead made every
machine offline; a forger 3 s ahead made a running machine idle and available while the
honest samples were refused as out of order; empty payloads kept a dead machine idle.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from tests.sites import POWER_STATE, live_site, machine_config

from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port
from pilotline.demo.publisher import publish_timeline
from pilotline.gateway.config import load_config
from pilotline.gateway.replay import read_file, replay
from pilotline.gateway.service import Gateway
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.rules import State

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

TIMINGS = {"debounce_s": 1, "stale_after_s": 3, "min_idle_s": 1, "publish_interval_s": 60}
IDLE = {"state": "NotExecuting"}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@asynccontextmanager
async def running_gateway(
    broker: MosquittoBroker, tmp_path: Path, machines: list[dict[str, Any]]
) -> AsyncIterator[Gateway]:
    port = free_port()
    path = tmp_path / "site.yaml"
    path.write_text(
        live_site(
            {"photonics": machines},
            mqtt_url=broker.url,
            client_id=f"gw-time-{port}",
            port=port,
            store=tmp_path / "gw.db",
            defaults=TIMINGS,
        )
    )
    gateway = Gateway(load_config(path), writer=MemoryWriter())
    task = asyncio.create_task(gateway.run(api=False))
    try:
        await until(lambda: gateway.health().get("mqtt", {}).get("healthy", False))
        await until(lambda: gateway.catch_up.caught_up)
        yield gateway
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


@contextmanager
def publisher(
    broker: MosquittoBroker, name: str
) -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """A connected MQTT client; ``send(topic, payload)`` publishes at QoS 1."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=name)
    host, port = broker.url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port))
    client.loop_start()

    def send(topic: str, payload: dict[str, Any]) -> None:
        client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(5)

    try:
        yield send
    finally:
        client.loop_stop()
        client.disconnect()


def every(period_s: float, seconds: float, action: Callable[[int], None]) -> threading.Thread:
    """Run ``action(i)`` every ``period_s`` for ``seconds``, in a thread."""

    def loop() -> None:
        start = time.monotonic()
        for i in range(int(seconds / period_s)):
            action(i)
            time.sleep(max(0.0, start + (i + 1) * period_s - time.monotonic()))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


async def join(*threads: threading.Thread) -> None:
    for thread in threads:
        await asyncio.to_thread(thread.join, 30)


def states(gateway: Gateway, machine: str) -> list[str]:
    return [r["state"] for r in gateway.store.state_history(0, 2**62) if r["machine"] == machine]


async def test_a_stamp_120_s_ahead_moves_no_clock(broker: MosquittoBroker, tmp_path: Path) -> None:
    machines = [machine_config(f"laser-0{i}", "acme") for i in (1, 2, 3)]
    async with running_gateway(broker, tmp_path, machines) as gateway:
        with publisher(broker, "honest") as send, publisher(broker, "attacker") as attack:
            honest = every(
                0.5,
                8,
                lambda _i: [send(f"t/laser-0{n}", {"ts": now_ms(), **IDLE}) for n in (1, 2, 3)],
            )
            await asyncio.sleep(2)
            await asyncio.to_thread(attack, "t/laser-02", {"ts": now_ms() + 120_000, **IDLE})
            await asyncio.sleep(3)
            honest_before = gateway.metrics.samples["laser-02"]
            await join(honest)
        await asyncio.sleep(0.3)  # the last commit
        for n in (1, 2, 3):
            assert states(gateway, f"laser-0{n}") == ["idle"], "no machine went offline"
        assert gateway.metrics.future == {"laser-02": 1}
        assert gateway.metrics.rejected[("rules", "out_of_order")] == 0
        assert gateway.metrics.samples["laser-02"] > honest_before  # its honest samples count
        clocks = gateway.health()["clocks"]
        assert clocks["ahead"]["laser-02"]["refused"] == 1
        assert clocks["ahead"]["laser-02"]["ahead_s"] > 115
        assert "laser-02" in clocks["why"]
        assert {v.id for v in gateway.plant.view() if v.available} == {
            "laser-01",
            "laser-02",
            "laser-03",
        }


async def test_a_forger_3_s_ahead_cannot_sell_a_running_machine(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    machines = [machine_config("cam-02", "acme", state=POWER_STATE)]
    async with running_gateway(broker, tmp_path, machines) as gateway:
        with publisher(broker, "honest") as send, publisher(broker, "forger") as forge:
            honest = every(1.0, 7, lambda _i: send("t/cam-02", {"ts": now_ms(), "power_w": 800.0}))
            await asyncio.sleep(1.5)
            forger = every(
                0.5, 5, lambda _i: forge("t/cam-02", {"ts": now_ms() + 3_000, "power_w": 5.0})
            )
            await join(honest, forger)
        assert states(gateway, "cam-02") == ["running"]
        view = next(v for v in gateway.plant.view() if v.id == "cam-02")
        assert view.state is State.RUNNING
        assert not view.available
        assert gateway.metrics.future["cam-02"] >= 8
        assert gateway.metrics.rejected[("rules", "out_of_order")] == 0


async def test_empty_payloads_do_not_keep_a_dead_machine_idle(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    machines = [machine_config("laser-01", "acme")]
    async with running_gateway(broker, tmp_path, machines) as gateway:
        with publisher(broker, "machine") as send:
            await join(every(0.5, 3, lambda _i: send("t/laser-01", {"ts": now_ms(), **IDLE})))
            last_real = gateway.plant.view()[0].last_seen_ms
            assert gateway.plant.view()[0].available
            await join(every(0.5, 8, lambda _i: send("t/laser-01", {})))
        history = [
            (r["state"], r["ts_ms"])
            for r in gateway.store.state_history(0, 2**62)
            if r["machine"] == "laser-01"
        ]
        assert history[-1] == ("offline", last_real)  # at its last real sample
        assert not gateway.plant.view()[0].available
        assert gateway.metrics.samples["laser-01"] >= 20  # the heartbeats were accepted


async def test_a_report_on_change_publisher_is_kept_alive_by_its_heartbeats(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    machine = machine_config("laser-01", "acme")
    machine["mqtt"]["report_on_change"] = True
    async with running_gateway(broker, tmp_path, [machine]) as gateway:
        with publisher(broker, "machine") as send:
            send("t/laser-01", {"ts": now_ms(), **IDLE})
            await join(every(0.5, 8, lambda _i: send("t/laser-01", {"ts": now_ms()})))
        assert states(gateway, "laser-01") == ["idle"]
        assert gateway.plant.view()[0].available


def edges(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """A store's state changes and closed idle windows, per machine in time order."""
    db = sqlite3.connect(path)
    try:
        changes = db.execute(
            "SELECT machine, state, ts_ms FROM state_history ORDER BY machine, ts_ms"
        ).fetchall()
        windows = db.execute(
            "SELECT machine, start_ms, end_ms FROM idle_windows WHERE end_ms IS NOT NULL"
            " ORDER BY machine, start_ms"
        ).fetchall()
    finally:
        db.close()
    return changes, windows


async def test_a_backlog_published_after_the_start_gives_the_replays_states_and_windows(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    """An edge device buffered 8 minutes of 1 Hz data while its link was down and flushes
    it, a minute late, after the gateway started: the gateway's states and windows are those
    of a replay of the same samples (before: not one state change, the whole backlog landed
    in one instant), and none of that history is offered now (its newest data is older than
    stale_after by the gateway's clock)."""
    machines = [machine_config(f"laser-0{i}", "acme") for i in (1, 2)]
    start = now_ms() - 540_000
    history: list[tuple[str, dict[str, Any]]] = []
    for s in range(480):
        for n, phase in ((1, 0), (2, 45)):
            busy = ((s + phase) // 60) % 2 == 0  # a minute running, a minute idle
            state = "Executing" if busy else "NotExecuting"
            history.append((f"laser-0{n}", {"ts": start + s * 1000, "state": state}))
    async with running_gateway(broker, tmp_path, machines) as gateway:
        messages = [(f"t/{m}", json.dumps(p).encode()) for m, p in history]
        await asyncio.to_thread(publish_timeline, broker.url, messages)
        await until(lambda: sum(gateway.metrics.samples.values()) == len(messages))
        flushed = gateway.plant.view()
        # then silence: offline at the last sample, stale_after later by its own clock
        await until(lambda: {v.state for v in gateway.plant.view()} == {State.OFFLINE})
        await asyncio.sleep(0.3)  # the commit behind it
    assert gateway.metrics.rejected[("rules", "out_of_order")] == 0
    jsonl = tmp_path / "history.jsonl"
    jsonl.write_text("".join(json.dumps({"machine": m, **p}) + "\n" for m, p in history))
    samples = read_file(jsonl).samples
    out = tmp_path / "replay.db"
    replay(load_config(tmp_path / "site.yaml"), samples, out_store=out, to_ms=start + 600_000)
    live_changes, live_windows = edges(tmp_path / "gw.db")
    replay_changes, replay_windows = edges(out)
    assert len(live_changes) >= 16  # it did compute states: 8 each, the last offline
    assert len(live_windows) >= 6
    assert live_changes == replay_changes
    assert live_windows == replay_windows
    assert not [v for v in flushed if v.available]  # a minute old: silence is never sold
    assert {v.lag_ms // 1000 for v in flushed} == {60}
    assert not gateway.metrics.late
