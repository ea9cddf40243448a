"""How a machine may be booked: ``booking:`` under ``defaults:`` (site-wide), under an owner
(its machines) and under a machine (key by key over its owner's), and a machine's planned
``maintenance:`` periods.

A ``booking:`` section sets only the keys it names; a machine's rules are each key from the
most specific section that sets it (machine, then owner, then ``defaults``), else pilotline's
own default (``BookingRules``). Whether the merged rules make sense (a minimum length no
longer than the maximum, lengths on the step's grid, a notice shorter than the horizon, a
quota that fits a booking) is checked on the merged rules of each machine, by
``booking_checks`` on the file's raw data, so the mistake is reported at the key that made
it, with its line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any, Final, Literal

from pydantic import Field, ValidationError, model_validator

from pilotline.collectors.fields import Model, PositiveSeconds, Seconds
from pilotline.gateway.config.charges import Charge
from pilotline.gateway.config.fields import local_epoch_ms, ms
from pilotline.gateway.config.locate import Loc, format_loc
from pilotline.rules.booking import BookingRules
from pilotline.rules.booking.charges import Basis, ChargeRule
from pilotline.rules.booking.reservation import DAY_MS

__all__ = [
    "PERIOD_MS",
    "Booking",
    "Maintenance",
    "Quota",
    "booking_checks",
    "describe_charge",
    "describe_rules",
    "merged_rules",
]

PERIOD_MS: Final = {"day": DAY_MS, "week": 7 * DAY_MS, "month": 30 * DAY_MS}
"""A quota's period; a month is 30 days (periods are counted on a fixed grid from a Monday,
UTC: calendar months differ in length)."""

_DURATION_KEYS: Final = (
    "min_length_s", "max_length_s", "min_notice_s", "horizon_s", "buffer_s", "step_s",
    "hold_s", "early_grace_s", "no_show_grace_s", "late_cancel_s",
)


class Quota(Model):
    """``quota: {hours: 8, per: week}``: the booked hours one tenant may hold on a machine in
    one period."""

    hours: float = Field(ge=0, le=10 * 365 * 24, allow_inf_nan=False)
    """Hours a tenant may book per period; ``0`` lifts a quota set by the owner or the site."""
    per: Literal["day", "week", "month"] = "week"
    """The period: ``day`` (UTC days), ``week`` (from Monday 00:00 UTC) or ``month`` (30 days)."""

    @property
    def quota_ms(self) -> int:
        return round(self.hours * 3_600_000)

    @property
    def period_ms(self) -> int:
        return PERIOD_MS[self.per]


class Booking(Model):
    """``booking:``: what a reservation of a machine must keep. Every key is optional: one not
    set here comes from the owner's ``booking:``, then ``defaults.booking``, then pilotline's
    default (given with each key)."""

    min_length_s: PositiveSeconds | None = None
    """Shortest booking (default 15m); a multiple of ``step_s``."""
    max_length_s: Seconds | None = None
    """Longest booking; ``0`` (the default): no limit. A multiple of ``step_s``."""
    min_notice_s: Seconds | None = None
    """A booking starts at least this long after it is made (default 0)."""
    horizon_s: Seconds | None = None
    """A booking starts at most this far ahead (default 90d); ``0``: no limit."""
    buffer_s: Seconds | None = None
    """Free time kept between two bookings of the machine (default 0), for cleaning or
    changeover."""
    step_s: PositiveSeconds | None = None
    """Bookings start and end on this grid (default 15m, counted from midnight UTC)."""
    approval: bool | None = None
    """The owner approves each booking (``requested`` until then; default false)."""
    hold_s: PositiveSeconds | None = None
    """How long a ``held`` slot waits for its front end to confirm it (default 10m)."""
    quota: Quota | None = None
    """Per tenant: ``{hours: 8, per: week}`` (default: none)."""
    early_grace_s: Seconds | None = None
    """Running this long before the start counts as use of the booking (default 15m)."""
    no_show_grace_s: Seconds | None = None
    """Not running by the start plus this: the booking is a ``no_show`` (default 15m)."""
    late_cancel_s: Seconds | None = None
    """A cancellation closer than this to the start is late (default 1d)."""
    charge: Charge | None = None
    """What a booking costs, key by key over the owner's and the site's (default: nothing;
    config/charges.py)."""

    def overrides(self) -> dict[str, Any]:
        """The ``BookingRules`` fields this section sets, in the core's units."""
        out: dict[str, Any] = {}
        for key in _DURATION_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key.removesuffix("_s") + "_ms"] = ms(value)
        if self.approval is not None:
            out["approval"] = self.approval
        if self.quota is not None:
            out["quota_ms"] = self.quota.quota_ms
            out["quota_period_ms"] = self.quota.period_ms
        return out


