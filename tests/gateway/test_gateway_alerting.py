"""The gateway's alerting without any network: transitions -> dispatcher -> rows of the
durable notification queue, kept across a restart, and the operators' actions (ack, silence).

Collector callbacks and ``tick()`` are called directly with injected clocks; what a channel
would be sent is read from the store's ``notifications`` table (the senders are not run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.auth import bearer
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.collectors.mqtt.collector import AckToken
from pilotline.gateway.api.app import create_app
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.gateway.store.tokens import Role
from pilotline.rules import Sample

MACHINES = 12

ALERTS = {
    "group_wait": "10s",
    "group_interval": "1m",
    "repeat_interval": "1h",
    "rules": [
        {"name": "machine-down", "severity": "critical", "state": "down", "for": "30s",
         "message": "{machine} is down"},
    ],
    "webhooks": [{"name": "ops-hook", "url": "http://127.0.0.1:9/hook"}],
    "email": [
        {"name": "ops-mail", "host": "127.0.0.1", "port": 9, "starttls": False,
         "from": "gw@example.com", "to": ["ops@example.com"], "min_severity": "critical"},
    ],
}


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"photonics": [machine_config(f"m-{i:02}") for i in range(MACHINES)]},
            store=tmp_path / "gw.db",
            defaults={**UNIT_DEFAULTS, "stale_after_s": 36000, "min_idle_s": 10,
                      "publish_interval_s": 600},
            alerts=ALERTS,
        )
    )
    return path


def start(path: Path, clocks: Clock) -> Gateway:
    gateway = Gateway(
        load_config(path),
        writer=MemoryWriter(),
        clock_ms=clocks,
        monotonic_ms=clocks.monotonic,
        collectors=False,  # no broker here; collector health has its own test
    )
    gateway.caught_up = True  # no broker: no backlog to wait for
    return gateway


SEQ = iter(range(1, 1_000_000))


def send(gateway: Gateway, machine: str, state: str, ts: int) -> None:
    seq = next(SEQ)
    gateway.ingest.sample(Sample(machine, ts, {"state": state}), AckToken(1, seq, seq))


def run_for(gateway: Gateway, clocks: Clock, ms: int, step: int = 1_000) -> None:
    """Tick every ``step`` for ``ms``, committing as the committer task would."""
    for _ in range(ms // step):
        clocks.advance(step)
        gateway.tick()
        gateway.commit()


def queued(gateway: Gateway) -> list[tuple[str, dict[str, Any]]]:
    rows = gateway.store._db.execute(
        "SELECT channel, payload FROM notifications ORDER BY id"
    ).fetchall()
    return [(channel, json.loads(payload)) for channel, payload in rows]


def all_down(gateway: Gateway, clocks: Clock, machines: range) -> None:
    for i in machines:
        send(gateway, f"m-{i:02}", "Aborted", clocks.ms)
    gateway.commit()


def test_a_zone_going_down_is_one_grouped_notification_per_channel(
    config_path: Path,
) -> None:
    clocks = Clock()
    gateway = start(config_path, clocks)
    for i in range(MACHINES):
        send(gateway, f"m-{i:02}", "Executing", T0)
    run_for(gateway, clocks, 5_000)
    all_down(gateway, clocks, range(MACHINES))
    run_for(gateway, clocks, 29_000)
    assert queued(gateway) == []  # for: 30s not yet held
    run_for(gateway, clocks, 15_000)  # + lateness 2 s + group_wait 10 s
    rows = queued(gateway)
    assert [(c, p["kind"], len(p["alerts"])) for c, p in rows] == [
        ("ops-hook", "firing", MACHINES),
        ("ops-mail", "firing", MACHINES),
    ]
    assert {a["machine"] for a in rows[0][1]["alerts"]} == {f"m-{i:02}" for i in range(MACHINES)}
    # every transition is an `alert` point too
    lines = [line for _, line in gateway.store.outbox_peek(10_000)]
    alert_lines = [line for line in lines if line.startswith("alert,")]
    assert len(alert_lines) == MACHINES


def test_a_restart_neither_forgets_nor_repeats_a_notification(
    config_path: Path,
) -> None:
    clocks = Clock()
    gateway = start(config_path, clocks)
    send(gateway, "m-00", "Aborted", T0)
    run_for(gateway, clocks, 60_000)
    assert [p["kind"] for _, p in queued(gateway)] == ["firing", "firing"]
    gateway.store.close()

    # A new process on the same store: the alert is still firing, nothing is sent again...
    second = start(config_path, clocks)
    assert [v.status.value for v in second.alerts.view()] == ["firing"]
    send(second, "m-00", "Aborted", clocks.ms)
    run_for(second, clocks, 120_000)
    assert [p["kind"] for _, p in queued(second)] == ["firing", "firing"]
    # ... and its clearing is notified once, as resolved.
    send(second, "m-00", "Executing", clocks.ms)
    run_for(second, clocks, 80_000)
    kinds = [(c, p["kind"]) for c, p in queued(second)]
    assert kinds[2:] == [("ops-hook", "resolved"), ("ops-mail", "resolved")]


def test_an_acknowledged_alert_stops_repeating(config_path: Path) -> None:
    clocks = Clock()
    gateway = start(config_path, clocks)
    send(gateway, "m-00", "Aborted", T0)
    send(gateway, "m-01", "Aborted", T0)
    run_for(gateway, clocks, 60_000)
    assert len(queued(gateway)) == 2
    assert gateway.acknowledge("machine-down", "m-00", "alice", "on it") is not None
    assert gateway.acknowledge("machine-down", "m-05", "alice") is None  # not firing
    run_for(gateway, clocks, 2 * 3_600_000, step=10_000)
    repeats = [p for c, p in queued(gateway) if p["kind"] == "repeat" and c == "ops-hook"]
    assert [sorted(a["machine"] for a in p["alerts"]) for p in repeats] == [["m-01"], ["m-01"]]
    view = {v.machine: gateway.alert_marks(v) for v in gateway.alerts.view()}
    assert view["m-00"].acked_by == "alice"
    assert view["m-01"].acked_by is None


def test_a_silence_mutes_and_is_kept_across_a_restart(config_path: Path) -> None:
    clocks = Clock()
    gateway = start(config_path, clocks)
    silence = gateway.add_silence({"machine": "m-03"}, T0, T0 + 600_000, "bob", "recalibrating")
    gateway.store.close()
    gateway = start(config_path, clocks)
    assert [s.silence.id for s in gateway.silences()] == [silence.id]
    send(gateway, "m-03", "Aborted", T0)
    send(gateway, "m-04", "Aborted", T0)
    run_for(gateway, clocks, 60_000)
    notified = {a["machine"] for _, p in queued(gateway) for a in p["alerts"]}
    assert notified == {"m-04"}
    marks = {v.machine: gateway.alert_marks(v) for v in gateway.alerts.view()}
    assert marks["m-03"].silenced_by == (silence.id,)
    # Ending the silence while m-03 still fires: it is notified then, once.
    ended = gateway.end_silence(silence.id)
    assert ended is not None
    assert ended.silence.ends_ms <= clocks.ms
    run_for(gateway, clocks, 80_000)
    late = [p for _, p in queued(gateway) if any(a["machine"] == "m-03" for a in p["alerts"])]
    assert [p["kind"] for p in late] == ["firing", "firing"]


async def test_silences_and_acks_through_the_api(config_path: Path) -> None:
    clocks = Clock()
    gateway = start(config_path, clocks)
    send(gateway, "m-00", "Aborted", T0)
    run_for(gateway, clocks, 60_000)
    operator = bearer(gateway.store, Role.OPERATOR)
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        made = await api.post(
            "/api/silences",
            json={"matchers": {"zone": "photonics", "rule": "machine-down"}, "duration": "2h",
                  "comment": "power work"},
            headers=operator,
        )
        assert made.status_code == 201, made.text
        silence = made.json()
        assert silence["active"] is True
        assert silence["created_by"].startswith("test-operator")
        listed = (await api.get("/api/silences", headers=operator)).json()
        assert [s["id"] for s in listed] == [silence["id"]]
        alerts = (await api.get("/api/alerts", headers=operator)).json()
        assert alerts[0]["silenced_by"] == [silence["id"]]

        for bad, why in [
            ({"matchers": {"zone": "photonics"}}, "exactly one of ends_at and duration"),
            ({"matchers": {"zone": "photonics"}, "ends_at": "2020-01-01T00:00:00Z"}, "past"),
            ({"matchers": {"zone": "photonics"}, "ends_at": "2030-01-01T00:00:00"}, "time zone"),
            ({"matchers": {"colour": "red"}, "duration": "1h"}, "matchers"),
            ({"matchers": {}, "duration": "1h"}, "matchers"),
            ({"matchers": {"zone": "photonics"}, "duration": "100d"}, "90 days"),
            ({"matchers": {"zone": "photonics"}, "duration": "soon"}, "duration"),
        ]:
            refused = await api.post("/api/silences", json=bad, headers=operator)
            assert refused.status_code == 422, bad
            assert why in refused.text, refused.text

        acked = await api.post(
            "/api/alerts/ack", json={"rule": "machine-down", "machine": "m-00"}, headers=operator
        )
        assert acked.status_code == 200, acked.text
        assert acked.json()["acked_by"].startswith("test-operator")
        alerts = (await api.get("/api/alerts", headers=operator)).json()
        assert alerts[0]["acked_by"] == acked.json()["acked_by"]

        ended = await api.delete(f"/api/silences/{silence['id']}", headers=operator)
        assert ended.status_code == 200
        assert ended.json()["active"] is False
        assert (await api.delete("/api/silences/nope", headers=operator)).status_code == 404


def test_the_alert_core_checkpoint_is_kept_at_most_once_a_second(config_path: Path) -> None:
    clocks = Clock()
    alerting = start(config_path, clocks).alerting
    assert [core for core, _ in alerting.checkpoints(T0)] == ["alerts"]  # the first one
    alerting.save_alerts = True  # a transition
    assert alerting.checkpoints(T0 + 500) == []
    assert not alerting.checkpoints_due(T0 + 999)
    assert alerting.checkpoints_due(T0 + 1_000)
    assert [core for core, _ in alerting.checkpoints(T0 + 1_000)] == ["alerts"]
    assert not alerting.checkpoints_due(T0 + 29_999)  # nothing new: every 30 s only
    assert alerting.checkpoints_due(T0 + 31_000)
    assert [core for core, _ in alerting.save_now(T0 + 1_001)] == ["alerts", "dispatch"]
