"""Alert notifications delivered to a REAL local HTTP server (http.server in a thread): grouped
notifications arrive once each, across a gateway restart; a receiver that answers 500 twice
still gets its notification exactly once; a 4xx is kept and retried at the cap; a redirect is
not followed; a group of 50 alerts is one POST."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from tests.fakes import T0, Clock
from tests.sites import machine_config, site_yaml

from pilotline.gateway.config import WebhookConfig, load_config
from pilotline.gateway.notify import NotificationSender, notification_rows
from pilotline.gateway.notify.webhook.channel import WebhookChannel
from pilotline.gateway.service import Gateway
from pilotline.gateway.store import Store
from pilotline.rules import Sample
from pilotline.rules.alerts import AlertTransition
from pilotline.rules.dispatch import Notification

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook receiver on a free port; answers ``status`` to the first ``fail`` requests."""

    def __init__(self, fail: int = 0, status: int = 500, headers: dict[str, str] | None = None):
        self.fail = fail
        self.status = status
        self.headers = headers or {}
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (path, body) of every request
        self.accepted: list[tuple[str, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                receiver.requests.append((self.path, body))
                extra: dict[str, str] = {}
                if receiver.fail > 0:
                    receiver.fail -= 1
                    status = receiver.status
                    extra = receiver.headers
                else:
                    receiver.accepted.append((self.path, body))
                    status = 200
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # where a followed redirect would land
                receiver.requests.append((self.path, {"method": "GET"}))
                self.send_response(200)
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


def hook(name: str, url: str, **extra: Any) -> WebhookChannel:
    return WebhookChannel(WebhookConfig(name=name, url=url, **extra))


HOT = AlertTransition("hot", "m1", "z1", "acme", "warning", True, 26.5, "m1 hot", T0, T0)


def notification(channel: str, *alerts: AlertTransition, kind: str = "firing") -> Notification:
    return Notification(channel, (("rule", "hot"), ("zone", "z1")), kind, T0, alerts)  # type: ignore[arg-type]


async def run_until(
    senders: list[NotificationSender], condition: Callable[[], bool], settle_s: float = 0.3
) -> None:
    tasks = [asyncio.create_task(s.run()) for s in senders]
    try:
        await wait_for(condition)
        await asyncio.sleep(settle_s)  # nothing more comes
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def site(store: Path, url: str) -> str:
    """laser-01 with one rule (``laser-down``: down for 2 minutes) and two webhooks at
    ``url``: ``/ops`` and ``/chat`` (Slack's format)."""
    return site_yaml(
        {"photonics": [machine_config("laser-01")]},
        site="it",
        influx=None,
        store=store,
        alerts={
            "rules": [
                {"name": "laser-down", "severity": "critical", "state": "down", "for": "2m",
                 "message": "{machine} down for {value:.0f} s"},
            ],
            "webhooks": [
                {"name": "ops", "url": f"{url}/ops"},
                {"name": "chat", "url": f"{url}/chat", "format": "slack"},
            ],
        },
    )


async def test_firing_and_resolved_arrive_once_each_after_a_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site(tmp_path / "gw.db", receiver.url))
    clock = Clock()
    gw = Gateway(load_config(path), clock_ms=clock, collectors=False)
    # down for 200 s (fires at 120 s), then running (resolved) for 15 minutes, which lets any
    # grouping delay pass
    for s in range(0, 1100, 10):
        clock.ms = T0 + s * 1000
        state = "Stopped" if s < 200 else "Executing"
        gw.ingest.sample(Sample("laser-01", clock.ms, {"state": state}), None)
        gw.tick()  # the rules timer: grouped notifications are flushed on it
        gw.commit()
    gw.store.close()  # the gateway stops before any delivery

    with Store(tmp_path / "gw.db") as store:
        queued = store.notifications_waiting()
    assert queued >= 4  # firing and resolved, for each of 2 channels, durable

    restarted = Gateway(load_config(path), clock_ms=clock, collectors=False)
    task = asyncio.create_task(restarted.run(api=False))
    try:
        await wait_for(lambda: len(receiver.accepted) >= queued)
        await asyncio.sleep(0.3)  # nothing more comes
        assert restarted.store.notifications_waiting() == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    ops = [body for p, body in receiver.accepted if p == "/ops"]
    chat = [body for p, body in receiver.accepted if p == "/chat"]
    alerts = [a for body in ops for a in body["alerts"]]
    assert [(a["rule"], a["machine"], a["status"], a["value"]) for a in alerts] == [
        ("laser-down", "laser-01", "firing", 120.0),
        ("laser-down", "laser-01", "resolved", 200.0),
    ]
    assert alerts[0]["message"] == "laser-01 down for 120 s"
    assert alerts[0]["ts_ms"] == T0 + 120_000
    assert {body["site"] for body in ops} == {"it"}
    assert [body["kind"] for body in ops] == ["firing", "resolved"]
    assert [b["text"].split(" ")[0] for b in chat] == ["[FIRING:1]", "[RESOLVED]"]
    assert all(set(b) == {"text"} for b in chat)
    assert len(receiver.requests) == queued
    assert restarted.metrics.notifications == {("ops", "sent"): 2, ("chat", "sent"): 2}


async def test_a_failing_receiver_gets_the_notification_exactly_once(tmp_path: Path) -> None:
    receiver = Receiver(fail=2)
    try:
        store = Store(tmp_path / "gw.db")
        store.commit(now_ms=T0, notifications=notification_rows("it", [notification("ops", HOT)]))
        channel = WebhookChannel(WebhookConfig(name="ops", url=f"{receiver.url}/hook"))
        sender = NotificationSender(store, channel, backoff_base_s=0.05)
        await run_until([sender], lambda: len(receiver.accepted) == 1)
        assert len(receiver.requests) == 3  # 500, 500, 200
        assert [b["alerts"][0]["message"] for _, b in receiver.accepted] == ["m1 hot"]
        assert sender.counts == {("ops", "failed"): 2, ("ops", "sent"): 1}
        assert store.notifications_waiting() == 0
        store.close()
    finally:
        receiver.close()


async def test_a_group_of_50_alerts_is_one_post(tmp_path: Path, receiver: Receiver) -> None:
    alerts = tuple(dataclasses.replace(HOT, machine=f"m{i:02d}") for i in range(50))
    store = Store(tmp_path / "gw.db")
    store.commit(
        now_ms=T0,
        notifications=notification_rows(
            "it", [notification("ops", *alerts), notification("chat", *alerts)]
        ),
    )
    senders = [
        NotificationSender(store, hook("ops", f"{receiver.url}/ops")),
        NotificationSender(store, hook("chat", f"{receiver.url}/chat", format="slack")),
    ]
    await run_until(senders, lambda: len(receiver.accepted) == 2)
    assert len(receiver.requests) == 2
    (ops,) = [b for p, b in receiver.accepted if p == "/ops"]
    (chat,) = [b for p, b in receiver.accepted if p == "/chat"]
    assert ops["counts"] == {"firing": 50, "resolved": 0}
    assert [a["machine"] for a in ops["alerts"]] == [f"m{i:02d}" for i in range(50)]
    lines = chat["text"].split("\n")
    assert lines[0] == "[FIRING:50] hot z1"
    assert len(lines) == 51
    store.close()


async def test_a_4xx_is_kept_retried_at_the_cap_and_reported_once(tmp_path: Path) -> None:
    receiver = Receiver(fail=3, status=410)  # Gone: a revoked hook, until someone fixes it
    try:
        store = Store(tmp_path / "gw.db")
        store.commit(now_ms=T0, notifications=notification_rows("it", [notification("ops", HOT)]))
        sender = NotificationSender(
            store, hook("ops", receiver.url), backoff_cap_s=0.1
        )
        with capture_logs() as logs:
            await run_until([sender], lambda: len(receiver.accepted) == 1)
        assert len(receiver.requests) == 4
        events = [e["event"] for e in logs if e["event"].startswith("notify.")]
        assert events == ["notify.rejected", "notify.failed", "notify.failed", "notify.sent"]
        assert logs[0]["status"] == 410
        assert store.notifications_waiting() == 0
        store.close()
    finally:
        receiver.close()


async def test_a_redirect_is_not_followed(tmp_path: Path, receiver: Receiver) -> None:
    # urllib would follow a 302 with a GET and no body, and a 200 would count as delivered.
    moved = Receiver(fail=1, status=302, headers={"Location": f"{receiver.url}/elsewhere"})
    try:
        store = Store(tmp_path / "gw.db")
        store.commit(now_ms=T0, notifications=notification_rows("it", [notification("ops", HOT)]))
        sender = NotificationSender(
            store, hook("ops", moved.url), backoff_cap_s=0.1
        )
        with capture_logs() as logs:
            await run_until([sender], lambda: len(moved.accepted) == 1)
        assert receiver.requests == []  # never went to the Location
        assert [e["status"] for e in logs if e["event"] == "notify.rejected"] == [302]
        store.close()
    finally:
        moved.close()


async def test_a_down_channel_does_not_delay_another(tmp_path: Path, receiver: Receiver) -> None:
    store = Store(tmp_path / "gw.db")
    store.commit(
        now_ms=T0,
        notifications=notification_rows(
            "it", [notification("dead", HOT), notification("ok", HOT)]
        ),
    )
    dead = NotificationSender(
        store, hook("dead", "http://127.0.0.1:9/"), backoff_base_s=60
    )
    ok = NotificationSender(store, hook("ok", receiver.url))
    await run_until(
        [dead, ok],
        lambda: len(receiver.accepted) == 1 and dead.counts[("dead", "failed")] == 1,
        settle_s=0,
    )
    assert store.notifications_waiting("ok") == 0
    assert store.notifications_waiting("dead") == 1  # kept, for a later attempt
    store.close()
