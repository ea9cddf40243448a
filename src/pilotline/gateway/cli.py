"""``pilotline``: run, check, demo.

Exit codes: 0 success, 1 a configuration or start-up problem the user must fix, 130 after
Ctrl-C. SIGTERM and SIGINT stop the service cleanly: staged samples are committed and the
outbox flushed for up to ``stop_timeout_s`` (the rest stays durable for the next start).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import structlog

from pilotline import __version__

log = structlog.get_logger("pilotline.cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pilotline",
        description="Turns the idle time of industrial equipment into bookable capacity.",
    )
    parser.add_argument("--version", action="version", version=f"pilotline {__version__}")
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=None,
        help="log rendering (default: the config's log.format, else JSON unless on a terminal)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway service")
    run.add_argument("-c", "--config", type=Path, required=True, help="site configuration YAML")

    check = sub.add_parser("check", help="validate a configuration: exit 0 if good, 1 if not")
    check.add_argument("-c", "--config", type=Path, required=True, help="site configuration YAML")

    browse = sub.add_parser(
        "browse", help="list an OPC UA server's variables with their node ids"
    )
    browse.add_argument("endpoint", help="opc.tcp://host:port")
    browse.add_argument("--depth", type=int, default=10, help="levels below Objects (10)")
    browse.add_argument("--yaml", action="store_true", help="print a `machines:` fragment")
    browse.add_argument(
        "-c", "--config", type=Path, default=None,
        help="take security settings from this configuration's machine on the endpoint",
    )
    browse.add_argument(
        "--pki", type=Path, default=Path("var/opcua-pki"), help="client certificate folder"
    )

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

    args = parser.parse_args(argv)
    if args.command == "check":
        return _check(args.config)
    if args.command == "run":
        return _run(args.config, args.log_format)
    if args.command == "browse":
        return _browse(args.endpoint, args.depth, args.yaml, args.config, args.pki)
    if args.command == "demo":
        from pilotline.demo.run import DemoOptions, run_demo

        options = DemoOptions(
            duration_s=args.duration,
            api=args.api,
            mqtt_url=args.mqtt_url,
            influx_url=args.influx_url,
            seed=args.seed,
            workdir=args.workdir,
            live=not args.no_live and sys.stdout.isatty(),
            log_format=args.log_format,
            opcua=not args.no_opcua,
        )
        return _serve(run_demo(options))
    parser.error(f"unknown command {args.command}")
    return 2  # pragma: no cover - parser.error exits


def _check(path: Path) -> int:
    from pilotline.gateway.config import ConfigError, load_config, summarize

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.issues)} problem(s)", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return 1
    print(summarize(config))
    return 0


def _browse(endpoint: str, depth: int, as_yaml: bool, config: Path | None, pki: Path) -> int:
    from pilotline.collectors.opcua.browse import browse
    from pilotline.gateway.config import ConfigError, load_config

    source = None
    if config is not None:
        try:
            site = load_config(config)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        sources = [m.opcua for _, m in site.machines() if m.opcua and m.opcua.endpoint == endpoint]
        if not sources:
            print(f"{config}: no machine on {endpoint}", file=sys.stderr)
            return 1
        source = sources[0]
        pki = site.store.parent / "opcua-pki"
    try:
        text = asyncio.run(
            browse(endpoint, depth=depth, yaml_fragment=as_yaml, source=source, pki_dir=pki)
        )
    except (OSError, TimeoutError, ValueError) as exc:
        print(f"pilotline browse: cannot browse {endpoint}: {exc or type(exc).__name__}",
              file=sys.stderr)
        return 1
    print(text)
    return 0


def _run(path: Path, log_format: str | None) -> int:
    from pilotline.gateway.config import ConfigError, load_config
    from pilotline.gateway.logs import configure_logging

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: configuration refused, nothing was started", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return 1
    configure_logging(log_format or config.log.format, config.log.level)  # type: ignore[arg-type]

    async def service() -> None:
        from pilotline.gateway.service import Gateway

        await Gateway(config).run()

    return _serve(service())


def _serve(coro: Coroutine[Any, Any, Any]) -> int:
    """Run until done or a signal; the first SIGTERM/SIGINT cancels for a clean stop."""

    async def supervised() -> int:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        received: list[int] = []

        def stop(signum: int) -> None:
            if received:
                return  # already stopping; a second signal changes nothing
            received.append(signum)
            log.info("gateway.stopping", signal=signal.Signals(signum).name)
            task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop, signum)
        try:
            await task
        except asyncio.CancelledError:
            if not received:
                raise
        except (OSError, BaseExceptionGroup) as exc:  # a port in use, an unwritable store...
            failures = exc.subgroup(OSError) if isinstance(exc, BaseExceptionGroup) else exc
            if failures is None:
                raise
            for failure in _leaves(failures):
                log.error("gateway.start_failed", error=str(failure))
            return 1
        return 130 if received and received[0] == signal.SIGINT else 0

    try:
        return asyncio.run(supervised())
    except KeyboardInterrupt:  # a Ctrl-C before the handlers were installed
        return 130


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


if __name__ == "__main__":
    raise SystemExit(main())
