"""Footprint: peak memory and start-up time of a gateway with 1,000 and 10,000 machines.

Run from the repository root::

    .venv/bin/python benchmarks/footprint.py                 # 10, 1,000 and 10,000 machines
    .venv/bin/python benchmarks/footprint.py --quick         # 10 and 1,000, 1 sample each
    .venv/bin/python benchmarks/footprint.py --machines 500,2000,5000 --samples 5

For each size: a fresh private Mosquitto and victoria-metrics, a site of ``--machines`` MQTT
machines in zones of ``--zone-size`` (the throughput benchmark's machines and topics), and
the gateway as ``pilotline run -c FILE`` (a subprocess, the embedded store plus the InfluxDB
sink: what a site runs). Then:

1. **config load**: ``load_config`` + ``plant_spec()`` + the rules ``Plant``, timed in this
   process (no imports in it: those are in the start-up figure).
2. **start**: from spawning ``pilotline run`` to its ``gateway.started`` log event (imports,
   config, store, rules: the gateway built) and to ``mqtt.subscribed`` for every topic (then
   the forecasts, the API and the MQTT connection too).
3. **idle peak RSS**: ``VmHWM`` after ``--settle`` seconds without traffic.
4. **live peak RSS**: one publisher sends ``--samples`` samples to every machine (so every
   machine's tracker, window and zone aggregate is live); once victoria-metrics holds every
   telemetry point, and ``--settle`` seconds later, ``VmHWM`` again. Nothing scrapes the
   gateway's API meanwhile (a /health of 10,000 topics would add its own allocations).

Target (issue 9): under 150 MB (143 MiB) with 10,000 machines.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # the shared _launch.py, also when imported as benchmarks.X
    sys.path.append(HERE)

from _launch import (  # noqa: E402
    Children,
    log_event,
    machine_line,
    pilotline_command,
    print_summary,
    read_json,
    vm_hwm_kib,
    vm_rss_kib,
    wait_until,
)
from _load import SCRIPT as LOAD_SCRIPT  # noqa: E402
from _load import site_yaml  # noqa: E402

TARGET_BYTES = 150_000_000
TARGET_MACHINES = 10_000
MIB = 1024 * 1024


@dataclass
class Footprint:
    machines: int
    load_s: float
    start_s: float
    started_s: float | None
    """Spawn to the ``gateway.started`` log event: config, store, rules, before any I/O."""
    idle_hwm_kib: int
    live_hwm_kib: int
    live_rss_kib: int
    samples: int
    ingest_s: float
    stored: int
    gateway_rc: int | None

    @property
    def ok(self) -> bool:
        return self.stored == self.samples


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def event_time(log: Path, event: str) -> float | None:
    """Epoch seconds of a gateway log event (its ISO ``timestamp``), None if absent."""
    record = log_event(log, event)
    if record is None or "timestamp" not in record:
        return None
    stamp = str(record["timestamp"]).replace("Z", "+00:00")
    return dt.datetime.fromisoformat(stamp).timestamp()


def telemetry_points(vm: Any) -> int:
    with contextlib.suppress(OSError):
        vm.force_flush()
    return sum(len(s["values"]) for s in vm.export('{__name__="telemetry_power_w"}'))


def measure(n: int, args: argparse.Namespace, work: Path) -> Footprint:
    from tests.peers import VictoriaMetrics

    from pilotline.demo.broker import MosquittoBroker, free_port
    from pilotline.gateway.config import load_config
    from pilotline.rules import Plant

    shutil.rmtree(work, ignore_errors=True)  # a kept --workdir: no log or store of a last run
    (work / "vm").mkdir(parents=True)
    with (
        MosquittoBroker(datadir=work / "mosquitto") as broker,
        VictoriaMetrics(datadir=work / "vm") as vm,
        Children() as children,
    ):
        cfg = work / "site.yaml"
        cfg.write_text(
            site_yaml(
                n,
                mqtt_url=broker.url,
                influx_url=vm.url,
                store=work / "gateway.db",
                api=f"127.0.0.1:{free_port()}",
                zone_size=args.zone_size,
            )
        )
        started = time.perf_counter()
        Plant(load_config(cfg).plant_spec())
        load_s = time.perf_counter() - started

        log = work / "gateway.log"
        say(f"{n:,} machines: starting pilotline run (log {log})")
        started, spawned = time.monotonic(), time.time()
        gw = children.start([*pilotline_command(), "run", "-c", str(cfg)], log)

        def subscribed() -> bool:
            if gw.poll() is not None:
                raise RuntimeError(f"the gateway exited; its log: {log.read_text()[-2000:]}")
            event = log_event(log, "mqtt.subscribed")
            return event is not None and bool(event.get("topics") == n)

        wait_until(subscribed, 120, f"{n:,} machines: mqtt.subscribed", 0.05)
        start_s = time.monotonic() - started
        started_s = event_time(log, "gateway.started")
        started_s = None if started_s is None else started_s - spawned
        say(f"{n:,} machines: subscribed after {start_s:.1f} s; idle for {args.settle:g} s")
        time.sleep(args.settle)
        idle_hwm = vm_hwm_kib(gw.pid) or 0

        total = n * args.samples
        out = work / "publisher.json"
        say(f"{n:,} machines: publishing {args.samples} samples each ({total:,})")
        started = time.monotonic()
        pub = children.role(
            LOAD_SCRIPT,
            "_publish",
            {
                "port": broker.port,
                "client_id": "footprint-publisher",
                "machines": list(range(n)),
                "seconds": 600.0,
                "count": total,
                "rate": args.rate,
                "window": 1000,
                "out": str(out),
            },
            work / "publisher.log",
        )
        stored = 0

        def all_stored() -> bool:
            nonlocal stored
            if gw.poll() is not None:
                raise RuntimeError(f"the gateway exited; its log: {log.read_text()[-2000:]}")
            if pub.poll() is None:
                return False
            stored = telemetry_points(vm)
            return bool(stored >= total)

        wait_until(all_stored, 600, f"{n:,} machines: every sample in victoria-metrics", 0.5)
        ingest_s = time.monotonic() - started
        published = int((read_json(out) or {}).get("published", 0))
        time.sleep(args.settle)
        live_hwm = vm_hwm_kib(gw.pid) or 0
        live_rss = vm_rss_kib(gw.pid) or 0
        rc = children.stop(gw, 30)
        say(
            f"{n:,} machines: idle peak {idle_hwm / 1024:.1f} MiB, live peak "
            f"{live_hwm / 1024:.1f} MiB"
        )
        return Footprint(
            machines=n,
            load_s=load_s,
            start_s=start_s,
            started_s=started_s,
            idle_hwm_kib=idle_hwm,
            live_hwm_kib=live_hwm,
            live_rss_kib=live_rss,
            samples=published,
            ingest_s=ingest_s,
            stored=stored,
            gateway_rc=rc,
        )


def report(results: list[Footprint], args: argparse.Namespace) -> None:
    print()
    print(f"pilotline footprint, {dt.date.today()}, {machine_line()}")
    print(
        "| machines | config load | spawn -> gateway.started | spawn -> subscribed | "
        "peak RSS idle | peak RSS live | RSS at end | samples (stored) | ingest |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.machines:,} | {r.load_s * 1000:,.0f} ms | {secs(r.started_s)} "
            f"| {r.start_s:.1f} s "
            f"| {r.idle_hwm_kib / 1024:.1f} MiB | {r.live_hwm_kib / 1024:.1f} MiB "
            f"| {r.live_rss_kib / 1024:.1f} MiB | {r.samples:,} ({r.stored:,}) "
            f"| {r.ingest_s:.1f} s |"
        )
    for a, b in itertools.pairwise(results):
        per = (b.live_hwm_kib - a.live_hwm_kib) / max(1, b.machines - a.machines)
        load = (b.load_s - a.load_s) / max(1, b.machines - a.machines)
        print(
            f"per machine, {a.machines:,} -> {b.machines:,}: live peak RSS {per:,.1f} KiB, "
            f"config load {load * 1000:.2f} ms"
        )
    rows: list[tuple[str, str, str, str]] = []
    for r in results:
        at_target = r.machines == TARGET_MACHINES
        rows.append(
            (
                f"gateway peak RSS, {r.machines:,} machines (idle / live)",
                "< 150 MB" if at_target else "-",
                f"{r.idle_hwm_kib / 1024:.0f} / {r.live_hwm_kib / 1024:.0f} MiB",
                f"{r.live_hwm_kib * 1024 / TARGET_BYTES:.2f} of target" if at_target else "-",
            )
        )
        rows.append(
            (
                f"gateway start -> subscribed, {r.machines:,} machines",
                "-",
                f"{r.start_s:.1f} s (gateway.started at {secs(r.started_s)}; "
                f"config load {r.load_s * 1000:,.0f} ms)",
                "-",
            )
        )
    print_summary(rows, "footprint.py", args.argv, quick=args.quick)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--machines",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        default=[10, 1_000, 10_000],
        help="comma-separated sizes (default 10,1000,10000: 10 is the floor)",
    )
    p.add_argument("--samples", type=int, default=3, help="samples per machine (default 3)")
    p.add_argument("--zone-size", type=int, default=100, help="machines per zone (default 100)")
    p.add_argument("--rate", type=float, default=0.0, help="publish msg/s (default: no limit)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds before each VmHWM reading")
    p.add_argument("--quick", action="store_true", help="10 and 1,000 machines, 1 sample each")
    p.add_argument("--workdir", type=Path, default=None, help="keep logs and data here")
    args = p.parse_args(argv)
    args.argv = list(argv)
    if args.quick:
        args.machines = [10, 1_000]
        args.samples = 1
        args.settle = 1.0
    if not args.machines or min(args.machines) < 1 or args.samples < 1:
        p.error("--machines and --samples must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pl-footprint-")))
        else:
            work = args.workdir.resolve()
        results = []
        try:
            for n in args.machines:
                results.append(measure(n, args, work / f"m{n}"))
        except (TimeoutError, RuntimeError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        report(results, args)
        bad = [r for r in results if not r.ok]
        for r in bad:
            print(f"MISMATCH at {r.machines:,} machines: {r.stored:,} of {r.samples:,} stored")
        return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
