"""Alert notifications delivered to a REAL local HTTP server (http.server in a thread): a
firing and a resolved notification arrive once each, across a gateway restart, and a receiver
that answers 500 twice still gets its notification exactly once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pilotline.gateway.config import WebhookConfig, load_config
from pilotline.gateway.notify import NotificationSender, payload_json
from pilotline.gateway.service import Gateway
from pilotline.gateway.store import Store
from pilotline.rules import Sample
from pilotline.rules.alerts import AlertTransition

T0 = 1_795_737_600_000


class Receiver:
    """A webhook receiver on a free port; answers 500 to the first ``fail`` requests."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (path, body) of every request
        self.accepted: list[tuple[str, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                receiver.requests.append((self.path, body))
                if receiver.fail > 0:
                    receiver.fail -= 1
                    status = 500
                else:
                    receiver.accepted.append((self.path, body))
                    status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


async def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


SITE = """\
site: it
mqtt: {{url: "mqtt://127.0.0.1:1"}}
store: {store}
defaults: {{debounce_s: 0, stale_after_s: 60, min_idle_s: 0, publish_interval_s: 60}}
zones:
  - id: photonics
    machines:
      - id: laser-01
        owner: acme
        mqtt: {{topic: t/laser-01}}
        state: {{signal: state}}
alerts:
  rules:
    - name: laser-down
      severity: critical
      state: down
      for: 2m
      message: "{{machine}} down for {{value:.0f}} s"
  webhooks:
    - {{name: ops, url: "{url}/ops"}}
    - {{name: chat, url: "{url}/chat", format: slack}}
"""


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


async def test_firing_and_resolved_arrive_once_each_after_a_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(SITE.format(store=tmp_path / "gw.db", url=receiver.url))
    clock = Clock()
    gw = Gateway(load_config(path), clock_ms=clock, collectors=False)
    for s in range(0, 230, 10):  # down for 200 s (fires at 120 s), then running: resolved
        clock.ms = T0 + s * 1000
        state = "Stopped" if s < 200 else "Executing"
        gw._on_sample(Sample("laser-01", clock.ms, {"state": state}), None)
    gw.commit()
    gw.store.close()  # the gateway stops before any delivery

    with Store(tmp_path / "gw.db") as store:
        assert store.notifications_waiting() == 4  # 2 transitions x 2 channels, durable

    restarted = Gateway(load_config(path), clock_ms=clock, collectors=False)
    task = asyncio.create_task(restarted.run(api=False))
    try:
        await wait_for(lambda: len(receiver.accepted) >= 4)
        await asyncio.sleep(0.3)  # nothing more comes
        assert restarted.store.notifications_waiting() == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    ops = [body for p, body in receiver.accepted if p == "/ops"]
    chat = [body for p, body in receiver.accepted if p == "/chat"]
    assert [(b["rule"], b["machine"], b["firing"], b["value"]) for b in ops] == [
        ("laser-down", "laser-01", True, 120.0),
        ("laser-down", "laser-01", False, 200.0),
    ]
    assert ops[0]["message"] == "laser-01 down for 120 s"
    assert ops[0]["ts_ms"] == T0 + 120_000
    assert [b["text"].split(" ")[0] for b in chat] == ["[FIRING]", "[RESOLVED]"]
    assert all(set(b) == {"text"} for b in chat)
    assert len(receiver.requests) == 4
    assert restarted.metrics.notifications == {("ops", "sent"): 2, ("chat", "sent"): 2}


async def test_a_failing_receiver_gets_the_notification_exactly_once(tmp_path: Path) -> None:
    receiver = Receiver(fail=2)
    try:
        store = Store(tmp_path / "gw.db")
        transition = AlertTransition(
            "hot", "m1", "z1", "acme", "warning", True, 26.5, "m1 hot", T0, T0
        )
        store.commit(now_ms=T0, notifications=[("ops", payload_json("it", transition))])
        channel = WebhookConfig(name="ops", url=f"{receiver.url}/hook")
        sender = NotificationSender(store, channel, backoff_base_s=0.05)
        task = asyncio.create_task(sender.run())
        try:
            await wait_for(lambda: len(receiver.accepted) == 1)
            await asyncio.sleep(0.3)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert len(receiver.requests) == 3  # 500, 500, 200
        assert [b["message"] for _, b in receiver.accepted] == ["m1 hot"]
        assert sender.counts == {("ops", "failed"): 2, ("ops", "sent"): 1}
        assert store.notifications_waiting() == 0
        store.close()
    finally:
        receiver.close()


async def test_a_down_channel_does_not_delay_another(tmp_path: Path, receiver: Receiver) -> None:
    store = Store(tmp_path / "gw.db")
    transition = AlertTransition("hot", "m1", "z1", "acme", "warning", True, 26.5, "m1 hot", T0, T0)
    body = payload_json("it", transition)
    store.commit(now_ms=T0, notifications=[("dead", body), ("ok", body)])
    dead = NotificationSender(
        store, WebhookConfig(name="dead", url="http://127.0.0.1:9/"), backoff_base_s=60
    )
    ok = NotificationSender(store, WebhookConfig(name="ok", url=receiver.url))
    tasks = [asyncio.create_task(dead.run()), asyncio.create_task(ok.run())]
    try:
        await wait_for(lambda: len(receiver.accepted) == 1)
        await wait_for(lambda: dead.counts[("dead", "failed")] == 1)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert store.notifications_waiting("ok") == 0
    assert store.notifications_waiting("dead") == 1  # kept, for a later attempt
    store.close()
