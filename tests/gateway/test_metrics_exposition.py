"""``/metrics``: docs/metrics.md lists every family it exposes, with its type and labels, and
nothing else; the request histogram's buckets are Prometheus's ``le`` (at most); the text is
written from a snapshot, which the loop's later counting does not change."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry
from tests.auth import bearer
from tests.exposition import documented, drift, exposed, samples
from tests.fakes import T0, Clock
from tests.sites import machine_config, site_yaml

from pilotline.collectors.mqtt.collector import AckToken, Quarantined
from pilotline.gateway.api.app import create_app
from pilotline.gateway.api.metrics import GatewayCollector, Histogram, exposition, registry
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.rules import Sample


async def test_every_family_of_metrics_is_in_the_docs_table(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml({"photonics": [machine_config("laser-01")]}, store=tmp_path / "gw.db")
    )
    gateway = Gateway(load_config(path), writer=MemoryWriter())
    now = gateway.clock_ms()
    gateway.ingest.sample(Sample("laser-01", now, {"state": "NotExecuting"}), AckToken(1, 1, 1))
    bad = Quarantined("t/laser-01", "malformed_json", b"{", now, "laser-01")
    gateway.ingest.reject("mqtt", bad, AckToken(2, 1, 2))
    gateway.commit()
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://localhost", headers=bearer(gateway.store)
    ) as client:
        assert (await client.get("/api/machines")).status_code == 200
        text = (await client.get("/metrics")).text

    assert drift(text) == []
    families = exposed(text)
    assert {"pilotline_build_info", "process_cpu_seconds_total", "python_info",
            "pilotline_api_request_duration_seconds"} <= families.keys()
    # every new family with its labels seen (a family without samples shows no labels)
    for name in ("pilotline_machine_state_code", "pilotline_machine_last_seen_age_seconds",
                 "pilotline_api_request_duration_seconds", "pilotline_build_info"):
        assert families[name][1] == documented()[name][1], name


def test_a_family_missing_from_the_table_is_drift(tmp_path: Path) -> None:
    """The check itself can fail: an undocumented family, a wrong type, a stale row."""
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml({"photonics": [machine_config("laser-01")]}, store=tmp_path / "db"))
    gateway = Gateway(load_config(path), writer=MemoryWriter())
    text = generate_latest(registry(gateway.metrics, gateway.gauges())).decode()
    renamed = text.replace("pilotline_outbox_bytes", "pilotline_outbox_size")
    assert drift(renamed) == [
        "pilotline_outbox_size (gauge) is not in metrics.md",
        "pilotline_outbox_bytes is documented but not exposed",
    ]
    relabelled = text.replace('pilotline_build_info{python=', 'pilotline_build_info{py=')
    assert drift(relabelled) == [
        "pilotline_build_info has labels ['py', 'version'], documented ['python', 'version']"
    ]


def test_a_duration_on_a_bucket_bound_counts_in_that_bucket() -> None:
    hist = Histogram((0.01, 0.1))
    for seconds in (0.01, 0.0100001, 0.1, 7.0):
        hist.observe(("/r", "GET", "200"), seconds)
    family = hist.family("d_seconds", "durations", ["route", "method", "status"])
    got = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert got == {
        ("d_seconds_bucket", "0.01"): 1,
        ("d_seconds_bucket", "0.1"): 3,
        ("d_seconds_bucket", "+Inf"): 4,
        ("d_seconds_count", None): 4,
        ("d_seconds_sum", None): 0.01 + 0.0100001 + 0.1 + 7.0,
    }
    assert {s.labels["route"] for s in family.samples} == {"/r"}


async def test_the_text_is_written_from_a_snapshot_of_the_figures(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml({"photonics": [machine_config("laser-01")]}, store=tmp_path / "db"))
    clock = Clock(T0)
    gateway = Gateway(load_config(path), writer=MemoryWriter(), clock_ms=clock)
    metrics, gauges = gateway.metrics, gateway.gauges()
    metrics.api_durations.observe(("/api/machines", "GET", "200"), 0.002)
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(GatewayCollector(metrics, gauges).snapshot())
    before = generate_latest(snapshot).decode()

    # what the loop counts after the snapshot (while a thread writes the snapshot's text)
    metrics.api_durations.observe(("/api/machines", "GET", "200"), 0.002)
    sample = Sample("laser-01", T0 - 1500, {"state": "NotExecuting"})
    gateway.ingest.sample(sample, AckToken(1, 1, 1))
    gateway.commit()

    assert generate_latest(snapshot).decode() == before
    seen = ("pilotline_machine_last_seen_age_seconds", (("machine", "laser-01"),))
    got = ("pilotline_samples_total", (("machine", "laser-01"),))
    requests = (
        "pilotline_api_request_duration_seconds_count",
        (("method", "GET"), ("route", "/api/machines"), ("status", "200")),
    )
    then = samples(before)
    assert (seen in then, got in then, then[requests]) == (False, False, 1)
    now = samples((await exposition(metrics, gauges)).decode())
    assert (now[seen], now[got], now[requests]) == (1.5, 1, 2)
