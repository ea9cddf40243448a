"""The demo's bookings: what tenants book at its start, and how the console shows them.

The simulation is deterministic (plant.py), so the demo can look ahead: ``plan`` steps a
second copy of the simulated line (same seed, same origin, same staged incidents) through the
next minutes and picks

- ``used``: a machine idle now whose next job starts soon; a tenant books the slot it starts
  in (its start on the grid at or after the job's start, within the early grace), ending
  before the job does where it can: the machine runs, the booking becomes ``active``, then
  ``completed`` with an overrun;
- ``no_show``: a machine that stays idle through the booking: ``no_show``;
- ``requested``: an hour on a machine whose owner approves each booking (``APPROVAL_OWNER``):
  ``requested`` until the owner says yes (its token is written beside the others).

Only machines published from the simulation the demo holds are candidates (the OPC UA
server runs its own copy, started at another instant). ``book`` makes the reservations
through the store's one-transaction ``request`` and ``confirm``, as the API would; the
rules are ``DEMO_BOOKING``, short so that a 45-second demo shows a booking start and one
missed (a real site books in quarter hours).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import structlog
from rich.table import Table

from pilotline.demo.plant import Plant
from pilotline.gateway.service import Gateway
from pilotline.gateway.store.reservations import ReservationError
from pilotline.gateway.timefmt import iso
from pilotline.rules.booking import LIVE, BookingRules, Request, Reservation, Status, allowed
from pilotline.rules.booking.intervals import subtract

__all__ = [
    "APPROVAL_OWNER",
    "DEMO_BOOKING",
    "TENANTS",
    "Board",
    "Planned",
    "book",
    "demo_rules",
    "guide",
    "plan",
]

log = structlog.get_logger("pilotline.demo")

DEMO_BOOKING: Final[Mapping[str, Any]] = {
    "step_s": 10,
    "min_length_s": 60,
    "early_grace_s": 60,
    "no_show_grace_s": 20,
    "hold_s": 300,
    "charge": {"basis": "max", "rate_per_hour": 240, "no_show_fraction": 0.5,
               "currency": "EUR"},
}
"""``defaults.booking`` of the demo site: a 10 s grid, bookings of a minute or more, a run
that starts up to a minute early counts, not running 20 s into the booking is a no-show;
charged 240 EUR an hour (4 a minute, so the demo's short bookings cost something) for the
larger of booked and used time, a no-show half its booked time."""
APPROVAL_OWNER: Final = "visiotech"
"""The owner that approves each booking of its machines (``owners.visiotech.booking``)."""
TENANTS: Final = ("demo-smallco", "demo-labco")
"""The demo's tenants: ``tenant.token`` is the first's, ``tenant-labco.token`` the second's."""

LOOK_AHEAD_MS: Final = 10 * 60_000
"""How far ``plan`` looks for a job to book."""
SETTLED_MS: Final = 10_000
"""A job ``used`` books starts at least this long after the demo (after the gateway's first
sample of the machine: the gateway cannot tell a run it sees begin from one it joins), and a
machine ``no_show`` books stays idle this long past the grace."""

Kind = Literal["used", "no_show", "requested"]


@dataclass(frozen=True, slots=True)
class Planned:
    kind: Kind
    machine: str
    tenant: str
    start_ms: int
    end_ms: int
    purpose: str


def demo_rules() -> BookingRules:
    """``DEMO_BOOKING`` in the core's units (what ``SiteConfig.booking_rules`` gives)."""
    return BookingRules(
        step_ms=DEMO_BOOKING["step_s"] * 1000,
        min_length_ms=DEMO_BOOKING["min_length_s"] * 1000,
        early_grace_ms=DEMO_BOOKING["early_grace_s"] * 1000,
        no_show_grace_ms=DEMO_BOOKING["no_show_grace_s"] * 1000,
        hold_ms=DEMO_BOOKING["hold_s"] * 1000,
    )


def _ceil(ms: int, step: int) -> int:
    return -(-ms // step) * step


def _floor(ms: int, step: int) -> int:
    return ms // step * step


def _states(probe: Plant, machines: Sequence[str], now_ms: int) -> dict[str, list[str]]:
    """Each machine's true state every second of ``[now, now + LOOK_AHEAD_MS)``."""
    out: dict[str, list[str]] = {m: [] for m in machines}
    for t in range(now_ms, now_ms + LOOK_AHEAD_MS, 1000):
        probe.payloads(t)
        for m in machines:
            out[m].append(probe.true_state(m))
    return out


def plan(
    probe: Plant,
    candidates: Sequence[str],
    approving: Sequence[str],
    now_ms: int,
    rules: BookingRules,
) -> list[Planned]:
    """The demo's bookings (see the module doc), made at ``now_ms``; ``probe``: a copy of the
    simulated line not yet advanced past ``now_ms``; ``candidates``: machines the demo
    publishes whose bookings need no approval; ``approving``: machines whose owner approves.
    A booking no machine fits is left out."""
    step = rules.step_ms
    states = _states(probe, candidates, now_ms)
    out: list[Planned] = []
    starts: list[tuple[int, str, int]] = []  # (job start, machine, job end) of idle machines
    for machine, seen in states.items():
        first = next((i for i, s in enumerate(seen) if s != "idle"), None)
        if first is None or seen[first] != "running" or first * 1000 < SETTLED_MS:
            continue
        length = next((i for i, s in enumerate(seen[first:]) if s != "running"), None)
        end = now_ms + (first + length) * 1000 if length is not None else None
        starts.append((now_ms + first * 1000, machine, end or now_ms + LOOK_AHEAD_MS))
    if starts:
        run, machine, run_end = min(starts)
        start = _ceil(run, step)  # the job starts inside the early grace
        end = max(start + rules.min_length_ms, _floor(run_end - SETTLED_MS, step))
        out.append(Planned("used", machine, TENANTS[0], start, end,
                           "demo: a tenant's job, run by the machine"))
    # the earliest slot some other machine stays idle through, from the early grace (or
    # now) to past its end
    used = {p.machine for p in out}
    length = max(rules.min_length_ms, rules.no_show_grace_ms)
    first_start = _ceil(now_ms + 3000, step)
    for start in range(first_start, now_ms + LOOK_AHEAD_MS // 2, step):
        since = max(0, (start - rules.early_grace_ms - now_ms) // 1000)
        until = (start + length + SETTLED_MS - now_ms) // 1000 + 1
        idle = [m for m, seen in states.items()
                if m not in used and all(s == "idle" for s in seen[since:until])]
        if idle:
            out.append(Planned("no_show", idle[0], TENANTS[1], start, start + length,
                               "demo: booked, never used"))
            break
    if approving:
        start = _ceil(now_ms + 3_600_000, 3_600_000)
        out.append(Planned("requested", approving[0], TENANTS[0], start, start + 3_600_000,
                           "demo: awaiting the owner's approval"))
    return out


def book(gateway: Gateway, planned: Iterable[Planned], now_ms: int) -> list[Reservation]:
    """The planned bookings, each requested and confirmed as a tenant would through the API
    (``requested`` where the owner approves). First, the live bookings of an earlier demo run
    that can still be cancelled are: a fresh run starts from a free line."""
    store = gateway.store.reservations()
    for old in store.list(statuses={Status.HELD, Status.REQUESTED, Status.CONFIRMED}):
        if old.tenant in TENANTS:
            store.cancel(old.id, now_ms, "demo", "a new demo run")
    specs = {m.id: m for m in gateway.plant_spec.machines}
    made = []
    for p in planned:
        rules = gateway.config.booking_rules(p.machine)
        offered = subtract(
            allowed(specs[p.machine].policy, now_ms, p.end_ms + 86_400_000),
            gateway.config.maintenance(p.machine),
        )
        booked = store.request(
            Request(p.machine, p.tenant, p.start_ms, p.end_ms), rules, offered, now_ms,
            purpose=p.purpose,
        )
        if booked.reservation is None:  # a booking of an earlier run still holds the slot
            log.info("demo.booking_skipped", kind=p.kind, machine=p.machine,
                     verdict=type(booked.verdict).__name__)
            continue
        try:
            res = store.confirm(booked.reservation.id, now_ms, approval=rules.approval,
                                by=p.tenant)
        except ReservationError:  # not held any more: cannot happen within one call
            continue
        log.info("demo.booked", kind=p.kind, reservation=res.id, machine=res.machine,
                 tenant=res.tenant, start=iso(res.start_ms), end=iso(res.end_ms),
                 status=res.status.value)
        made.append(res)
    return made


def guide(
    api: str,
    tokens: Mapping[str, str],
    tenant_token: str,
    example: tuple[str, int, int, str] | None,
) -> list[str]:
    """What to paste to book as a front end does: the tokens (who -> file), and curl for
    the offers and a reservation as the tenant of ``tenant_token`` (``example``: a free slot,
    machine, start, end and one of its capabilities)."""
    auth = f'-H "Authorization: Bearer $(cat {tenant_token})"'
    lines = [
        f"booking: API http://{api}; tokens: "
        + ", ".join(f"{who} {path}" for who, path in tokens.items()),
    ]
    if example is None:
        lines.append(f"  curl -s {auth} 'http://{api}/api/offers'")
        return lines
    machine, start, end, capability = example
    body = (
        f'{{"machine": "{machine}", "start": "{iso(start)}", "end": "{iso(end)}", '
        f'"purpose": "trial run"}}'
    )
    return [
        *lines,
        f"  curl -s {auth} 'http://{api}/api/offers?capability={capability}'",
        f"  curl -s {auth} -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1'"
        f" -d '{body}' http://{api}/api/reservations",
        f"  curl -s -X POST {auth} http://{api}/api/reservations/ID/confirm"
        "   # ID: the answer's id",
    ]


# --------------------------------------------------------------------------- the console


def _clock(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000))


def _mmss(ms: int) -> str:
    seconds = max(0, ms // 1000)
    return f"{seconds // 60}m{seconds % 60:02d}s"


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    tenant: str
    machine: str
    slot: str
    status: str
    running: str
    overrun: str

    def line(self) -> str:
        return f"{self.id} {self.tenant} on {self.machine} {self.slot}: {self.status}"


_METERED: Final = frozenset({Status.ACTIVE, Status.COMPLETED, Status.NO_SHOW, Status.PREEMPTED})


class Board:
    """The bookings the console shows: every reservation ending after the demo started (the
    demo's, and any made through the API meanwhile), with what the machine metered."""

    def __init__(self, since_ms: int, limit: int = 8) -> None:
        self.since_ms = since_ms
        self.limit = limit
        self.rows: list[Row] = []
        self._seen: dict[str, str] = {}

    def refresh(self, gateway: Gateway) -> list[Row]:
        """Reads the store (open: call it while the gateway runs); returns the rows whose
        status changed since the last call."""
        found = gateway.store.reservations().list(from_ms=self.since_ms)
        shown = [r for r in found if r.status in LIVE or r.status in _METERED][: self.limit]
        rows = []
        for res in shown:
            running = overrun = ""
            if res.status in _METERED:
                usage = gateway.bookings.usage(res.id)
                if usage is not None:
                    running, overrun = _mmss(usage.running_ms), _mmss(usage.overrun_ms)
            slot = f"{_clock(res.start_ms)}-{_clock(res.end_ms)}"
            rows.append(Row(res.id, res.tenant, res.machine, slot, res.status.value,
                            running, overrun))
        changed = [r for r in rows if self._seen.get(r.id) != r.status]
        self._seen.update((r.id, r.status) for r in rows)
        self.rows = rows
        return changed

    def table(self) -> Table:
        table = Table(title="bookings", title_justify="left")
        for column in ("reservation", "tenant", "machine", "slot", "status", "running",
                       "overrun"):
            table.add_column(column)
        for r in self.rows:
            table.add_row(r.id, r.tenant, r.machine, r.slot, r.status, r.running, r.overrun)
        return table
