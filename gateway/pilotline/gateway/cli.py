"""``pilotline``: run, check, demo.

Exit codes: 0 success, 1 a configuration or start-up problem the user must fix (another
gateway running on the same store among them), 130 after Ctrl-C. SIGTERM and SIGINT stop
the service cleanly: staged samples are committed and the outbox flushed for up to
``stop_timeout_s`` (the rest stays durable for the next start).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Coroutine, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from pilotline.gateway import __version__, feed_command
from pilotline.gateway.shard import Shard, ShardError, parse_shard

if TYPE_CHECKING:
    from pilotline.gateway.config import SiteConfig
    from pilotline.gateway.store import Store

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
    run.add_argument("--shard", type=_shard_arg, default=None, help=SHARD_HELP)

    check = sub.add_parser("check", help="validate a configuration: exit 0 if good, 1 if not")
    check.add_argument("-c", "--config", type=Path, default=None, help="site configuration YAML")
    check.add_argument(
        "--shard", type=_shard_arg, default=None, help=f"{SHARD_HELP}; lists what it owns"
    )
    check.add_argument(
        "--no-files", action="store_true",
        help="do not check that secret, certificate and key files exist (a machine that does "
        "not have them yet); they are listed as not checked",
    )
    described = check.add_mutually_exclusive_group()
    described.add_argument(
        "--schema", action="store_true",
        help="print the JSON Schema of the configuration file (for editors), no -c needed",
    )
    described.add_argument(
        "--reference", action="store_true",
        help="print the configuration reference (docs/configuration.md), no -c needed",
    )

    browse = sub.add_parser(
        "browse",
        help="list an OPC UA server's variables with their node ids, or the Sparkplug B "
        "machines born on an MQTT broker",
        description="opc.tcp://: list the server's variables (--yaml: a machines: fragment). "
        "mqtt:// or mqtts://: listen passively for Sparkplug B births for --seconds and print "
        "the machines born as a machines: fragment (nothing is published).",
    )
    browse.add_argument("endpoint", help="opc.tcp://host:port, or mqtt[s]://host:port")
    browse.add_argument("--depth", type=int, default=10, help="levels below Objects (10)")
    browse.add_argument("--yaml", action="store_true", help="print a `machines:` fragment")
    browse.add_argument(
        "-c", "--config", type=Path, default=None,
        help="take security settings from this configuration's machine on the endpoint",
    )
    browse.add_argument(
        "--pki", type=Path, default=Path("var/opcua-pki"), help="client certificate folder"
    )
    browse.add_argument(
        "--seconds", type=float, default=10.0, help="Sparkplug: how long to listen (10)"
    )
    browse.add_argument(
        "--group", action="append", default=[],
        help="Sparkplug: only this group id (repeatable; default every group)",
    )

    token = sub.add_parser("token", help="create, list or revoke API tokens")
    token_sub = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = token_sub.add_parser(
        "create", help="create a token and print it once (only its hash is kept)"
    )
    create.add_argument("-c", "--config", type=Path, required=True, help="site configuration")
    create.add_argument("--name", required=True, help="who or what uses it, unique")
    create.add_argument(
        "--role", required=True, choices=["operator", "owner", "tenant", "scraper"]
    )
    create.add_argument("--owner", default=None, help="an owner token's owner id")
    create.add_argument("--company", default=None, help="a tenant token's company id")
    create.add_argument("--shard", type=_shard_arg, default=None, help=SHARD_STORE_HELP)
    listing = token_sub.add_parser("list", help="list tokens (names and roles, never tokens)")
    listing.add_argument("-c", "--config", type=Path, required=True, help="site configuration")
    listing.add_argument("--shard", type=_shard_arg, default=None, help=SHARD_STORE_HELP)
    revoke = token_sub.add_parser("revoke", help="revoke a token by name, effective at once")
    revoke.add_argument("name")
    revoke.add_argument("-c", "--config", type=Path, required=True, help="site configuration")
    revoke.add_argument("--shard", type=_shard_arg, default=None, help=SHARD_STORE_HELP)

    feed_command.register(sub, _shard_arg, SHARD_STORE_HELP)

    copy = sub.add_parser(
        "backup",
        help="copy the store consistently, also while the gateway runs",
        description="Copy the configuration's store with SQLite's backup API: a consistent "
        "copy as of one commit, taken read-only beside a running gateway (which goes on "
        "writing). Restore: docs/operator-guide.md, 'Back up and restore the store'.",
    )
    copy.add_argument("-c", "--config", type=Path, required=True, help="site configuration")
    copy.add_argument(
        "--to", type=Path, required=True,
        help="the copy's file, or an existing folder (then <store>-<UTC time>.db in it)",
    )
    copy.add_argument("--overwrite", action="store_true", help="replace --to if it exists")
    copy.add_argument("--shard", type=_shard_arg, default=None, help=SHARD_STORE_HELP)

    replay = sub.add_parser(
        "replay",
        help="recompute states, windows and capacity from recorded samples",
        description="Feed recorded samples through the rules in event time and write the "
        "resulting states, idle windows and capacity to a fresh store (and, with --influx, "
        "to the configuration's InfluxDB). INPUT is a JSON-lines file (one object per line: "
        '{"machine": ..., "ts": ..., <signals>}) or a line-protocol file of telemetry points; '
        "string state signals are not in telemetry, so machines that use one replay as "
        "offline from line protocol. Without INPUT, --influx-url and --db read the telemetry "
        "measurement of [--from, --to) over InfluxQL.",
    )
    replay.add_argument("-c", "--config", type=Path, required=True, help="site configuration YAML")
    replay.add_argument("input", type=Path, nargs="?", help="a .jsonl or line-protocol file")
    replay.add_argument("--from", dest="from_", default=None, help="epoch ms or ISO 8601")
    replay.add_argument(
        "--to", default=None, help="epoch ms or ISO 8601 (default: the last sample's time)"
    )
    replay.add_argument(
        "--out-store", type=Path, default=Path("var/replay.db"), help="new store (%(default)s)"
    )
    replay.add_argument("--overwrite", action="store_true", help="replace --out-store if it exists")
    replay.add_argument(
        "--influx", action="store_true", help="also write the points to the config's InfluxDB"
    )
    replay.add_argument(
        "--telemetry", action="store_true", help="with --influx, also write telemetry points"
    )
    replay.add_argument("--influx-url", default=None, help="read telemetry from this InfluxDB")
    replay.add_argument("--db", default=None, help="its database (InfluxQL /query)")
    replay.add_argument(
        "--shard", type=_shard_arg, default=None,
        help="replay only this shard's machines, as its gateway would (K/N)",
    )

    from pilotline.gateway import booking_cli

    booking_cli.add_parser(sub)

    # Commands that other parts of the distribution add (the demo) register themselves as
    # entry points, so the gateway never imports them.
    for command in entry_points(group="pilotline.commands"):
        command.load()(sub)

    args = parser.parse_args(argv)
    if args.command == "check":
        if args.schema or args.reference:
            return _describe_config(schema=args.schema)
        if args.config is None:
            check.error("the following arguments are required: -c/--config")
        return _check(args.config, args.shard, check_files=not args.no_files)
    if args.command == "run":
        return _run(args.config, args.log_format, args.shard)
    if args.command == "token":
        return _token(args)
    if args.command == "feed":
        return feed_command.run(args, _shard_store)
    if args.command == "replay":
        return _replay(args)
    if args.command == "backup":
        return _backup(args)
    if args.command == "booking":
        return booking_cli.run(args)
    if args.command == "browse" and args.endpoint.startswith(("mqtt://", "mqtts://")):
        return _browse_sparkplug(args.endpoint, args.seconds, args.group, args.config)
    if args.command == "browse":
        return _browse(args.endpoint, args.depth, args.yaml, args.config, args.pki)
    if (serve := getattr(args, "serve", None)) is not None:
        return _serve(serve(args))
    parser.error(f"unknown command {args.command}")
    return 2  # pragma: no cover - parser.error exits


SHARD_HELP = "be shard K of N gateways of this site, like 2/4 (overrides the file's shard:)"
SHARD_STORE_HELP = "the store of this shard's gateway (K/N; overrides the file's shard:)"


def _shard_arg(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ShardError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cut(config: SiteConfig, shard: Shard | None, path: Path) -> SiteConfig | None:
    """``config`` restricted to ``shard`` (else its ``shard:`` key); None after saying why
    it cannot be (a shard that owns no machine)."""
    from pilotline.gateway.config.sharding import restrict

    try:
        return restrict(config, shard)
    except ShardError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return None


def _describe_config(*, schema: bool) -> int:
    if schema:
        from pilotline.gateway.config.json_schema import schema_text

        sys.stdout.write(schema_text())
    else:
        from pilotline.gateway.config.reference import reference_text

        sys.stdout.write(reference_text())
    return 0


def _check(path: Path, shard: Shard | None = None, *, check_files: bool = True) -> int:
    from pilotline.gateway.config import ConfigError, ConfigIssue, load_config, summarize
    from pilotline.gateway.config.errors import render_issue
    from pilotline.gateway.config.files import named_files
    from pilotline.gateway.config.sharding import describe

    warnings: list[ConfigIssue] = []
    try:
        config = load_config(path, check_files=check_files, warnings=warnings)
    except ConfigError as exc:
        print(f"{path}: {len(exc.issues)} problem(s)", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return 1
    for warning in warnings:  # worth fixing, but the configuration works: still exit 0
        print(f"warning: {render_issue(warning, str(path))}", file=sys.stderr)
    cut = _cut(config, shard, path)
    if cut is None:
        return 1
    if cut.applied_shard:
        for line in describe(cut, parse_shard(cut.applied_shard), config):
            print(line)
    print(summarize(cut))
    unchecked = [] if check_files else named_files(cut)
    if unchecked:
        print(f"  not checked (--no-files): {len(unchecked)} file(s) the gateway will read")
        for where, file in unchecked:
            print(f"    {where}: {file}")
    return 0


def _shard_store(
    config_path: Path, shard: Shard | None, command: str
) -> tuple[SiteConfig, Store] | None:
    """``config_path`` cut to ``shard`` and its gateway's store (each shard's gateway has its
    own), opened; None after saying why not (``pilotline token``, ``feed``)."""
    from pilotline.gateway.config import ConfigError, load_config
    from pilotline.gateway.store import Store, StoreError

    try:
        whole = load_config(config_path, check_files=False)
    except ConfigError as exc:
        print(f"{config_path}: {len(exc.issues)} problem(s)", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return None
    config = _cut(whole, shard, config_path)
    if config is None:
        return None
    try:
        return config, Store(config.store)
    except (StoreError, OSError) as exc:
        print(f"pilotline {command}: cannot open the store: {exc}", file=sys.stderr)
        return None


def _token(args: argparse.Namespace) -> int:
    from pilotline.gateway.clock import wall_clock_ms
    from pilotline.gateway.store.tokens import Role, TokenError

    opened = _shard_store(args.config, args.shard, "token")
    if opened is None:
        return 1
    config, store = opened
    now_ms = wall_clock_ms()
    with store:
        tokens = store.tokens()
        if args.action == "list":
            for info in tokens.list():
                status = "active" if info.revoked_ms is None else "revoked"
                print(f"{info.name}\t{info.role}\t{info.subject or '-'}\t{status}")
            return 0
        if args.action == "revoke":
            if not tokens.revoke(args.name, now_ms=now_ms):
                print(f"pilotline token: no active token named {args.name!r}", file=sys.stderr)
                return 1
            print(f"revoked {args.name}", file=sys.stderr)
            return 0
        role = Role(args.role)
        subject = args.owner if role is Role.OWNER else args.company
        if (role is Role.OWNER and args.company) or (role is Role.TENANT and args.owner):
            print("pilotline token: --owner is for owner tokens, --company for tenant tokens",
                  file=sys.stderr)
            return 1
        owners = {m.owner for _, m in config.machines()}
        if role is Role.OWNER and args.owner not in owners:
            print(f"pilotline token: no machine in {args.config} has the owner {args.owner!r} "
                  f"(owners: {', '.join(sorted(owners))})", file=sys.stderr)
            return 1
        try:
            secret = tokens.create(args.name, role, subject, now_ms=now_ms)
        except TokenError as exc:
            print(f"pilotline token: {exc}", file=sys.stderr)
            return 1
    print(secret)
    print(f"token {args.name!r} ({role}{f' {subject}' if subject else ''}) created: it is shown "
          "this once; only its hash is kept", file=sys.stderr)
    return 0


def _backup(args: argparse.Namespace) -> int:
    from pilotline.gateway.clock import wall_clock_ms
    from pilotline.gateway.config import ConfigError, load_config
    from pilotline.gateway.store import StoreError
    from pilotline.gateway.store.backup import backup

    try:
        whole = load_config(args.config, check_files=False)
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.issues)} problem(s)", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return 1
    config = _cut(whole, args.shard, args.config)  # each shard's gateway has its own store
    if config is None:
        return 1
    try:
        copied = backup(config.store, args.to, now_ms=wall_clock_ms(), overwrite=args.overwrite)
    except (StoreError, OSError) as exc:
        print(f"pilotline backup: {exc}", file=sys.stderr)
        return 1
    print("\n".join(copied.describe()))
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


def _browse_sparkplug(url: str, seconds: float, groups: list[str], config: Path | None) -> int:
    from pilotline.collectors.mqtt.config import MqttBrokerConfig
    from pilotline.collectors.sparkplug.browse import listen, render
    from pilotline.gateway.config import ConfigError, load_config

    if seconds <= 0:
        print("pilotline browse: --seconds must be positive", file=sys.stderr)
        return 1
    try:
        broker = MqttBrokerConfig(url=url)
    except ValueError as exc:
        print(f"pilotline browse: {exc}", file=sys.stderr)
        return 1
    if config is not None:  # the site's broker settings: user, password file, TLS
        try:
            site = load_config(config)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        if site.mqtt is None or site.mqtt.url != url:
            print(f"{config}: its mqtt.url is not {url}", file=sys.stderr)
            return 1
        broker = site.mqtt
    try:
        heard = listen(broker, groups, seconds)
    except (OSError, TimeoutError, ValueError) as exc:
        print(f"pilotline browse: cannot listen on {url}: {exc or type(exc).__name__}",
              file=sys.stderr)
        return 1
    sys.stdout.write(render(heard, url, seconds))
    return 0


def _replay(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from pilotline.gateway.config import ConfigError, load_config
    from pilotline.gateway.logs import configure_logging
    from pilotline.gateway.replay import (
        Input,
        ReplayError,
        read_file,
        read_influx,
        replay,
    )
    from pilotline.gateway.store import StoreError
    from pilotline.gateway.store.lock import StoreLock
    from pilotline.gateway.timefmt import TimeFormatError, iso, parse_time

    def parse(text: str | None, name: str) -> int | None:
        if text is None:
            return None
        try:
            return parse_time(text)
        except TimeFormatError as e:
            raise ReplayError(f"{name} {e}") from None

    try:
        whole = load_config(args.config, check_files=args.influx)
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.issues)} problem(s)", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return 1
    config = _cut(whole, args.shard, args.config)
    if config is None:
        return 1
    configure_logging(args.log_format or "auto", "warning")
    tty = sys.stderr.isatty()
    console = Console(stderr=True)
    try:
        from_ms, to_ms = parse(args.from_, "--from"), parse(args.to, "--to")
        # A store another process holds (a gateway, a replay) is neither overwritten nor
        # written; replay's own gateway then holds the lock while it writes.
        StoreLock.check(args.out_store)
        if (args.input is None) == (args.influx_url is None):
            raise ReplayError("give an INPUT file, or --influx-url and --db (not both)")
        started = time.perf_counter()
        data: Input
        if args.input is not None:
            data = read_file(args.input, site=config.site)
            source = str(args.input)
        else:
            if args.db is None or from_ms is None or to_ms is None:
                raise ReplayError("--influx-url needs --db, --from and --to")
            data = read_influx(args.influx_url, args.db, from_ms, to_ms, site=config.site)
            source = f"{args.influx_url} db {args.db}"
        read_s = time.perf_counter() - started
        if config.applied_shard:  # other shards' machines are not this gateway's to replay
            owned = {m.id for _, m in config.machines()}
            mine = [s for s in data.samples if s.machine in owned]
            if len(mine) < len(data.samples):
                print(f"shard {config.applied_shard}: left out {len(data.samples) - len(mine)} "
                      "samples of other shards' machines", file=sys.stderr)
            data.samples = mine
        print(f"read {len(data.samples)} samples from {source} in {read_s:.1f} s", file=sys.stderr)
        for reason, count in sorted(data.skipped.items()):
            print(f"  skipped {count} ({reason}), first: {data.first_problem[reason]}",
                  file=sys.stderr)
        if tty:
            with Progress(
                "replay", BarColumn(), MofNCompleteColumn(), "samples", TimeElapsedColumn(),
                console=console, transient=True,
            ) as bar:
                task = bar.add_task("replay", total=max(1, len(data.samples)))
                result = replay(
                    config, data.samples, out_store=args.out_store, from_ms=from_ms,
                    to_ms=to_ms, influx=args.influx, telemetry=args.telemetry,
                    overwrite=args.overwrite,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
        else:
            step = max(1, len(data.samples) // 10)
            last = [0]

            def lines(done: int, total: int) -> None:
                if done - last[0] >= step or done == total:
                    last[0] = done
                    print(f"replay: {done}/{total} samples", file=sys.stderr, flush=True)

            result = replay(
                config, data.samples, out_store=args.out_store, from_ms=from_ms, to_ms=to_ms,
                influx=args.influx, telemetry=args.telemetry, overwrite=args.overwrite,
                progress=lines,
            )
    except (ReplayError, StoreError, OSError) as exc:
        print(f"pilotline replay: {exc}", file=sys.stderr)
        return 1
    rate = result.samples / result.elapsed_s if result.elapsed_s > 0 else 0.0
    events = ", ".join(f"{n} {k}" for k, n in sorted(result.events.items()))
    print(
        f"replayed {result.samples} samples ({iso(result.start_ms)} .. {iso(result.end_ms)}) "
        f"in {result.elapsed_s:.2f} s ({rate:,.0f} samples/s) into {result.store}",
        file=sys.stderr,
    )
    print(f"events: {events or 'none'}", file=sys.stderr)
    if result.outside:
        print(f"  {result.outside} samples outside --from/--to left out", file=sys.stderr)
    for (source_, reason), count in sorted(result.rejected.items()):
        print(f"  rejected by the rules: {count} ({source_}: {reason})", file=sys.stderr)
    if result.stateless:
        print(
            f"warning: no sample carried the state signal of {', '.join(result.stateless)}: "
            "string state signals are not in telemetry (line protocol, InfluxDB), so these "
            "machines stayed offline; replay them from JSON lines",
            file=sys.stderr,
        )
    if result.flushed is False:
        print("pilotline replay: InfluxDB did not take every point; they stay in the outbox of "
              f"{result.store}", file=sys.stderr)
        return 1
    return 0


def _run(path: Path, log_format: str | None, shard: Shard | None = None) -> int:
    from pilotline.gateway.config import ConfigError, load_config
    from pilotline.gateway.logs import configure_logging

    try:
        whole = load_config(path)
    except ConfigError as exc:
        print(f"{path}: configuration refused, nothing was started", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return 1
    config = _cut(whole, shard, path)  # from here on the gateway sees only its machines
    del whole  # with a shard, the other shards' machines need not stay in memory
    if config is None:
        print(f"{path}: nothing was started", file=sys.stderr)
        return 1
    configure_logging(log_format or config.log.format, config.log.level)  # type: ignore[arg-type]

    async def service() -> None:
        from pilotline.gateway.service import Gateway
        from pilotline.gateway.service.systemd import SystemdNotifier

        await Gateway(config, notifier=SystemdNotifier.from_environment()).run()

    return _serve(service())


def _serve(coro: Coroutine[Any, Any, Any]) -> int:
    """Run until done or a signal; the first SIGTERM/SIGINT cancels for a clean stop."""
    from pilotline.gateway.store import StoreError, StoreInUseError

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
        except StoreInUseError as exc:  # another gateway runs on this store: nothing was started
            log.error(
                "gateway.store_in_use",
                store=str(exc.path),
                holder_pid=exc.holder.pid,
                holder_host=exc.holder.host,
                holder_started=exc.holder.started,
                error=str(exc),
            )
            return 1
        except StoreError as exc:  # a store of a newer pilotline, or no store at all
            log.error("gateway.start_failed", error=str(exc))
            return 1
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
