"""How good is the capacity forecast? Measured on a simulated history.

The demo plant (10 machines, seeded) runs for ``--weeks`` + 1 weeks through the real rules
core at one sample per machine every ``--step`` seconds. Then, from each midnight of the last
week, the forecast of the next 24 hours (made only from the windows that closed before that
midnight) is compared hour by hour with the offerable idle minutes that really followed.
Two baselines show what the figure is worth: "nothing free" (always 0) and the machine's
overall mean offerable minutes per hour.

    .venv/bin/python benchmarks/forecast_accuracy.py [--weeks 4] [--step 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import orjson

from pilotline.demo.plant import Plant as SimPlant
from pilotline.demo.site import demo_site_yaml
from pilotline.gateway.config import load_config
from pilotline.rules import IdleWindowClosed, IdleWindowOpened, Plant, Sample
from pilotline.rules.forecast import HOUR_MS, forecast, offerable, overlap_ms

DAY_MS = 24 * HOUR_MS
START = 1_793_491_200_000  # 2026-11-02T00:00:00Z, a Monday


def simulate(weeks: int, step_s: int, min_idle_s: float) -> tuple[dict[str, list], int, object]:
    sim = SimPlant(seed=7, start_ms=START)
    path = Path("/tmp/pilotline-forecast-site.yaml")
    path.write_text(
        demo_site_yaml(
            sim, mqtt_url="mqtt://127.0.0.1:1", store=Path("/tmp/x.db"), api="127.0.0.1:1",
            min_idle_s=min_idle_s,
            stale_after_s=3 * step_s,  # sampled every step_s, a machine is not stale
        )
    )
    spec = load_config(path, check_files=False).plant_spec()
    topic_of = {m.topic: m.id for m in sim.machines}
    core = Plant(spec)
    windows: dict[str, list[tuple[int, int]]] = {m.id: [] for m in spec.machines}
    open_since: dict[str, int] = {}
    end = START + (weeks + 1) * 7 * DAY_MS
    steps = (end - START) // (step_s * 1000)
    began = time.perf_counter()
    for n in range(steps):
        now = START + n * step_s * 1000
        for topic, payload in sim.payloads(now):
            values = orjson.loads(payload)
            ts = values.pop("ts")
            core.receive(Sample(topic_of[topic], ts, values))
        for event in core.events():
            if isinstance(event, IdleWindowOpened):
                open_since[event.machine] = event.start_ms
            elif isinstance(event, IdleWindowClosed):
                windows[event.machine].append((event.start_ms, event.end_ms))
                open_since.pop(event.machine, None)
        if n % (steps // 10 or 1) == 0:
            print(f"  simulated {n / steps:4.0%} ({time.perf_counter() - began:.0f} s)", flush=True)
    for machine, since in open_since.items():
        windows[machine].append((since, end))
    return windows, end, spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weeks", type=int, default=4, help="history weeks before the test week")
    parser.add_argument("--step", type=int, default=30, help="seconds between samples")
    parser.add_argument("--min-idle", type=float, default=300, help="min_idle_s")
    args = parser.parse_args()
    print(f"simulating {args.weeks + 1} weeks of the demo plant, a sample every {args.step} s")
    windows, end, spec = simulate(args.weeks, args.step, args.min_idle)
    min_idle_ms = {m.id: m.min_idle_ms for m in spec.machines}  # type: ignore[attr-defined]
    policy = {m.id: m.policy for m in spec.machines}  # type: ignore[attr-defined]
    test_start = end - 7 * DAY_MS
    errors, zero_errors, mean_errors, actuals = [], [], [], []
    for machine, history in windows.items():
        usable = offerable(history, min_idle_ms[machine])
        for day in range(7):
            origin = test_start + day * DAY_MS - 1  # just before midnight: forecast from 00:00
            known = [(s, e) for s, e in history if e <= origin]
            past = offerable(known, min_idle_ms[machine])
            span = origin - START
            mean = overlap_ms(past, START, origin) / span * 60 if span > 0 else 0.0
            hours = forecast(
                known, policy[machine], origin, min_idle_ms=min_idle_ms[machine],
                first_seen_ms=START, weeks=args.weeks, hours=24,
            )
            for hour in hours:
                actual = overlap_ms(usable, hour.start_ms, hour.start_ms + HOUR_MS) / 60_000
                actuals.append(actual)
                errors.append(hour.expected_free_min - actual)
                zero_errors.append(-actual)
                mean_errors.append(mean - actual)

    def mae(values: list[float]) -> float:
        return statistics.fmean(abs(v) for v in values)

    print()
    print(f"forecast accuracy, {len(errors)} machine-hours "
          f"({len(windows)} machines x 7 days x 24 h), history {args.weeks} weeks")
    print(f"  actual offerable free minutes per hour: mean {statistics.fmean(actuals):.1f}")
    print(f"  forecast (same weekday-hour):  MAE {mae(errors):5.1f} min/h, "
          f"bias {statistics.fmean(errors):+5.1f}")
    print(f"  baseline 'nothing free':       MAE {mae(zero_errors):5.1f} min/h")
    print(f"  baseline 'overall mean':       MAE {mae(mean_errors):5.1f} min/h")


if __name__ == "__main__":
    main()