class Maintenance(Model):
    """A planned maintenance period of a machine, taken out of its bookable time. A time
    without an offset is the facility's local time."""

    from_: datetime = Field(alias="from")
    """Start, ISO 8601 (``2027-03-27T22:00:00``; without an offset: the site's ``timezone``,
    the first of two readings when the clocks go back)."""
    to: datetime
    """End, after ``from``."""
    reason: str | None = None
    """Why (for operators and owners)."""

    @model_validator(mode="after")
    def _ordered(self) -> Maintenance:
        if self.to <= self.from_:
            raise ValueError("a maintenance period's `to` must come after its `from`")
        return self

    def interval(self, tz: tzinfo) -> tuple[int, int]:
        """``[from, to)`` in epoch milliseconds."""
        return local_epoch_ms(self.from_, tz), local_epoch_ms(self.to, tz)


def merged_rules(layers: Sequence[Booking | None]) -> BookingRules:
    """The rules from ``layers``, most general first (defaults, owner, machine): each key from
    the last layer that sets it, else ``BookingRules``' default."""
    fields: dict[str, Any] = {}
    for layer in layers:
        if layer is not None:
            fields.update(layer.overrides())
    return BookingRules(**fields)


# --------------------------------------------------------------------------- describing


def span(ms_: int) -> str:
    """``90d``, ``1d12h``, ``2h``, ``1h30m``, ``45s``: milliseconds as the file writes them."""
    if ms_ <= 0:
        return "0"
    parts = []
    rest = ms_
    for unit, size in (("d", DAY_MS), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    if rest:
        parts.append(f"{rest}ms")
    return "".join(parts)


def describe_rules(rules: BookingRules) -> str:
    """One short line for ``pilotline check``: ``15m-4h /15m, notice 2h, horizon 90d, ...``."""
    top = span(rules.max_length_ms) if rules.max_length_ms else "any"
    per = {v: k for k, v in PERIOD_MS.items()}.get(rules.quota_period_ms)
    quota = (
        f"quota {span(rules.quota_ms)}/{per or span(rules.quota_period_ms)}"
        if rules.quota_ms
        else "no quota"
    )
    return ", ".join(
        [
            f"{span(rules.min_length_ms)}-{top} /{span(rules.step_ms)}",
            f"notice {span(rules.min_notice_ms)}",
            f"horizon {span(rules.horizon_ms) if rules.horizon_ms else 'none'}",
            f"buffer {span(rules.buffer_ms)}",
            "approval" if rules.approval else "no approval",
            quota,
            f"hold {span(rules.hold_ms)}",
            f"grace -{span(rules.early_grace_ms)}/+{span(rules.no_show_grace_ms)}",
            f"late cancel {span(rules.late_cancel_ms)}",
        ]
    )


# --------------------------------------------------------------------------- cross-checks


_BILLED = {
    Basis.RESERVATION: "of booked time",
    Basis.USE: "of use (running time inside the booking, plus any overrun)",
    Basis.OVERAGE: "of booked time plus any overrun",
    Basis.MAX: "of booked or used time, whichever is more",
}


def describe_charge(rule: ChargeRule, late_cancel_ms: int) -> str:
    """``12.50 EUR per hour of booked time, in steps of 15m, at least 1h; ...``."""
    money = f"{rule.rate_per_hour:.2f} {rule.currency}"
    head = f"{money} per hour {_BILLED[rule.basis]}" if rule.rate_per_hour else "free of charge"
    if rule.rate_per_hour and rule.step_ms:
        head += f", in steps of {span(rule.step_ms)}"
    if rule.rate_per_hour and rule.minimum_ms:
        head += f", at least {span(rule.minimum_ms)}"
    parts = [head]
    if rule.rate_per_hour and rule.basis in (Basis.USE, Basis.MAX) and rule.unused_fraction:
        parts.append(f"booked time not used costs {rule.unused_fraction:g} of the rate")
    if rule.rate_per_hour:
        if rule.no_show_fraction == 1:
            parts.append("a no-show pays its booked time in full")
        elif rule.no_show_fraction:
            parts.append(f"a no-show pays {rule.no_show_fraction:g} of its booked time")
        else:
            parts.append("a no-show pays nothing")
    if rule.late_cancel_fee:
        parts.append(
            f"cancelling later than {span(late_cancel_ms)} before the start: "
            f"{rule.late_cancel_fee:.2f} {rule.currency} (waived when the slot is booked again)"
        )
    return "; ".join(parts)


def booking_checks(data: Mapping[str, Any], found: list[tuple[Loc, str]]) -> None:
    """The merged rules of each machine, checked; a mistake is reported at the key of the most
    specific section among those that set the keys in conflict (an owner's maximum under a
    machine's minimum: at the machine's ``min_length_s``), naming where the other comes from.

    On raw data that may be partly wrong: a key that does not validate is skipped (the models
    report it).
    """
    defaults = data.get("defaults")
    owners = data.get("owners")
    site_layer = _layer(defaults, ("defaults",))
    owner_layers: dict[str, _Layer | None] = {}
    if isinstance(owners, dict):
        for name, owner in owners.items():
            owner_layers[str(name)] = _layer(owner, ("owners", name))
    for here, machine in _machines(data):
        layers = [
            site_layer,
            owner_layers.get(str(machine.get("owner"))),
            _layer(machine, here),
        ]
        for problem in _problems([layer for layer in layers if layer is not None]):
            if problem not in found:  # an owner's or the site's mistake, once
                found.append(problem)


_Layer = tuple[Loc, dict[str, Any]]
"""A ``booking:`` section's place and the ``BookingRules`` fields it sets."""


def _layer(parent: object, here: Loc) -> _Layer | None:
    if not isinstance(parent, dict) or not isinstance(parent.get("booking"), dict):
        return None
    # Key by key, so that one wrong key (the models report it) leaves the others checked.
    fields: dict[str, Any] = {}
    for key, value in parent["booking"].items():
        try:
            fields.update(Booking.model_validate({key: value}).overrides())
        except ValidationError:
            continue
    return (*here, "booking"), fields


def _machines(data: Mapping[str, Any]) -> Iterator[tuple[Loc, dict[str, Any]]]:
    zones = data.get("zones")
    for zi, zone in enumerate(zones if isinstance(zones, list) else []):
        machines = zone.get("machines") if isinstance(zone, dict) else None
        for mi, machine in enumerate(machines if isinstance(machines, list) else []):
            if isinstance(machine, dict):
                yield ("zones", zi, "machines", mi), machine


_KEY_OF: Final = {
    "min_length_ms": "min_length_s", "max_length_ms": "max_length_s",
    "min_notice_ms": "min_notice_s", "horizon_ms": "horizon_s", "step_ms": "step_s",
    "quota_ms": "quota",
}


def _problems(layers: list[_Layer]) -> list[tuple[Loc, str]]:
    rules = BookingRules(**{k: v for _, fields in layers for k, v in fields.items()})
    # Where each field was set: the last (most specific) layer that sets it, or None.
    where: dict[str, Loc | None] = dict.fromkeys(_KEY_OF)
    for loc, fields in layers:
        for field in _KEY_OF:
            if field in fields:
                where[field] = (*loc, _KEY_OF[field])
    found: list[tuple[Loc, str]] = []

    def report(a: str, b: str, message: str) -> None:
        """At ``a``'s key, or ``b``'s when ``b`` was set in a more specific section; the
        other key's place is named when it is elsewhere."""
        placed = [loc for loc in (where[a], where[b]) if loc is not None]
        if not placed:
            return  # pilotline's own defaults agree with each other
        # A longer path is a more specific section: machine > owner > defaults.
        at = max(placed, key=len)
        other = where[b] if at is where[a] else where[a]
        if other is None:
            found.append((at, f"{message} (pilotline's default)"))
        elif other[:-1] != at[:-1]:
            found.append((at, f"{message} ({format_loc(other)})"))
        else:
            found.append((at, message))

    step = rules.step_ms
    if rules.max_length_ms and rules.min_length_ms > rules.max_length_ms:
        report(
            "min_length_ms", "max_length_ms",
            f"min_length_s {span(rules.min_length_ms)} is longer than max_length_s "
            f"{span(rules.max_length_ms)}: no booking could keep both",
        )
    if rules.min_length_ms % step:
        report(
            "min_length_ms", "step_ms",
            f"min_length_s {span(rules.min_length_ms)} is not a multiple of step_s "
            f"{span(step)}: bookings start and end on that grid",
        )
    if rules.max_length_ms % step:
        report(
            "max_length_ms", "step_ms",
            f"max_length_s {span(rules.max_length_ms)} is not a multiple of step_s "
            f"{span(step)}: bookings start and end on that grid",
        )
    if rules.horizon_ms and rules.min_notice_ms >= rules.horizon_ms:
        report(
            "min_notice_ms", "horizon_ms",
            f"min_notice_s {span(rules.min_notice_ms)} is not shorter than horizon_s "
            f"{span(rules.horizon_ms)}: no start could keep both",
        )
    if rules.quota_ms and rules.quota_ms < rules.min_length_ms:
        report(
            "quota_ms", "min_length_ms",
            f"the quota of {span(rules.quota_ms)} is shorter than min_length_s "
            f"{span(rules.min_length_ms)}: no booking would fit in it",
        )
    return found
