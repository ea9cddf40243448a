"""``pilotline demo``'s command line: registered as a ``pilotline.commands`` entry point.

Kept light (argparse only) because the CLI loads it on every start; the demo itself is
imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo", help="simulated pilot line + gateway + embedded store, on this machine"
    )
    demo.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    demo.add_argument("--api", default="127.0.0.1:8080", help="API address (default %(default)s)")
    demo.add_argument(
        "--mqtt-url", default=None, help="use this broker instead of starting a private Mosquitto"
    )
    demo.add_argument("--influx-url", default=None, help="also write to this InfluxDB URL")
    demo.add_argument("--seed", type=int, default=7, help="simulation seed")
    demo.add_argument(
        "--workdir", type=Path, default=Path("var/demo"), help="demo store and config"
    )
    demo.add_argument("--no-live", action="store_true", help="no live table; log lines only")
    demo.add_argument("--no-opcua", action="store_true", help="every machine over MQTT")
    demo.add_argument(
        "--no-alerts", action="store_true", help="no alert rules, channels or operator inbox"
    )
    demo.add_argument(
        "--fault-at", type=float, default=30.0, metavar="S",
        help="laser-cut-01 faults S seconds after the start (default %(default)g)",
    )
    demo.add_argument("--fault-for", type=float, default=60.0, metavar="S", help="for S seconds")
    demo.add_argument("--no-fault", action="store_true", help="no staged fault")
    demo.add_argument(
        "--outage-at", type=float, default=90.0, metavar="S",
        help="zone imaging loses power S seconds after the start (default %(default)g)",
    )
    demo.add_argument("--outage-for", type=float, default=90.0, metavar="S", help="for S seconds")
    demo.add_argument("--no-outage", action="store_true", help="no staged zone outage")
    demo.set_defaults(serve=serve)


def serve(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    from pilotline.demo.run import DemoOptions, run_demo  # noqa: PLC0415 - only when it runs

    return run_demo(
        DemoOptions(
            duration_s=args.duration,
            api=args.api,
            mqtt_url=args.mqtt_url,
            influx_url=args.influx_url,
            seed=args.seed,
            workdir=args.workdir,
            live=not args.no_live and sys.stdout.isatty(),
            log_format=args.log_format,
            opcua=not args.no_opcua,
            alerts=not args.no_alerts,
            fault_at_s=None if args.no_fault else args.fault_at,
            fault_for_s=args.fault_for,
            outage_at_s=None if args.no_outage else args.outage_at,
            outage_for_s=args.outage_for,
        )
    )
