"""Replay throughput: samples per second through the rules core alone, and through
``pilotline replay`` end to end (reading a JSON-lines file, sorting, the gateway's staging
and SQLite commits, optionally the outbox drained to an in-memory InfluxDB writer).

Run from the repository root::

    .venv/bin/python benchmarks/replay.py                 # 40 machines x 6 h at 1 Hz, ~2 min
    .venv/bin/python benchmarks/replay.py --core-only     # the rules core alone, ~30 s
    .venv/bin/python benchmarks/replay.py --quick         # 10 machines x 1 h, a smoke run

The rules core figure is the best of ``--repeat`` (3) passes, each through a fresh ``Plant``
(the shared machine's noise only ever slows a pass down), printed with its ratio to issue 9's
target of 500,000 samples/s.

The synthetic plant: half the machines give their state as a name (``state``), half as a
power reading with thresholds; each alternates jobs of 5-40 minutes with idle gaps of 2-60
minutes, with a fault now and then, sampled every second (a seeded random walk, so every
run replays the same history).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # the shared _launch.py, also when imported as benchmarks.X
    sys.path.append(HERE)

from _launch import print_summary  # noqa: E402
from pilotline.gateway.config import SiteConfig, load_config  # noqa: E402
from pilotline.gateway.logs import configure_logging  # noqa: E402
from pilotline.gateway.replay import read_file, replay  # noqa: E402
from pilotline.gateway.sinks.influx.writer import MemoryWriter  # noqa: E402
from pilotline.rules import Plant, Sample  # noqa: E402

T0 = 1_795_737_600_000
TARGET_CORE = 500_000


def site(machines: int, store: Path) -> str:
    lines = [
        "site: bench",
        'mqtt: {url: "mqtt://127.0.0.1:1"}',
        'influx: {url: "http://127.0.0.1:1", org: o, bucket: b}',
        f"store: {store}",
        "defaults: {debounce_s: 20, stale_after_s: 60, min_idle_s: 900, publish_interval_s: 60,"
        " offering: always}",
        "zones:",
    ]
    for z in range(max(1, machines // 10)):
        lines += [f"  - id: zone-{z}", "    machines:"]
        for m in range(z * 10, min(machines, (z + 1) * 10)):
            state = (
                "{signal: state}"
                if m % 2 == 0
                else "{signal: power_w, running_above: 120, idle_below: 60}"
            )
            lines.append(
                f"      - {{id: m-{m:03d}, owner: o-{m % 3}, capabilities: [c-{m % 4}],"
                f" mqtt: {{topic: t/m-{m:03d}}}, state: {state}}}"
            )
    return "\n".join(lines) + "\n"


def timeline(machines: int, hours: float, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    seconds = int(hours * 3600)
    samples: list[Sample] = []
    for m in range(machines):
        name = f"m-{m:03d}"
        s = 0
        while s < seconds:
            kind = rng.choices(["job", "idle", "fault"], [0.55, 0.4, 0.05])[0]
            length = {
                "job": rng.randint(300, 2400),
                "idle": rng.randint(120, 3600),
                "fault": rng.randint(60, 900),
            }[kind]
            for t in range(s, min(seconds, s + length)):
                ts = T0 + t * 1000
                if m % 2 == 0:
                    value: dict[str, float | str] = {
                        "state": {"job": "Executing", "idle": "NotExecuting", "fault": "Aborted"}[
                            kind
                        ]
                    }
                else:
                    value = {
                        "power_w": {"job": 800.0, "idle": 20.0, "fault": 20.0}[kind] + rng.random()
                    }
                samples.append(Sample(name, ts, {**value, "temp_c": 20.0 + rng.random()}))
            s += length
    samples.sort(key=lambda x: x.ts_ms)
    return samples


def core_rate(config: SiteConfig, samples: list[Sample]) -> tuple[float, int]:
    """One pass through a fresh rules ``Plant``: (seconds, events)."""
    plant = Plant(config.plant_spec())
    events = 0
    started = time.perf_counter()
    for sample in samples:
        plant.receive(sample)
        events += len(plant.events())
    plant.handle_timer(samples[-1].ts_ms)
    events += len(plant.events())
    return time.perf_counter() - started, events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--machines", type=int, default=40)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--repeat", type=int, default=3, help="passes through the rules core; the best counts"
    )
    parser.add_argument("--core-only", action="store_true", help="skip the end-to-end replays")
    parser.add_argument("--quick", action="store_true", help="10 machines x 1 h, a smoke run")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.quick:
        args.machines, args.hours = 10, 1.0
    configure_logging("json", "warning")  # as `pilotline replay` does: no line per state
    summary: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config_path = work / "site.yaml"
        config_path.write_text(site(args.machines, work / "live.db"))
        config = load_config(config_path)
        samples = timeline(args.machines, args.hours, args.seed)
        n = len(samples)
        print(f"{args.machines} machines x {args.hours:g} h at 1 Hz: {n:,} samples")

        passes = [core_rate(config, samples) for _ in range(max(1, args.repeat))]
        core_s, events = min(passes)
        rate = n / core_s
        print(
            f"rules core alone:        {rate:>10,.0f} samples/s "
            f"({core_s:.2f} s, {events:,} events; best of {len(passes)}: "
            f"{', '.join(f'{n / p[0]:,.0f}' for p in passes)})"
        )
        print(
            f"rules core / target:     {rate / TARGET_CORE:>10.2f}  "
            f"(target {TARGET_CORE:,} samples/s)"
        )
        summary.append(
            (
                "replay through the rules core alone",
                f">= {TARGET_CORE:,} samples/s",
                f"{rate:,.0f} samples/s",
                f"{rate / TARGET_CORE:.2f} of target",
            )
        )
        if not args.core_only:
            jsonl = work / "history.jsonl"
            with jsonl.open("w") as out:
                for s in samples:
                    out.write(json.dumps({"machine": s.machine, "ts": s.ts_ms, **s.values}) + "\n")
            started = time.perf_counter()
            data = read_file(jsonl)
            read_s = time.perf_counter() - started
            result = replay(config, data.samples, out_store=work / "replay.db")
            total_s = read_s + result.elapsed_s
            print(
                f"replay, store only:      {n / result.elapsed_s:>10,.0f} samples/s "
                f"({result.elapsed_s:.2f} s; reading the JSON lines {read_s:.2f} s more: "
                f"{n / total_s:,.0f} samples/s file to store)"
            )
            writer = MemoryWriter()
            result = replay(
                config,
                data.samples,
                out_store=work / "replay-influx.db",
                influx=True,
                writer=writer,
            )
            print(
                f"replay, --influx:        {n / result.elapsed_s:>10,.0f} samples/s "
                f"({result.elapsed_s:.2f} s, {len(writer.lines):,} points drained)"
            )
            summary.append(
                (
                    "replay end to end (`pilotline replay --influx`, in-memory writer)",
                    "-",
                    f"{n / result.elapsed_s:,.0f} samples/s",
                    f"{n / result.elapsed_s / rate:.2f} of the rules core",
                )
            )
    print_summary(summary, "replay.py", argv, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
