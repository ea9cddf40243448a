"""``pilotline booking list|show|cancel|statement``: bookings for operators, on the store file.

The store is SQLite in WAL mode, so these run beside a running gateway: reads see its last
commit, and ``cancel`` is one ordinary store transaction (``Reservations.cancel``, waiting
for the gateway's write lock as long as the busy timeout), recorded ``by: cli:<user>``.
``statement`` prints the figures of ``GET /api/usage`` (the same function computes both,
service/usage.py); metered from the state history in the store (the gateway's last commit).
Times are shown in the site's time zone; ``--from``/``--to`` take epoch ms or ISO 8601
with a zone.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from pilotline.gateway.config import SiteConfig
    from pilotline.gateway.service.usage import Statement, UsageLine
    from pilotline.gateway.store import Store

__all__ = ["add_parser", "run"]

_STATUSES = ("held", "requested", "confirmed", "active", "completed", "cancelled",
             "rejected", "expired", "no_show", "preempted")


def add_parser(sub: Any) -> None:
    """``booking`` and its actions on the ``pilotline`` parser's subcommands."""
    booking = sub.add_parser("booking", help="list, show, cancel bookings; usage statements")
    actions = booking.add_subparsers(dest="action", required=True, metavar="ACTION")

    def with_config(name: str, **kw: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, **kw)
        parser.add_argument("-c", "--config", type=Path, required=True,
                            help="site configuration YAML")
        return parser

    listing = with_config("list", help="bookings overlapping [--from, --to), by start")
    listing.add_argument("--machine", default=None)
    listing.add_argument("--tenant", default=None)
    listing.add_argument("--status", action="append", choices=_STATUSES, default=None,
                         help="only these (repeat for several)")
    listing.add_argument("--from", dest="from_", default=None, help="epoch ms or ISO 8601")
    listing.add_argument("--to", default=None, help="epoch ms or ISO 8601")

    show = with_config("show", help="one booking: its history and its metered use")
    show.add_argument("id")

    cancel = with_config("cancel", help="cancel a held, requested or confirmed booking")
    cancel.add_argument("id")
    cancel.add_argument("--note", default="", help="why (kept in its history)")

    statement = with_config(
        "statement", help="the usage statement of the bookings starting in [--from, --to)"
    )
    who = statement.add_mutually_exclusive_group()
    who.add_argument("--tenant", default=None, help="one tenant's bookings")
    who.add_argument("--owner", default=None, help="the bookings on one owner's machines")
    statement.add_argument("--from", dest="from_", default=None,
                           help="epoch ms or ISO 8601 (default: 30 days before --to)")
    statement.add_argument("--to", default=None, help="epoch ms or ISO 8601 (default: now)")
    statement.add_argument("--csv", action="store_true",
                           help="the lines as CSV, as GET /api/usage?format=csv gives them")


class _RefusedError(Exception):
    """A message for stderr, exit 1."""


def run(args: argparse.Namespace) -> int:
    from pilotline.gateway.config import ConfigError, load_config
    from pilotline.gateway.store import Store, StoreError

    try:
        config = load_config(args.config, check_files=False)
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.issues)} problem(s)", file=sys.stderr)
        print(str(exc), file=sys.stderr)
        return 1
    if not config.store.exists():
        print(f"pilotline booking: no store at {config.store} (has the gateway run?)",
              file=sys.stderr)
        return 1
    try:
        store = Store(config.store)
    except (StoreError, OSError) as exc:
        print(f"pilotline booking: cannot open the store: {exc}", file=sys.stderr)
        return 1
    try:
        with store:
            action = {"list": _list, "show": _show, "cancel": _cancel,
                      "statement": _statement}[args.action]
            action(args, config, store)
    except _RefusedError as exc:
        print(f"pilotline booking: {exc}", file=sys.stderr)
        return 1
    return 0


# -- the actions ------------------------------------------------------------------------------


def _list(args: argparse.Namespace, config: SiteConfig, store: Store) -> None:
    from pilotline.rules.booking import Status

    statuses = None if args.status is None else {Status(s) for s in args.status}
    found = store.reservations().list(
        machine=args.machine, tenant=args.tenant, from_ms=_time(args.from_, "--from"),
        to_ms=_time(args.to, "--to"), statuses=statuses,
    )
    tz = config.tz
    rows = [[r.id, r.machine, r.tenant, r.status.value, _local(r.start_ms, tz),
             _local(r.end_ms, tz), r.purpose] for r in found]
    _print_table(["id", "machine", "tenant", "status", f"start ({tz.key})", "end", "purpose"],
                 rows)
    print(f"{len(rows)} booking(s)")


def _show(args: argparse.Namespace, config: SiteConfig, store: Store) -> None:
    from pilotline.gateway.clock import wall_clock_ms
    from pilotline.gateway.service.usage import statement

    book = store.reservations()
    res = book.get(args.id)
    if res is None:
        raise _RefusedError(f"no booking {args.id!r}")
    tz = config.tz
    now_ms = wall_clock_ms()
    print(f"booking {res.id}: {res.status.value}")
    print(f"  machine  {res.machine}")
    print(f"  tenant   {res.tenant}")
    print(f"  time     {_local(res.start_ms, tz)} - {_local(res.end_ms, tz)} ({tz.key})")
    if res.purpose:
        print(f"  purpose  {res.purpose}")
    if res.predecessor:
        print(f"  replaces {res.predecessor}")
    print("history:")
    _print_table(["at", "status", "by", "note"],
                 [[_local(at, tz), s.value, by, note] for s, at, by, note in book.events(res.id)],
                 indent="  ")
    found = statement(book, config, _owners(config), _changes(config, store),
                      from_ms=res.start_ms, to_ms=res.start_ms + 1, now_ms=now_ms,
                      keep=lambda r: r.id == res.id)
    if not found.lines:
        print("metered use: none (a hold that never became a booking)")
        return
    line = found.lines[0].row()
    print("metered use" + (" (provisional, up to now)" if line["provisional"] else "") + ":")
    for key in ("booked_min", "used_min", "idle_min", "down_min", "maintenance_min",
                "offline_min", "unused_min", "overrun_min", "billed_min"):
        print(f"  {key.removesuffix('_min'):<12}{_num(line[key]):>10} min")
    flags = [f for f in ("late_cancel", "waived") if line[f]]
    print(f"  {'charge':<12}{_num(line['charge']):>10} {line['currency']}"
          + (f"  ({', '.join(flags)})" if flags else ""))


