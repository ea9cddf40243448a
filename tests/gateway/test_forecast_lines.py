"""The gateway's forecast runs: compact results, the same lines as before, changes only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.collectors.mqtt.collector import AckToken
from pilotline.gateway.config import load_config
from pilotline.gateway.forecasts import (
    CAPACITY_FORECAST,
    HOURS,
    Forecasts,
    forecast_lines,
    update_forecasts,
)
from pilotline.gateway.service import Gateway
from pilotline.gateway.sinks.influx.lineproto import line
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.rules import Sample
from pilotline.rules.forecast import HOUR_MS, WEEK_MS, forecast

NOW = T0 + WEEK_MS - HOUR_MS // 2  # a week after the idle window, half an hour before its hour

ZONES = {
    "photonics": [machine_config("laser-01"), machine_config("laser-02")],
    "imaging": [
        machine_config(
            "cam-01",
            "optix",
            offering={"weekly": [{"days": ["daily"], "from": "18:00", "to": "06:00"}]},
        )
    ],
}


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            ZONES,
            store=tmp_path / "gw.db",
            defaults={**UNIT_DEFAULTS, "stale_after_s": 86400, "offering": "always"},
        )
    )
    gw = Gateway(load_config(path), writer=MemoryWriter(), clock_ms=Clock(NOW))
    # laser-01 was idle for two hours a week ago: the same two hours are forecast free.
    for i, (ts, state) in enumerate([(T0, "NotExecuting"), (T0 + 2 * HOUR_MS, "Executing")]):
        gw.ingest.sample(Sample("laser-01", ts, {"state": state}), AckToken(i + 1, 1, i + 1))
    gw.commit()
    drain(gw)  # only the forecast's lines from here
    return gw


def drain(gateway: Gateway) -> list[str]:
    last, lines = gateway.store.outbox_lines(100_000)
    if lines:
        gateway.store.outbox_delete(last)
    return lines


def run(gateway: Gateway, previous: Forecasts | None = None) -> tuple[Forecasts, list[str]]:
    result, staged = asyncio.run(update_forecasts(gateway, gateway.clock_ms(), previous, chunk=2))
    gateway.commit()
    lines = drain(gateway)
    assert staged == len(lines)
    return result, lines


def test_a_first_run_writes_every_hour_of_every_machine_as_line_would(gateway: Gateway) -> None:
    result, lines = run(gateway)
    expected = []
    for spec in gateway.plant_spec.machines:
        windows = [(T0, T0 + 2 * HOUR_MS)] if spec.id == "laser-01" else []
        hours = forecast(
            windows,
            spec.policy,
            NOW,
            min_idle_ms=spec.min_idle_ms,
            first_seen_ms=T0 if windows else None,
        )
        assert list(result[spec.id]) == hours  # the compact form reads back the same
        tags = {"site": "unit", "zone": spec.zone, "machine": spec.id}
        expected += [
            line(
                CAPACITY_FORECAST,
                tags,
                {"expected_free_min": h.expected_free_min, "offered_min": h.offered_min},
                h.start_ms,
            )
            for h in hours
        ]
    assert sorted(lines) == sorted(expected)
    assert len(lines) == 3 * HOURS
    assert [h.expected_free_min for h in result["laser-01"][:3]] == [60.0, 60.0, 0.0]
    assert {h.offered_min for h in result["cam-01"]} == {0.0, 60.0}  # 18:00-06:00 only
    assert gateway.forecasts == {}  # run_forecasts swaps it in, not update_forecasts


def test_machines_with_the_same_figures_share_them(gateway: Gateway) -> None:
    result, _ = run(gateway)
    laser1, laser2, cam = (result.figures(m) for m in ("laser-01", "laser-02", "cam-01"))
    assert laser1 is not None
    assert laser2 is not None
    assert cam is not None
    assert laser2[0] is cam[0]  # no history: one tuple of zeros
    assert laser1[1] is laser2[1]  # the same policy: one tuple of offered minutes
    assert laser1[0] != laser2[0]


def test_a_later_run_rewrites_only_new_and_changed_hours(gateway: Gateway) -> None:
    first, _ = run(gateway)
    again, lines = run(gateway, first)
    assert lines == []  # the same hour, the same figures
    gateway.clock_ms.ms += HOUR_MS  # type: ignore[attr-defined]
    later, lines = run(gateway, again)
    assert later.first_ms == first.first_ms + HOUR_MS
    last = (later.first_ms + (HOURS - 1) * HOUR_MS) * 1_000_000
    assert len(lines) == 3
    assert all(text.endswith(f" {last}") for text in lines)


def test_a_changed_hour_is_written_again() -> None:
    zones = {"m": "z"}
    before = Forecasts(T0)
    before.set("m", (0.0,) * 3, (60.0,) * 3)
    after = Forecasts(T0 + HOUR_MS)
    after.set("m", (0.0, 12.5, 0.0), (60.0,) * 3)
    lines = [text for _, text in forecast_lines("s", zones, after, before)]
    assert lines == [
        f"capacity_forecast,machine=m,site=s,zone=z expected_free_min=12.5,offered_min=60 "
        f"{(T0 + 2 * HOUR_MS) * 1_000_000}",
        f"capacity_forecast,machine=m,site=s,zone=z expected_free_min=0,offered_min=60 "
        f"{(T0 + 3 * HOUR_MS) * 1_000_000}",
    ]
    assert len(forecast_lines("s", zones, after)) == 3  # no previous run: every hour
