"""The gateway shell's hot path without any network: stage, commit, quarantine.

The collector's callbacks are called directly, as the event loop would; the bundled
in-memory writer stands in for InfluxDB (the real server is in tests/integration).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.fakes import T0, Clock
from tests.sites import machine_config, site_yaml

from pilotline.collectors.mqtt.collector import AckToken, MqttHealth, Quarantined
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.rules import Sample

ZONES = {"photonics": [machine_config("laser-01")]}


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml(ZONES, store=tmp_path / "gw.db"))
    return Gateway(load_config(path), writer=MemoryWriter(), clock_ms=Clock())


def test_a_sample_is_durable_with_its_events_after_one_commit(gateway: Gateway) -> None:
    gateway.ingest.sample(Sample("laser-01", T0, {"state": "NotExecuting", "power_w": 40.0}),
                          AckToken(1, 1, 1))
    assert gateway.store.outbox_depth() == 0  # staged, not yet committed
    gateway.commit()
    lines = [line for _, line in gateway.store.outbox_peek(100)]
    # the first periodic report (at T0, reached by the gateway's clock first) precedes it
    assert [line.split(",")[0] for line in lines] == [
        "telemetry", "capacity", "machine_state", "capacity"
    ]
    assert "power_w=40" in lines[0]
    assert [m["state"] for m in gateway.store.machines()] == ["idle"]
    assert gateway.store.windows(T0)[0]["end_ms"] is None  # open window kept
    assert gateway.metrics.samples["laser-01"] == 1


def test_samples_from_the_future_are_refused_and_quarantined(gateway: Gateway) -> None:
    gateway.ingest.sample(Sample("laser-01", T0 + 3_600_000, {"state": "Executing"}),
                          AckToken(1, 1, 1))
    gateway.commit()
    assert gateway.metrics.rejected[("rules", "future")] == 1
    assert gateway.store.machines() == []
    assert [q["reason"] for q in gateway.store.quarantine()] == ["future"]


def test_rules_and_payload_rejections_are_counted_and_quarantined(gateway: Gateway) -> None:
    gateway.ingest.sample(Sample("laser-01", T0, {"state": "Dancing", "power_w": 5.0}),
                          AckToken(1, 1, 1))
    gateway.ingest.reject(
        "mqtt",
        Quarantined("t/laser-01", "malformed_json", b"{not json", T0, "laser-01"),
        AckToken(2, 1, 2),
    )
    gateway.commit()
    assert gateway.metrics.rejected == {
        ("rules", "unmapped_state"): 1,
        ("mqtt", "malformed_json"): 1,
    }
    reasons = sorted(q["reason"] for q in gateway.store.quarantine())
    assert reasons == ["malformed_json", "unmapped_state"]
    # the telemetry of a sample whose state is unmapped is still kept: the reading is real
    assert [line.split(",")[0] for _, line in gateway.store.outbox_peek(10)] == ["telemetry"]


def test_without_influx_nothing_goes_to_the_outbox(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml(ZONES, store=tmp_path / "gw.db", influx=None))
    gateway = Gateway(load_config(path), clock_ms=Clock())
    gateway.ingest.sample(Sample("laser-01", T0, {"state": "NotExecuting", "power_w": 1.0}),
                          AckToken(1, 1, 1))
    gateway.commit()
    assert gateway.drainer is None
    assert gateway.store.outbox_depth() == 0
    assert [m["state"] for m in gateway.store.machines()] == ["idle"]


ALERTS = """\
alerts:
  rules:
    - name: laser-down
      severity: critical
      state: down
      for: 2m
      message: "{machine} down for {value:.0f} s"
"""


def test_alert_transitions_are_points_in_the_same_commit(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml(ZONES, store=tmp_path / "gw.db") + ALERTS)
    clock = Clock()
    gw = Gateway(load_config(path), writer=MemoryWriter(), clock_ms=clock)
    for s in range(0, 200, 10):
        clock.ms = T0 + s * 1000
        gw.ingest.sample(Sample("laser-01", clock.ms, {"state": "Stopped"}), None)
    gw.commit()
    [view] = gw.alerts.view()
    assert (view.rule, view.status.value, view.firing_since_ms) == (
        "laser-down", "firing", T0 + 120_000
    )
    for s in range(200, 230, 10):
        clock.ms = T0 + s * 1000
        gw.ingest.sample(Sample("laser-01", clock.ms, {"state": "Executing"}), None)
    gw.commit()
    assert gw.alerts.view() == []
    alerts = [line for _, line in gw.store.outbox_peek(1000) if line.startswith("alert,")]
    assert alerts == [
        "alert,machine=laser-01,rule=laser-down,severity=critical,site=unit,zone=photonics"
        f' firing=1i,value=120,message="laser-01 down for 120 s" {(T0 + 120_000) * 1_000_000}',
        "alert,machine=laser-01,rule=laser-down,severity=critical,site=unit,zone=photonics"
        f' firing=0i,value=200,message="laser-01 down for 200 s" {(T0 + 200_000) * 1_000_000}',
    ]


def test_the_timer_fires_alerts_without_samples(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml(ZONES, store=tmp_path / "gw.db") + ALERTS)
    clock = Clock()
    gw = Gateway(load_config(path), writer=MemoryWriter(), clock_ms=clock)
    gw.ingest.sample(Sample("laser-01", T0, {"state": "Stopped"}), None)
    clock.ms = T0 + 50_000  # before staleness (60 s): down for 2 min cannot hold
    gw.tick()
    assert gw.alerts.next_deadline() == T0 + 120_000


@pytest.mark.parametrize(
    ("subscribed", "session_present", "healthy"),
    [(True, False, True), (False, True, True), (False, False, False)],
)
def test_a_resumed_session_is_healthy_before_its_suback(
    gateway: Gateway,
    monkeypatch: pytest.MonkeyPatch,
    subscribed: bool,
    session_present: bool,
    healthy: bool,
) -> None:
    """After a restart the broker delivers the queued backlog before it answers SUBSCRIBE:
    the gateway is working, and /health must not make a watchdog restart it meanwhile."""
    assert gateway.mqtt is not None
    state = MqttHealth(
        connected=True, since_ms=T0, last_error=None, reconnects=0, subscribed=subscribed,
        topics={"t/laser-01": T0}, received=5_000, rejected={}, session_present=session_present,
    )
    monkeypatch.setattr(gateway.mqtt, "health", lambda: state)
    mqtt = gateway.health()["mqtt"]
    assert mqtt["healthy"] is healthy
    assert mqtt["session_resumed"] is session_present
    if not healthy:
        assert mqtt["why"] == "subscriptions not confirmed by the broker"
