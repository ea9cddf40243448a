"""A machine's booking rules and charge rule as the catalog shows them (``/api/catalog``).

The figures are the ones the gateway applies (``SiteConfig.booking_rules`` and
``charge_rule``: the machine's keys over its owner's over ``defaults``), in seconds, with a
line in plain words: the booking rules as ``pilotline check`` prints them
(``config.booking.describe_rules``), the charge as a person reads a price list. A tenant needs
both before booking: what a booking must keep, and what it costs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from pilotline.gateway.config.booking import PERIOD_MS, describe_charge, describe_rules
from pilotline.rules.booking import BookingRules
from pilotline.rules.booking.charges import ChargeRule

__all__ = ["BookingTerms", "ChargeTerms", "booking_terms", "charge_terms", "describe_charge"]


class QuotaTerms(BaseModel):
    hours: float = Field(description="booked hours one tenant may hold on the machine per period")
    per: Literal["day", "week", "month"] | None = Field(
        description="the period (`month`: 30 days); null: `period_s` only"
    )
    period_s: float


class BookingTerms(BaseModel):
    """What a booking of the machine must keep (null: no limit)."""

    min_length_s: float
    max_length_s: float | None = Field(description="null: no limit")
    step_s: float = Field(description="bookings start and end on this grid (from 00:00 UTC)")
    min_notice_s: float = Field(description="a booking starts at least this long after it is made")
    horizon_s: float | None = Field(description="a booking starts at most this far ahead")
    buffer_s: float = Field(description="kept free between two bookings of the machine")
    approval: bool = Field(description="the owner approves each booking (`requested` until then)")
    hold_s: float = Field(description="a `held` booking waits this long for its confirmation")
    quota: QuotaTerms | None = Field(description="per tenant; null: none")
    early_grace_s: float = Field(description="running this long before the start counts as use")
    no_show_grace_s: float = Field(
        description="not running by the start plus this: the booking is a `no_show`"
    )
    late_cancel_s: float = Field(
        description="a cancellation closer than this to the start is late"
    )
    rules: str = Field(
        description="the same in plain words, as `pilotline check` prints them",
        examples=["1h-4h /15m, notice 2h, horizon 90d, buffer 15m, no approval, quota 8h/week, "
                  "hold 10m, grace -15m/+15m, late cancel 1d"],
    )


class ChargeTerms(BaseModel):
    """What a booking of the machine costs (rules/pilotline/rules/booking/charges.py)."""

    basis: Literal["reservation", "use", "overage", "max"]
    rate_per_hour: float
    currency: str
    step_s: float = Field(description="billed time rounded up to this; 0: not rounded")
    minimum_s: float = Field(description="a charged booking is billed at least this long")
    unused_fraction: float = Field(
        description="of the rate, for booked time the machine did not run (basis use, max)"
    )
    no_show_fraction: float = Field(description="of the booked time's charge, for a no-show")
    late_cancel_fee: float = Field(
        description="flat, for cancelling a confirmed booking later than `late_cancel_s` "
        "before its start; waived when the slot is booked again"
    )
    text: str = Field(
        description="the same in plain words",
        examples=["12.50 EUR per hour of booked time, in steps of 15m, at least 1h; a no-show "
                  "pays its booked time in full; cancelling later than 1d before the start: "
                  "20.00 EUR"],
    )


def _s(ms: int) -> float:
    return ms / 1000


def booking_terms(rules: BookingRules) -> BookingTerms:
    quota = None
    if rules.quota_ms:
        per = {v: k for k, v in PERIOD_MS.items()}.get(rules.quota_period_ms)
        quota = QuotaTerms(hours=rules.quota_ms / 3_600_000, per=per,
                           period_s=_s(rules.quota_period_ms))
    return BookingTerms(
        min_length_s=_s(rules.min_length_ms),
        max_length_s=_s(rules.max_length_ms) if rules.max_length_ms else None,
        step_s=_s(rules.step_ms),
        min_notice_s=_s(rules.min_notice_ms),
        horizon_s=_s(rules.horizon_ms) if rules.horizon_ms else None,
        buffer_s=_s(rules.buffer_ms),
        approval=rules.approval,
        hold_s=_s(rules.hold_ms),
        quota=quota,
        early_grace_s=_s(rules.early_grace_ms),
        no_show_grace_s=_s(rules.no_show_grace_ms),
        late_cancel_s=_s(rules.late_cancel_ms),
        rules=describe_rules(rules),
    )


def charge_terms(rule: ChargeRule, late_cancel_ms: int) -> ChargeTerms | None:
    """The rule, or None where none is set (pilotline's default: bookings cost nothing)."""
    if rule == ChargeRule():
        return None
    return ChargeTerms(
        basis=rule.basis.value,
        rate_per_hour=rule.rate_per_hour,
        currency=rule.currency,
        step_s=_s(rule.step_ms),
        minimum_s=_s(rule.minimum_ms),
        unused_fraction=rule.unused_fraction,
        no_show_fraction=rule.no_show_fraction,
        late_cancel_fee=rule.late_cancel_fee,
        text=describe_charge(rule, late_cancel_ms),
    )