def _cancel(args: argparse.Namespace, config: SiteConfig, store: Store) -> None:
    from pilotline.gateway.clock import wall_clock_ms
    from pilotline.gateway.store.reservations import ReservationError

    by = f"cli:{getpass.getuser()}"
    try:
        res = store.reservations().cancel(args.id, wall_clock_ms(), by, args.note)
    except ReservationError as exc:
        raise _RefusedError(str(exc)) from None
    print(f"{res.id} cancelled (by {by})")


def _statement(args: argparse.Namespace, config: SiteConfig, store: Store) -> None:
    from pilotline.gateway.clock import wall_clock_ms
    from pilotline.gateway.service.usage import (
        DEFAULT_SPAN_MS,
        MAX_SPAN_MS,
        csv_text,
        statement,
    )

    now_ms = wall_clock_ms()
    to_ms = _time(args.to, "--to")
    to_ms = now_ms if to_ms is None else to_ms
    from_ms = _time(args.from_, "--from")
    from_ms = to_ms - DEFAULT_SPAN_MS if from_ms is None else from_ms
    if to_ms <= from_ms:
        raise _RefusedError("--to must come after --from")
    if to_ms - from_ms > MAX_SPAN_MS:
        raise _RefusedError("a statement spans at most 93 days")
    owners = _owners(config)
    if args.owner is not None and args.owner not in set(owners.values()):
        raise _RefusedError(f"no machine in {args.config} has the owner {args.owner!r}")
    found = statement(store.reservations(), config, owners, _changes(config, store),
                      from_ms=from_ms, to_ms=to_ms, now_ms=now_ms, tenant=args.tenant,
                      owner=args.owner)
    if args.csv:
        sys.stdout.write(csv_text(line.row() for line in found.lines))
        return
    whose = f"tenant {args.tenant}" if args.tenant else (
        f"owner {args.owner}" if args.owner else "all bookings")
    print_statement(found, config.tz, whose)


# -- helpers ----------------------------------------------------------------------------------


def _owners(config: SiteConfig) -> dict[str, str]:
    return {m.id: m.owner for _, m in config.machines()}


def _changes(config: SiteConfig, store: Store) -> Any:
    """``BookingLifecycle.changes`` over the store alone: the same confirmed changes the
    gateway meters with, as of its last commit."""
    from pilotline.gateway.clock import wall_clock_ms
    from pilotline.gateway.service.bookings import BookingLifecycle

    lifecycle = BookingLifecycle(store=store, rules_of=config.booking_rules,
                                 machines=_owners(config), views=list, clock_ms=wall_clock_ms)
    return lifecycle.changes


def _time(text: str | None, name: str) -> int | None:
    from pilotline.gateway.timefmt import TimeFormatError, parse_time

    if text is None:
        return None
    try:
        return parse_time(text)
    except TimeFormatError as exc:
        raise _RefusedError(f"{name}: {exc}") from None


def _local(ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:.0f}"


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "") -> None:
    """Columns as wide as their widest cell; numbers right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], int | float) for row in rows) and bool(rows)
               for i in range(len(headers))]
    for row in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric,
                                                                          strict=True)]
        print((indent + "  ".join(parts)).rstrip())


def print_statement(found: Statement, tz: ZoneInfo, whose: str) -> None:
    """The statement as a table with its totals (``pilotline booking statement``, and the
    demo at its end)."""
    print(f"usage statement, {whose}: bookings starting {_local(found.from_ms, tz)} - "
          f"{_local(found.to_ms, tz)} ({tz.key})")
    rows = [_statement_row(line, tz) for line in found.lines]
    _print_table(["id", "machine", "tenant", "status", "start", "booked", "used", "idle",
                  "down", "offline", "unused", "overrun", "billed", "charge", "", "flags"], rows)
    totals = found.totals()
    charges = ", ".join(f"{_num(c['amount'])} {c['currency']}" for c in totals["charges"])
    print(f"{totals['bookings']} booking(s); minutes booked {_num(totals['booked_min'])}, "
          f"used {_num(totals['used_min'])}, unused {_num(totals['unused_min'])}, overrun "
          f"{_num(totals['overrun_min'])}, billed {_num(totals['billed_min'])}; "
          f"charges {charges or '0'}" + (" (provisional)" if totals["provisional"] else ""))


def _statement_row(line: UsageLine, tz: ZoneInfo) -> list[Any]:
    row = line.row()
    flags = [name for name in ("late_cancel", "waived", "provisional") if row[name]]
    return [
        row["id"], row["machine"], row["tenant"], row["status"],
        _local(line.reservation.start_ms, tz),
        *(_Num(row[k]) for k in ("booked_min", "used_min", "idle_min", "down_min",
                                 "offline_min", "unused_min", "overrun_min", "billed_min",
                                 "charge")),
        row["currency"], ",".join(flags),
    ]


class _Num(float):
    """A figure printed as ``_num`` does, right-aligned in tables."""

    def __str__(self) -> str:
        return _num(self)
