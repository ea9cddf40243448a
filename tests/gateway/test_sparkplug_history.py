"""Values a Sparkplug edge node flags ``is_historical`` (issue 17): stored as telemetry at
their own time through ``Ingest.history``, never fed to the live state.

The Sparkplug collector's message handler is called directly with payloads encoded by the
specification's own module, as the event loop would call it; the in-memory writer stands in
for InfluxDB (the real edge node and broker are in tests/integration/test_sparkplug_*.py).
"""

from __future__ import annotations

from pathlib import Path

from tests.fakes import T0, Clock
from tests.sites import site_yaml
from tests.sparkplug_payloads import M, encode

from pilotline.collectors.sparkplug.payload import DataType
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.rules import Sample, State

G, N, D = "Plant1", "edge-1", "press-7"


def gateway(tmp_path: Path, clock: Clock) -> Gateway:
    machine = {
        "id": "press-07", "owner": "acme", "offering": "always", "state": {"signal": "state"},
        "sparkplug": {"group": G, "node": N, "device": D,
                      "metrics": {"state": "Status/State", "power_w": "Power"}},
    }
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml({"hall": [machine]}, store=tmp_path / "gw.db",
                              defaults={"debounce_s": 0, "min_idle_s": 0}))
    return Gateway(load_config(path), writer=MemoryWriter(), clock_ms=clock)


def outbox(gw: Gateway) -> list[str]:
    return gw.store.outbox_lines(10_000)[1]


def state(gw: Gateway) -> State:
    (view,) = gw.plant.view()
    return view.state


def test_a_historical_value_is_stored_at_its_time_and_leaves_the_state(tmp_path: Path) -> None:
    clock = Clock()
    clock.ms = T0
    gw = gateway(tmp_path, clock)
    sp = gw.sparkplug
    assert sp is not None
    sp._message(f"spBv1.0/{G}/NBIRTH/{N}",
                encode([M("bdSeq", 0, DataType.INT64)], seq=0, timestamp=T0))
    sp._message(f"spBv1.0/{G}/DBIRTH/{N}/{D}", encode(
        [M("Status/State", "Executing", DataType.STRING, alias=1, timestamp=T0),
         M("Power", 812.5, DataType.DOUBLE, alias=2, timestamp=T0)],
        seq=1, timestamp=T0))
    gw.commit()
    assert state(gw) is State.RUNNING
    samples = dict(gw.metrics.samples)

    # A minute ago, stored on the node while its link was down: the machine was stopped.
    clock.ms = T0 + 1_000
    past = T0 - 60_000
    sp._message(f"spBv1.0/{G}/DDATA/{N}/{D}", encode(
        [M(None, "Stopped", DataType.STRING, alias=1, timestamp=past, is_historical=True),
         M(None, 5.0, DataType.DOUBLE, alias=2, timestamp=past, is_historical=True)],
        seq=2, timestamp=T0 + 1_000))
    gw.commit()

    lines = outbox(gw)
    assert f"telemetry,machine=press-07,site=unit,zone=hall power_w=5 {past * 1_000_000}" in lines
    assert state(gw) is State.RUNNING
    assert dict(gw.metrics.samples) == samples  # not a sample of the live path
    assert sp.health_report(clock.ms)["historical_values"] == 2


def test_ingest_history_stages_telemetry_only(tmp_path: Path) -> None:
    clock = Clock()
    clock.ms = T0
    gw = gateway(tmp_path, clock)
    gw.ingest.sample(Sample("press-07", T0, {"state": "Executing", "power_w": 800.0}))
    gw.commit()
    before = outbox(gw)
    gw.ingest.history(Sample("press-07", T0 - 3_600_000, {"state": "Stopped", "power_w": 1.5}))
    gw.commit()
    assert outbox(gw)[len(before):] == [
        f"telemetry,machine=press-07,site=unit,zone=hall power_w=1.5 {(T0 - 3_600_000) * 1_000_000}"
    ]
    assert state(gw) is State.RUNNING


def test_a_history_value_stamped_in_the_future_is_refused(tmp_path: Path) -> None:
    """History is the past: one stamped beyond the machine's skew ahead of the clock is
    refused as ``future`` like a live sample, and never written as telemetry."""
    clock = Clock()
    clock.ms = T0
    gw = gateway(tmp_path, clock)
    gw.ingest.sample(Sample("press-07", T0, {"state": "Executing", "power_w": 800.0}))
    gw.commit()
    before = outbox(gw)
    gw.ingest.history(Sample("press-07", T0 + 3_600_000, {"power_w": 9.0}))
    gw.commit()
    assert outbox(gw)[len(before):] == []
    assert gw.metrics.future["press-07"] == 1
