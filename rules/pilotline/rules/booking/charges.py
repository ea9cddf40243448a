"""What a reservation costs: the owner's charge rule applied to its metered use and its status.

Rules, in plain words:
- Booked time is the reservation's length (``end - start``); used time is the machine's
  running time inside it plus the overrun past its end (metering.py); unused time is the
  booked time the machine was measured not running (idle, down, maintenance, offline).
- A ``confirmed``, ``active`` or ``completed`` booking is billed by the rule's ``basis``:
  - ``reservation``: the booked time;
  - ``use``: the used time, plus the unused time at ``unused_fraction`` of the rate;
  - ``overage``: the booked time plus the overrun;
  - ``max``: the larger of what ``reservation`` and ``use`` would bill (with
    ``unused_fraction`` 0: the larger of booked and used time).
  The billed time is rounded UP to the next multiple of ``step_ms`` (0: not rounded), then
  raised to ``minimum_ms``; the charge is that time in hours times ``rate_per_hour``.
- A ``no_show`` is charged ``no_show_fraction`` of what its booked time costs (rounded and
  raised to the minimum as above), whatever the basis.
- A late cancellation (a ``confirmed`` booking cancelled closer to its start than the
  booking rules' ``late_cancel``) costs the flat ``late_cancel_fee``, waived when the slot
  was reused: another live or completed reservation of the machine overlaps its time.
- Anything else costs 0: a cancellation in time, ``held`` and ``requested`` (not yet a
  booking), ``rejected``, ``expired``, and ``preempted`` (the machine was not usable: the
  tenant is not charged for the owner's or the machine's failure).
- A charge is never negative; amounts are rounded to the cent (2 decimals) at the end only.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from pilotline.rules.booking.intervals import overlaps
from pilotline.rules.booking.metering import Usage
from pilotline.rules.booking.reservation import HOUR_MS, LIVE, Reservation, Status

__all__ = ["Basis", "Charge", "ChargeRule", "billed_ms", "charge", "late_cancel", "reused"]


class Basis(enum.Enum):
    RESERVATION = "reservation"
    USE = "use"
    OVERAGE = "overage"
    MAX = "max"


@dataclass(frozen=True, slots=True)
class ChargeRule:
    """An owner's (or a machine's) rule. The defaults charge nothing (rate 0) by booked time."""

    basis: Basis = Basis.RESERVATION
    rate_per_hour: float = 0.0
    step_ms: int = 0  # billed time rounded up to this; 0: not rounded
    minimum_ms: int = 0  # billed at least this
    unused_fraction: float = 0.0  # of the rate, for booked time not used (basis use/max)
    no_show_fraction: float = 1.0  # of the booked time's charge, for a no-show
    late_cancel_fee: float = 0.0  # flat, for a late cancellation of a confirmed booking
    currency: str = "EUR"


@dataclass(frozen=True, slots=True)
class Charge:
    """``amount`` in the rule's ``currency``; ``billed_ms``: the time billed after rounding
    and the minimum (0 for a flat fee or nothing); ``late_cancel``: a late cancellation,
    ``waived`` its fee (the slot was reused)."""

    amount: float
    currency: str
    billed_ms: int = 0
    late_cancel: bool = False
    waived: bool = False


BILLED = frozenset({Status.CONFIRMED, Status.ACTIVE, Status.COMPLETED})
"""Statuses billed by the basis."""

REUSING = LIVE | {Status.COMPLETED}
"""Statuses of another reservation that count as the slot reused."""


def _rounded(ms: float, rule: ChargeRule) -> int:
    """``ms`` rounded up to the step, then raised to the minimum."""
    whole = -int(-ms // 1)  # up to the millisecond: never less than the unrounded time
    step = rule.step_ms
    if step > 0:
        whole = -(-whole // step) * step
    return max(whole, rule.minimum_ms)


def billed_ms(rule: ChargeRule, booked_ms: int, usage: Usage) -> int:
    """The time a booked, confirmed booking is billed under ``rule``'s basis (rounded,
    minimum applied), as full-rate milliseconds."""
    used = usage.running_ms + usage.overrun_ms
    unused = max(0, usage.booked_ms - usage.running_ms)
    by_use = used + rule.unused_fraction * unused
    if rule.basis is Basis.RESERVATION:
        return _rounded(booked_ms, rule)
    if rule.basis is Basis.OVERAGE:
        return _rounded(booked_ms + usage.overrun_ms, rule)
    if rule.basis is Basis.USE:
        return _rounded(by_use, rule)
    return max(_rounded(booked_ms, rule), _rounded(by_use, rule))


def _money(ms: float, rule: ChargeRule) -> float:
    return max(0.0, round(ms / HOUR_MS * rule.rate_per_hour, 2))


def late_cancel(res: Reservation, cancelled_from: Status, at_ms: int, late_cancel_ms: int) -> bool:
    """Whether ``res``, cancelled at ``at_ms`` from ``cancelled_from``, was cancelled late:
    a confirmed booking, less than ``late_cancel_ms`` before its start (or after it)."""
    return cancelled_from is Status.CONFIRMED and res.start_ms - at_ms < late_cancel_ms


def reused(res: Reservation, others: Iterable[Reservation]) -> bool:
    """Whether another live or completed reservation of ``res``'s machine overlaps its time."""
    return any(
        o.id != res.id
        and o.machine == res.machine
        and o.status in REUSING
        and overlaps((o.start_ms, o.end_ms), (res.start_ms, res.end_ms))
        for o in others
    )


def charge(
    rule: ChargeRule,
    res: Reservation,
    usage: Usage,
    *,
    late: bool = False,
    was_reused: bool = False,
) -> Charge:
    """What ``res`` (in its current status, metered as ``usage``) costs under ``rule``.
    ``late``: a cancellation that was late (``late_cancel``); ``was_reused``: its slot was
    reused (``reused``)."""
    booked = res.end_ms - res.start_ms
    if res.status in BILLED:
        billed = billed_ms(rule, booked, usage)
        return Charge(_money(billed, rule), rule.currency, billed)
    if res.status is Status.NO_SHOW:
        billed = _rounded(booked, rule)
        fraction = min(1.0, max(0.0, rule.no_show_fraction))
        return Charge(_money(billed * fraction, rule), rule.currency, billed)
    if res.status is Status.CANCELLED and late:
        fee = 0.0 if was_reused else max(0.0, round(rule.late_cancel_fee, 2))
        return Charge(fee, rule.currency, 0, late_cancel=True, waived=was_reused)
    return Charge(0.0, rule.currency)
