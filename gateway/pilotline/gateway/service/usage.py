"""Usage statements (issue 15): per booking its metered use and its charge, and the totals.
One computation for ``GET /api/usage`` (api/usage.py) and ``pilotline booking statement``
(booking_cli.py), so both print the same figures; ``usage_line`` gives one booking's line
(what the ``usage`` measurement writes).

A statement covers the bookings that START in ``[from, to)`` (a booking belongs to one
period, never two), of every status except ``held`` and ``expired`` (holds that never
became bookings). Each is metered by the core's ``meter`` from the machine's confirmed state
changes, as ``BookingLifecycle`` reads them (the store's history, plus the plant's current
state when the gateway runs), up to ``now``; its charge is the core's ``charge`` under the
machine's ``booking.charge`` rule (rules/booking/charges.py says the rules in plain words).
A line that can still change is ``provisional``: a booking not ended yet (``requested``,
``confirmed``, ``active``), or one whose overrun is still running.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from pilotline.gateway.service.bookings import metered_until
from pilotline.gateway.store.reservations import Reservations
from pilotline.gateway.timefmt import iso
from pilotline.rules.booking import LIVE, BookingRules, Reservation, Status, Usage, meter
from pilotline.rules.booking.charges import ChargeRule, charge, late_cancel, reused
from pilotline.rules.booking.metering import Change

__all__ = [
    "COLUMNS",
    "DEFAULT_SPAN_MS",
    "LEFT_OUT",
    "MAX_SPAN_MS",
    "Pricing",
    "Statement",
    "UsageLine",
    "cancellation",
    "csv_text",
    "statement",
    "usage_line",
]

DEFAULT_SPAN_MS: Final = 30 * 86_400_000
"""A statement without ``from`` covers the 30 days before ``to`` (default: now)."""
MAX_SPAN_MS: Final = 93 * 86_400_000
"""The widest statement (a quarter): each is metered from the state history when asked."""

LEFT_OUT: Final = frozenset({Status.HELD, Status.EXPIRED})
"""Holds that never became bookings: not on statements."""

METERED: Final = frozenset(
    {Status.CONFIRMED, Status.ACTIVE, Status.COMPLETED, Status.NO_SHOW, Status.PREEMPTED}
)
"""Statuses whose time was the tenant's: metered. Others (cancelled, rejected, requested)
show zero use."""

ChangesOf = Callable[[int, int, Collection[str]], Mapping[str, Sequence[Change]]]
"""``BookingLifecycle.changes``: per machine, its confirmed changes from the one in force at
``from_ms`` up to ``now_ms``."""


class Pricing(Protocol):
    """The configuration's part a statement reads (``SiteConfig`` is one)."""

    def booking_rules(self, machine_id: str) -> BookingRules: ...
    def charge_rule(self, machine_id: str) -> ChargeRule: ...


def _minutes(ms: int) -> float:
    return round(ms / 60_000, 2)


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One booking on a statement; times in epoch ms, figures in milliseconds."""

    reservation: Reservation
    owner: str | None
    usage: Usage
    charge: float
    currency: str
    billed_ms: int
    late_cancel: bool
    waived: bool
    provisional: bool

    @property
    def booked_ms(self) -> int:
        """The booking's length where its time was the tenant's (``METERED``); 0 for one
        cancelled, rejected or still awaiting approval: it held no time of the statement."""
        res = self.reservation
        return res.end_ms - res.start_ms if res.status in METERED else 0

    @property
    def unused_ms(self) -> int:
        """Metered time inside the booking the machine did not run."""
        return self.usage.booked_ms - self.usage.running_ms

    def row(self, *, owner: bool = True) -> dict[str, Any]:
        """The line as the API and the CSV give it (minutes, ISO times); ``owner=False``:
        the owner's name left out (a tenant, where the owner hides it)."""
        res, use = self.reservation, self.usage
        return {
            "id": res.id,
            "machine": res.machine,
            "tenant": res.tenant,
            "owner": self.owner if owner else None,
            "status": res.status.value,
            "start": iso(res.start_ms),
            "end": iso(res.end_ms),
            "booked_min": _minutes(self.booked_ms),
            "used_min": _minutes(use.running_ms),
            "idle_min": _minutes(use.idle_ms),
            "down_min": _minutes(use.down_ms),
            "maintenance_min": _minutes(use.maintenance_ms),
            "offline_min": _minutes(use.offline_ms),
            "unused_min": _minutes(self.unused_ms),
            "overrun_min": _minutes(use.overrun_ms),
            "billed_min": _minutes(self.billed_ms),
            "charge": self.charge,
            "currency": self.currency,
            "late_cancel": self.late_cancel,
            "waived": self.waived,
            "provisional": self.provisional,
        }


COLUMNS: Final = (
    "id", "machine", "tenant", "owner", "status", "start", "end", "booked_min", "used_min",
    "idle_min", "down_min", "maintenance_min", "offline_min", "unused_min", "overrun_min",
    "billed_min", "charge", "currency", "late_cancel", "waived", "provisional",
)
"""The CSV's header row: ``UsageLine.row``'s keys, in order."""

