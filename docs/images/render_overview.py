"""Render docs/images/facility-overview.png from real InfluxQL results.

Starts Debian's InfluxDB 1.x (tests/peers.py), writes the dataset of
tests/integration/test_dashboards.py (the gateway's own line protocol), runs the facility
overview's "Machine states" and "Utilization" panel queries exactly as the dashboard holds
them, each over its panel's time range (the utilization panel reads the completed days of the
last 7: the dataset's two days before the states shown), and draws what Grafana would show.
Needs matplotlib (not a pilotline dependency):

    .venv/bin/pip install matplotlib
    PYTHONPATH=. .venv/bin/python docs/images/render_overview.py
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from tests.integration.test_dashboards import (
    RANGE,
    VARIABLES,
    dataset,
    influx_queries,
    rows,
    substitute,
)
from tests.peers import InfluxDB1

ROOT = Path(__file__).parents[2]
COLORS = {"offline": "#8e8e8e", "running": "#56a64b", "idle": "#3274d9", "down": "#e02f44",
          "maintenance": "#ff9830"}


def main() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/facility-overview.json")
                           .read_text())
    queries = {title: (q, time_range) for title, _, q, time_range in influx_queries(dashboard)}
    with InfluxDB1() as db:
        db.write(dataset())
        states_query, states_range = queries["Machine states"]
        states = rows(db.query(substitute(states_query, VARIABLES, states_range)))
        usage_query, usage_range = queries["Utilization (share of time per state)"]
        usage = rows(db.query(substitute(usage_query, VARIABLES, usage_range)))
    machines = sorted({r["machine"] for r in states}, reverse=True)
    end = RANGE[1]

    def when(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 3.2), width_ratios=[2.2, 1])
    for y, machine in enumerate(machines):
        changes = sorted((r["time"], r["state"]) for r in states if r["machine"] == machine)
        for (start, state), (stop, _) in zip(changes, [*changes[1:], (end, "")], strict=True):
            ax.barh(y, when(stop) - when(start), left=when(start), color=COLORS[state],
                    height=0.7)
    ax.set_yticks(range(len(machines)), machines)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))
    ax.set_title("Machine states (machine_state)", loc="left", fontsize=10)
    by_machine = {r["machine"]: r for r in usage}
    for y, machine in enumerate(machines):
        left = 0.0
        for state, color in COLORS.items():
            share = by_machine[machine][state]
            bx.barh(y, share, left=left, color=color, height=0.7)
            left += share
    bx.set_yticks(range(len(machines)), machines)
    bx.set_xlim(0, 100)
    bx.set_xlabel("% of time")
    bx.set_title("Utilization, last 7 days (utilization)", loc="left", fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLORS.values()]
    fig.legend(handles, list(COLORS), loc="lower center", ncol=5, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    out = ROOT / "docs/images/facility-overview.png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
