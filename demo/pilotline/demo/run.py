"""``pilotline demo``: a simulated pilot line, a private broker, the gateway, one command.

Most simulated machines publish over a real Mosquitto (started here on a free loopback port
unless ``--mqtt-url`` names one); three (Machinery, PackML and MTConnect vocabularies) are
served by a real asyncua OPC UA server in another process, secured with Basic256Sha256
SignAndEncrypt, with the certificate exchange an operator would do done here. The real
gateway collects both into the embedded store, and the terminal shows where capacity is
while the API serves the same picture.

Alerts: the site configuration carries alert rules and one channel of each kind (webhook,
e-mail, MQTT), all delivered to the demo's operator inbox (demo/inbox.py), whose arrivals
show under the table and land in ``<workdir>/inbox.jsonl``. So that they show within
minutes, the demo stages two incidents (demo/plant.py ``Incident``), timed from its start:
one machine faults (``--fault-at``, default 30 s, for 60 s: one alert, then its resolution)
and a whole zone loses power (``--outage-at``, default 90 s, for 90 s: one grouped message
per channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog
import yaml
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pilotline.collectors.opcua.security import client_identity
from pilotline.demo.board_guide import board_guide
from pilotline.demo.bookings import (
    APPROVAL_OWNER,
    DEMO_BOOKING,
    TENANTS,
    Board,
    book,
    guide,
    plan,
)
from pilotline.demo.broker import BrokerUnavailableError, MosquittoBroker, free_port
from pilotline.demo.inbox import Arrival, Inbox
from pilotline.demo.opcua_server import DEMO_MACHINES, demo_nodes
from pilotline.demo.plant import Incident
from pilotline.demo.plant import Plant as SimPlant
from pilotline.demo.publisher import publish_plant
from pilotline.demo.site import demo_site_yaml
from pilotline.gateway.booking_cli import print_statement
from pilotline.gateway.clock import wall_clock_ms
from pilotline.gateway.config import ConfigError, load_config
from pilotline.gateway.logs import configure_logging
from pilotline.gateway.service import Gateway
from pilotline.gateway.service.usage import Statement, statement
from pilotline.gateway.store.tokens import Role
from pilotline.rules import MachineView, State
from pilotline.rules.booking import Status

log = structlog.get_logger("pilotline.demo")

STATE_STYLE = {
    State.RUNNING: "green",
    State.IDLE: "bold cyan",
    State.DOWN: "bold red",
    State.MAINTENANCE: "yellow",
    State.OFFLINE: "dim",
}

SITE = "demo-pilot"
FAULT_MACHINE = "laser-cut-01"
"""The machine the demo faults on purpose: photonics, away from the zone that loses power."""
OUTAGE_ZONE = "imaging"
INBOX_LINES = 8
"""Arrivals shown under the live table."""
DAY_MS = 86_400_000


@dataclass
class DemoOptions:
    duration_s: float | None = None
    api: str = "127.0.0.1:8080"
    mqtt_url: str | None = None
    influx_url: str | None = None
    seed: int = 7
    workdir: Path = Path("var/demo")
    live: bool = True
    log_format: str | None = None
    opcua: bool = True
    alerts: bool = True
    # Staged incidents, in seconds from the start of the demo; None: not staged.
    fault_at_s: float | None = 30.0
    fault_for_s: float = 60.0
    outage_at_s: float | None = 90.0
    outage_for_s: float = 90.0

    def incidents(self, start_ms: int) -> list[Incident]:
        out = []
        if self.fault_at_s is not None:
            at = start_ms + round(self.fault_at_s * 1000)
            out.append(Incident(FAULT_MACHINE, "down", at, at + round(self.fault_for_s * 1000)))
        if self.outage_at_s is not None:
            at = start_ms + round(self.outage_at_s * 1000)
            end = at + round(self.outage_for_s * 1000)
            out.append(Incident(OUTAGE_ZONE, "offline", at, end))
        return out


class _Feed:
    """The inbox's arrivals for the console: the last few under the live table, or a printed
    line each without it."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.lines: deque[str] = deque(maxlen=INBOX_LINES)
        encoding = getattr(sys.stdout, "encoding", None) or "ascii"
        try:
            "📨".encode(encoding)
            self.mark = "📨"
        except (UnicodeEncodeError, LookupError):
            self.mark = ">"

    def __call__(self, arrival: Arrival) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(arrival.received_ms / 1000))
        line = f"{stamp} {arrival.line(self.mark)}"
        if self.live:
            self.lines.append(line)
        else:
            print(line, flush=True)