_SUMMED: Final = (
    "booked_min", "used_min", "idle_min", "down_min", "maintenance_min", "offline_min",
    "unused_min", "overrun_min", "billed_min",
)


@dataclass(frozen=True, slots=True)
class Statement:
    from_ms: int
    to_ms: int
    now_ms: int
    lines: tuple[UsageLine, ...] = field(default=())

    def totals(self) -> dict[str, Any]:
        """The minutes summed, and the charges per currency (machines may differ)."""
        rows = [line.row() for line in self.lines]
        out: dict[str, Any] = {"bookings": len(rows)}
        for key in _SUMMED:
            out[key] = round(sum(r[key] for r in rows), 2)
        charges: dict[str, float] = {}
        for line in self.lines:
            charges[line.currency] = round(charges.get(line.currency, 0.0) + line.charge, 2)
        out["charges"] = [{"currency": c, "amount": a} for c, a in sorted(charges.items())]
        out["provisional"] = any(line.provisional for line in self.lines)
        return out


def cancellation(book: Reservations, res: Reservation, rules: BookingRules) -> tuple[bool, bool]:
    """Whether cancelled ``res`` was cancelled late, and whether its slot was reused."""
    history = book.events(res.id)
    before = Status.HELD
    for status, at_ms, _, _ in history:
        if status is Status.CANCELLED:
            if not late_cancel(res, before, at_ms, rules.late_cancel_ms):
                return False, False
            neighbours = book.list(machine=res.machine, from_ms=res.start_ms, to_ms=res.end_ms)
            return True, reused(res, neighbours)
        before = status
    return False, False


def usage_line(
    book: Reservations,
    res: Reservation,
    changes: Sequence[Change],
    now_ms: int,
    *,
    rules: BookingRules,
    rule: ChargeRule,
    owner: str | None,
) -> UsageLine:
    """One booking's line by ``now_ms``: metered from ``changes`` (its machine's confirmed
    changes from the one in force at its start, as ``BookingLifecycle.changes`` gives them),
    charged under ``rule``; ``book`` gives a cancellation's history and its neighbours."""
    until = metered_until(book, res, now_ms)
    usage = meter(res, changes, until) if res.status in METERED else Usage()
    late = was_reused = False
    if res.status is Status.CANCELLED:
        late, was_reused = cancellation(book, res, rules)
    cost = charge(rule, res, usage, late=late, was_reused=was_reused)
    overrunning = usage.overrun_ms > 0 and res.end_ms + usage.overrun_ms >= now_ms
    return UsageLine(
        reservation=res,
        owner=owner,
        usage=usage,
        charge=cost.amount,
        currency=cost.currency,
        billed_ms=cost.billed_ms,
        late_cancel=cost.late_cancel,
        waived=cost.waived,
        provisional=res.status in LIVE or overrunning,
    )


def statement(
    book: Reservations,
    pricing: Pricing,
    owners: Mapping[str, str],
    changes_of: ChangesOf,
    *,
    from_ms: int,
    to_ms: int,
    now_ms: int,
    tenant: str | None = None,
    owner: str | None = None,
    keep: Callable[[Reservation], bool] = lambda _: True,
) -> Statement:
    """The statement of the bookings starting in ``[from_ms, to_ms)``: of ``tenant``, on
    ``owner``'s machines (``owners``: machine -> owner, the configured machines), each
    ``keep`` accepts. A booking of a machine no longer configured is charged nothing (no
    rule applies to it any more) and has no owner."""
    found = [
        res
        for res in book.list(tenant=tenant, from_ms=from_ms, to_ms=to_ms)
        if from_ms <= res.start_ms < to_ms
        and res.status not in LEFT_OUT
        and (owner is None or owners.get(res.machine) == owner)
        and keep(res)
    ]
    # A booking moved or extended lives on in its successor, which starts where the chain
    # did and is metered and charged for it: the predecessor is no line of its own (nor a
    # late cancellation).
    superseded = book.successors([r.id for r in found if r.status is Status.CANCELLED])
    found = [r for r in found if r.id not in superseded]
    metered = [r for r in found if r.status in METERED and r.start_ms < now_ms]
    changes: Mapping[str, Sequence[Change]] = {}
    if metered:
        since = min(r.start_ms for r in metered)
        changes = changes_of(since, now_ms, {r.machine for r in metered})
    lines = []
    for res in found:
        known = res.machine in owners
        lines.append(usage_line(
            book, res, changes.get(res.machine, ()), now_ms,
            rules=pricing.booking_rules(res.machine) if known else BookingRules(),
            rule=pricing.charge_rule(res.machine) if known else ChargeRule(rate_per_hour=0),
            owner=owners.get(res.machine),
        ))
    return Statement(from_ms, to_ms, now_ms, tuple(lines))


_FORMULA: Final = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet runs a cell starting with these as a formula (CSV injection)."""


def _cell(value: object) -> object:
    if isinstance(value, bool):
        return int(value)
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value  # shown as text, never run
    return value


def csv_text(lines: Iterable[dict[str, Any]]) -> str:
    """``lines`` (``UsageLine.row``) as CSV with a header row (``COLUMNS``); flags as 0/1;
    a text cell a spreadsheet would run as a formula is quoted with a leading ``'``."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in lines:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()
