"""``pilotline booking list|show|cancel|statement`` (booking_cli.py) on a real store file: a
gateway on a fake clock books and meters yesterday's bookings and closes; the command reads
the file (in-process ``main``), and cancels beside a running gateway (a subprocess). The
statement's CSV is the API's, byte for byte."""

from __future__ import annotations

import getpass
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.auth import bearer
from tests.fakes import Clock
from tests.gateway.test_usage_api import book, site_text

from pilotline.collectors.mqtt.collector import AckToken
from pilotline.gateway.api.app import create_app
from pilotline.gateway.cli import main
from pilotline.gateway.clock import wall_clock_ms
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.service.usage import csv_text
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.gateway.store.tokens import Role
from pilotline.gateway.timefmt import iso
from pilotline.rules import Sample

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
# The command reads the wall clock: the day it reports on is over by now.
BASE = wall_clock_ms() // HOUR * HOUR - 2 * DAY
START = BASE + 2 * HOUR
END = START + HOUR


@dataclass(frozen=True)
class Booked:
    config: Path
    used: str
    missed: str
    cancelled: str
    api_csv: str


def gateway_on(config: Path, clock: Clock) -> Gateway:
    gateway = Gateway(load_config(config), writer=MemoryWriter(), clock_ms=clock,
                      monotonic_ms=clock.monotonic)
    gateway.caught_up = True
    return gateway


@pytest.fixture
async def booked(tmp_path: Path) -> Booked:
    """Yesterday: smallco ran laser-01 (5 min late, 10 min over), bigco never ran press-01,
    smallco cancelled its press-01 booking late. Then the gateway stops."""
    config = tmp_path / "site.yaml"
    config.write_text(site_text(tmp_path))
    clock = Clock(BASE)
    gateway = gateway_on(config, clock)
    used = book(gateway, "laser-01", "smallco", START, END, now=BASE)
    missed = book(gateway, "press-01", "bigco", START, END, now=BASE)
    cancelled = book(gateway, "press-01", "smallco", START + 2 * HOUR, START + 3 * HOUR,
                     now=BASE)
    gateway.store.reservations().cancel(cancelled, BASE + 10 * MIN, by="smallco")
    seq = 0
    for ts in [*range(BASE, START, 10 * MIN), *range(START + 5 * MIN, END + 11 * MIN, 5 * MIN),
               END + 30 * MIN]:
        clock.set(ts)
        laser = "Executing" if START < ts < END + 10 * MIN else "NotExecuting"
        for machine, state in (("laser-01", laser), ("press-01", "NotExecuting")):
            seq += 1
            gateway.ingest.sample(Sample(machine, ts, {"state": state}), AckToken(1, seq, seq))
        gateway.tick()
        gateway.commit()
        gateway.bookings.settle()
    # what the API answers once it is all over
    clock.set(BASE + DAY + HOUR)
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        answer = await client.get(
            "/api/usage", params={"from": BASE, "to": BASE + DAY, "format": "csv"},
            headers=bearer(gateway.store, Role.OPERATOR),
        )
    assert answer.status_code == 200, answer.text
    gateway.store.close()
    return Booked(config, used, missed, cancelled, answer.text)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["booking", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_statement_prints_the_apis_figures(
    booked: Booked, capsys: pytest.CaptureFixture[str]
) -> None:
    span = ["--from", iso(BASE), "--to", iso(BASE + DAY)]
    code, out, _ = run(capsys, "statement", "-c", str(booked.config), *span, "--csv")
    assert code == 0
    assert out == booked.api_csv  # the same rows, byte for byte

    code, out, _ = run(capsys, "statement", "-c", str(booked.config), *span,
                       "--tenant", "smallco")
    assert code == 0
    lines = out.splitlines()
    used = next(line for line in lines if line.startswith(booked.used))
    assert used.split()[3:] == [
        "completed", *used.split()[4:6],  # start, local date and time
        "60", "55", "5", "0", "0", "5", "10", "75", "75", "EUR",
    ]
    cancelled = next(line for line in lines if line.startswith(booked.cancelled))
    assert cancelled.split()[-3:] == ["20", "CHF", "late_cancel"]
    assert booked.missed not in out  # bigco's
    assert lines[-1] == ("2 booking(s); minutes booked 60, used 55, unused 5, overrun 10, "
                         "billed 75; charges 20 CHF, 75 EUR")


def test_list_filters_and_show_tells_the_history_and_the_use(
    booked: Booked, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(booked.config)
    _, out, _ = run(capsys, "list", "-c", config, "--tenant", "smallco")
    assert booked.used in out
    assert booked.cancelled in out
    assert booked.missed not in out
    assert out.splitlines()[-1] == "2 booking(s)"
    _, out, _ = run(capsys, "list", "-c", config, "--status", "no_show", "--machine",
                    "press-01")
    assert booked.missed in out
    assert out.splitlines()[-1] == "1 booking(s)"

    code, out, _ = run(capsys, "show", booked.used, "-c", config)
    assert code == 0
    history = [line.split()[2] for line in out.splitlines() if line.startswith("  20")]
    assert history == ["held", "confirmed", "active", "completed"]
    assert "  used                55 min" in out
    assert "  overrun             10 min" in out
    assert "  charge              75 EUR" in out

    code, _, err = run(capsys, "show", "r_nope", "-c", config)
    assert (code, err) == (1, "pilotline booking: no booking 'r_nope'\n")
    code, _, err = run(capsys, "statement", "-c", config, "--owner", "nobody")
    assert code == 1
    assert "no machine" in err
    code, _, err = run(capsys, "statement", "-c", config, "--from", "yesterday")
    assert code == 1
    assert "--from" in err


def test_cancel_beside_a_running_gateway_is_recorded_by_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(site_text(tmp_path))
    now = wall_clock_ms()
    gateway = gateway_on(config, Clock(now))  # holds the store's lock, as in production
    start = now // HOUR * HOUR + 3 * HOUR
    rid = book(gateway, "laser-01", "smallco", start, start + HOUR, now=now)
    pilotline = Path(sys.executable).parent / "pilotline"
    try:
        done = subprocess.run(
            [str(pilotline), "booking", "cancel", rid, "-c", str(config), "--note", "ops"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 0, done.stderr
        by = f"cli:{getpass.getuser()}"
        assert done.stdout == f"{rid} cancelled (by {by})\n"
        # the gateway's own connection sees it at once
        events = gateway.store.reservations().events(rid)
        assert events[-1][0].value == "cancelled"
        assert events[-1][2:] == (by, "ops")
        again = subprocess.run(
            [str(pilotline), "booking", "cancel", rid, "-c", str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert again.returncode == 1
        assert "is cancelled" in again.stderr
    finally:
        gateway.store.close()


def test_a_formula_in_a_csv_cell_is_never_run() -> None:
    text = csv_text([{"id": "r_1", "tenant": "=HYPERLINK(\"http://x\")", "owner": "@SUM(1)",
                      "machine": "m", "charge": 1.5, "late_cancel": True}])
    row = text.splitlines()[1]
    assert "'=HYPERLINK" in row
    assert "'@SUM(1)" in row
    assert row.endswith(",1.5,,1,,")  # charge, currency, late_cancel, waived, provisional