async def run_demo(opts: DemoOptions) -> None:
    # Absolute: paths in the generated configuration are read relative to its own folder.
    opts.workdir = opts.workdir.resolve()
    opts.workdir.mkdir(parents=True, exist_ok=True)
    if opts.live:
        # The live table owns the terminal; log lines go to a file beside the store.
        log_path = opts.workdir / "demo.log"
        configure_logging("json", stream=log_path.open("a", encoding="utf-8"))
    else:
        configure_logging(opts.log_format or "auto")  # type: ignore[arg-type]

    started_ms = wall_clock_ms()  # the staged incidents' origin
    broker: MosquittoBroker | None = None
    mqtt_url = opts.mqtt_url
    if mqtt_url is None:
        try:
            broker = MosquittoBroker(datadir=opts.workdir / "mosquitto").start()
        except BrokerUnavailableError as exc:
            print(f"pilotline demo: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        mqtt_url = broker.url
    try:
        # Start the simulated schedules an hour ago, so the line is mid-shift when the demo
        # opens: some machines running, some idle, a job ending soon.
        incidents = opts.incidents(started_ms)
        sim = SimPlant(seed=opts.seed, start_ms=started_ms - 3_600_000, incidents=incidents)
        config_path = opts.workdir / "pilotline.yaml"
        feed = _Feed(opts.live)
        async with contextlib.AsyncExitStack() as stack:
            inbox: Inbox | None = None
            if opts.alerts:
                inbox = await stack.enter_async_context(
                    Inbox(
                        opts.workdir / "inbox.jsonl",
                        mqtt_url=mqtt_url,
                        topic_prefix=f"pilotline/{SITE}/alerts",
                        on_arrival=feed,
                    )
                )
            text = demo_site_yaml(
                sim,
                mqtt_url=mqtt_url,
                store=opts.workdir / "demo.db",
                api=opts.api,
                site=SITE,
                influx_url=opts.influx_url,
                # idle time is offered after 30 s, so capacity shows within the first minute
                min_idle_s=30,
                alerts=None if inbox is None else inbox.channels,
                booking=DEMO_BOOKING,
                approving_owner=APPROVAL_OWNER,
            )
            if opts.opcua:
                endpoint = stack.enter_context(_opcua_server(opts.workdir, opts.seed, incidents))
                text = _serve_over_opcua(text, endpoint)
            config_path.write_text(text)
            # the same line again, to look ahead for the bookings made at the start
            probe = SimPlant(seed=opts.seed, start_ms=started_ms - 3_600_000, incidents=incidents)
            await _run_site(opts, sim, config_path, mqtt_url, inbox, feed, incidents, probe)
    finally:
        if broker is not None:
            broker.close()


async def _run_site(  # noqa: PLR0917 - the demo's parts, built by run_demo
    opts: DemoOptions,
    sim: SimPlant,
    config_path: Path,
    mqtt_url: str,
    inbox: Inbox | None,
    feed: _Feed,
    incidents: Sequence[Incident],
    probe: SimPlant,
) -> None:
    try:
        config = load_config(config_path)
    except ConfigError as exc:  # a bug in the demo itself; say so plainly
        print(f"pilotline demo: generated configuration refused:\n{exc}", file=sys.stderr)
        raise SystemExit(1) from None
    gateway = Gateway(config)
    tokens = _demo_tokens(gateway, opts.workdir)
    token_file = tokens["operator"]
    board = Board(wall_clock_ms())
    booking_lines = _book(gateway, opts, probe, tokens)
    log.info(
        "demo.started",
        mqtt=mqtt_url,
        api=f"http://{opts.api}",
        config=str(config_path),
        inbox=None if inbox is None else str(inbox.path),
        incidents=[str(i) for i in incidents],
    )
    if not opts.live:
        opcua = sum(m.opcua is not None for _, m in config.machines())
        print(
            f"pilotline demo: {len(sim.machines)} machines, {opcua} over OPC UA "
            f"(Basic256Sha256 SignAndEncrypt), the others over MQTT ({mqtt_url}); "
            f"API on http://{opts.api} (try /api/capacity with "
            f"Authorization: Bearer $(cat {token_file})); config in {config_path}",
            flush=True,
        )
        if inbox is not None:
            print(f"pilotline demo: {_staged(opts, inbox)}", flush=True)
    for line in [*board_guide(opts.api, tokens), *booking_lines]:
        print(f"pilotline demo: {line}" if not line.startswith(" ") else line, flush=True)
    async with asyncio.TaskGroup() as tasks:
        gateway_task = tasks.create_task(gateway.run(), name="gateway")
        publisher = tasks.create_task(
            publish_plant(sim, mqtt_url, interval_s=1.0), name="demo-plant"
        )
        show = tasks.create_task(_show(gateway, opts, inbox, feed, board), name="demo-display")
        if opts.duration_s is not None:
            await asyncio.sleep(opts.duration_s)
            board.refresh(gateway)  # the store closes with the gateway: the last figures now
            usage = _usage(gateway, board.since_ms)
            for task in (publisher, show, gateway_task):
                task.cancel()
    _print_table(gateway, Console(width=max(Console().width, 100)))
    Console(width=max(Console().width, 120)).print(board.table())
    if opts.duration_s is not None:
        print_statement(usage, gateway.config.tz, "the demo's bookings")


def _usage(gateway: Gateway, since_ms: int) -> Statement:
    """The usage statement of the bookings made since the demo started, as
    ``pilotline booking statement`` prints it (the same function as ``GET /api/usage``)."""
    now = wall_clock_ms()
    owners = {m.id: m.owner for _, m in gateway.config.machines()}
    return statement(gateway.store.reservations(), gateway.config, owners,
                     gateway.bookings.changes, from_ms=since_ms - DAY_MS, to_ms=now + 2 * DAY_MS,
                     now_ms=now, keep=lambda res: res.created_ms >= since_ms)


def _book(
    gateway: Gateway, opts: DemoOptions, probe: SimPlant, tokens: dict[str, Path]
) -> list[str]:
    """The bookings made at the start (demo/bookings.py), and what to paste to make more:
    lines for the console."""
    now = wall_clock_ms()
    opcua = set(DEMO_MACHINES) if opts.opcua else set()
    machines = [m for m in probe.machines if m.id not in opcua]
    candidates = [m.id for m in machines if m.owner != APPROVAL_OWNER]
    approving = [m.id for m in probe.machines if m.owner == APPROVAL_OWNER]
    rules = gateway.config.booking_rules(candidates[0]) if candidates else None
    made = [] if rules is None else book(
        gateway, plan(probe, candidates, approving, now, rules), now
    )
    hour = 3_600_000
    start = (now // hour + 2) * hour
    spec = next((m for m in machines if m.id == candidates[-1]), None) if candidates else None
    example = None if spec is None else (
        spec.id, start, start + hour // 2, spec.capabilities[0]
    )
    paths = {who: str(path) for who, path in tokens.items()}
    tenant = paths[f"tenant {TENANTS[0]}"]
    lines = guide(opts.api, paths, tenant, example)
    for res in made:
        slot = f"{_local(res.start_ms)}-{_local(res.end_ms)}"
        what = res.purpose.removeprefix("demo: ")
        lines.append(f"booked: {res.tenant} on {res.machine} {slot}: {res.status.value} ({what})")
        if res.status is Status.REQUESTED:
            owner = paths[f"owner {APPROVAL_OWNER}"]
            lines.append(
                f'  curl -s -X POST -H "Authorization: Bearer $(cat {owner})" '
                f"http://{opts.api}/api/reservations/{res.id}/approve   # the owner says yes"
            )
    return lines


def _local(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000))


def _demo_tokens(gateway: Gateway, workdir: Path) -> dict[str, Path]:
    """Fresh demo tokens for each run (an operator's, one per tenant, the approving owner's),
    in files only this user reads; returns their paths by who holds them (``operator``,
    ``tenant demo-smallco``...). Tokens of earlier runs are revoked."""
    tokens = gateway.store.tokens()
    now_ms = wall_clock_ms()
    for info in tokens.list():
        if info.revoked_ms is None and info.name.startswith("demo-"):
            tokens.revoke(info.name, now_ms=now_ms)
    suffix = f"{now_ms:x}"
    holders = (
        ("operator", Role.OPERATOR, None, "operator.token"),
        (f"tenant {TENANTS[0]}", Role.TENANT, TENANTS[0], "tenant.token"),
        (f"tenant {TENANTS[1]}", Role.TENANT, TENANTS[1], "tenant-labco.token"),
        (f"owner {APPROVAL_OWNER}", Role.OWNER, APPROVAL_OWNER, "owner.token"),
    )
    paths = {}
    for who, role, subject, name in holders:
        token = tokens.create(f"demo-{role}-{subject or 'site'}-{suffix}", role, subject,
                              now_ms=now_ms)
        path = workdir / name
        # Written beside and renamed, so a reader never sees an empty or partial token.
        partial = path.with_suffix(".token.partial")
        partial.unlink(missing_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(token + "\n")
        partial.replace(path)
        paths[who] = path
    return paths


def _staged(opts: DemoOptions, inbox: Inbox) -> str:
    """What the operator is about to see, and where the notifications land."""
    return f"alerts (webhook, e-mail, MQTT) arrive in {inbox.path}; {_incidents_text(opts)}"


def _incidents_text(opts: DemoOptions) -> str:
    parts = []
    if opts.fault_at_s is not None:
        parts.append(f"{FAULT_MACHINE} faults at +{opts.fault_at_s:g} s for {opts.fault_for_s:g} s")
    if opts.outage_at_s is not None:
        outage = f"+{opts.outage_at_s:g} s for {opts.outage_for_s:g} s"
        parts.append(f"zone {OUTAGE_ZONE} loses power at {outage}")
    return "; ".join(parts) if parts else "no staged incidents"


@contextmanager
def _opcua_server(workdir: Path, seed: int, incidents: Sequence[Incident] = ()) -> Iterator[str]:
    """A secured asyncua server playing the DEMO_MACHINES, trusted both ways."""
    port = free_port()
    server_pki = workdir / "opcua-server-pki"
    staged = [arg for incident in incidents for arg in ("--incident", str(incident))]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pilotline.demo.opcua_server", "--port", str(port),
         "--secure", "--pki", str(server_pki), "--seed", str(seed), *staged],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "READY opc.tcp://..." once it listens
        if not line.startswith("READY"):
            raise RuntimeError(f"the demo OPC UA server did not start (exit {proc.poll()})")
        endpoint = line.split()[1]
        # The exchange an operator makes once: the gateway trusts the server's certificate,
        # the server trusts the gateway's (generated once and kept in the store's folder).
        gateway_pki = workdir / "opcua-pki"
        (gateway_pki / "trusted").mkdir(parents=True, exist_ok=True)
        shutil.copy(server_pki / "server" / "cert.der", gateway_pki / "trusted" / "demo.der")
        own = client_identity(gateway_pki)
        (server_pki / "trusted-clients").mkdir(parents=True, exist_ok=True)
        shutil.copy(own.certificate, server_pki / "trusted-clients" / "pilotline.der")
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _serve_over_opcua(site_yaml: str, endpoint: str) -> str:
    """Move the DEMO_MACHINES from MQTT to the OPC UA server in the site configuration."""
    site = yaml.safe_load(site_yaml)
    for zone in site["zones"]:
        for machine in zone["machines"]:
            if machine["id"] not in DEMO_MACHINES:
                continue
            del machine["mqtt"]
            machine["opcua"] = {
                "endpoint": endpoint,
                "nodes": demo_nodes(machine["id"]),
                "security_policy": "Basic256Sha256",
                "security_mode": "SignAndEncrypt",
                "state_model": DEMO_MACHINES[machine["id"]][2],
            }
            machine["state"] = {"signal": "state"}
    return yaml.safe_dump(site, sort_keys=False, default_flow_style=None)


async def _show(
    gateway: Gateway, opts: DemoOptions, inbox: Inbox | None, feed: _Feed, board: Board
) -> None:
    if not opts.live:
        # a line per booking whose status changed, each second; capacity every 10 s
        for turn in itertools.count(1):
            await asyncio.sleep(1)
            for row in board.refresh(gateway):
                stamp = time.strftime("%H:%M:%S")
                print(f"{stamp} booking {row.line()}", flush=True)
            if turn % 10:
                continue
            views = gateway.plant.view()
            log.info(
                "demo.capacity",
                available=[v.id for v in views if v.available],
                idle=[v.id for v in views if v.state is State.IDLE],
                running=sum(v.state is State.RUNNING for v in views),
            )
    board.refresh(gateway)
    screen = _screen(gateway, opts, inbox, feed, board)
    with Live(screen, refresh_per_second=2, screen=False) as live:
        while True:
            await asyncio.sleep(1)
            board.refresh(gateway)
            live.update(_screen(gateway, opts, inbox, feed, board))


def _screen(
    gateway: Gateway, opts: DemoOptions, inbox: Inbox | None, feed: _Feed, board: Board
) -> Group:
    """The machines, the bookings, then the inbox: where it is and its last few arrivals."""
    parts: list[RenderableType] = [_table(gateway, opts), board.table()]
    if inbox is not None:
        parts.append(Text(f"operator inbox ({inbox.path}):", style="bold"))
        lines = list(feed.lines) or [f"(nothing yet; {_incidents_text(opts)})"]
        parts.extend(Text(f"  {line}") for line in lines)
    return Group(*parts)


def _table(gateway: Gateway, opts: DemoOptions) -> Table:
    views = gateway.plant.view()
    now = gateway.plant.now_ms or wall_clock_ms()
    available = sum(v.offered for v in views)
    table = Table(
        title=f"pilotline demo: {available} of {len(views)} machines bookable now",
        caption=f"API http://{opts.api}/api/capacity (token: {opts.workdir}/operator.token)"
        " · Ctrl-C to stop",
    )
    via = {m.id: m.source for _, m in gateway.config.machines()}
    for column in ("zone", "machine", "via", "owner", "state", "for", "capacity"):
        table.add_column(column)
    for v in sorted(views, key=lambda v: (v.zone, v.id)):
        zone, machine, *rest = _row(v, now)
        table.add_row(zone, machine, via.get(v.id, ""), *rest)
    return table


def _row(v: MachineView, now_ms: int) -> tuple[str, str, str, str, str, str]:
    held = "" if v.since_ms is None else _duration((now_ms - v.since_ms) / 1000)
    if v.offered:
        capacity = f"[bold cyan]bookable[/] (idle {_duration(v.idle_for_s)})"
    elif v.state is State.IDLE:
        capacity = f"idle {_duration(v.idle_for_s)}, not yet offered"
    else:
        capacity = ""
    style = STATE_STYLE[v.state]
    return v.zone, v.id, v.owner, f"[{style}]{v.state.value}[/]", held, capacity


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _print_table(gateway: Gateway, console: Console) -> None:
    console.print(_table(gateway, DemoOptions(api=gateway.config.api.listen)))
