"""What a booking costs: ``charge:`` inside a ``booking:`` section (``defaults``, an owner, a
machine), merged key by key like the booking rules (machine, then owner, then
``defaults``, else ``ChargeRule``'s default). The rules in plain words:
rules/pilotline/rules/booking/charges.py.

Defaults: by booked time (``basis: reservation``) at rate 0, so a site that sets nothing
charges nothing; no rounding step, no minimum; unused time free (``unused_fraction: 0``); a
no-show pays its booked time in full (``no_show_fraction: 1``); no late-cancel fee; ``EUR``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from pilotline.collectors.fields import Model, Seconds
from pilotline.gateway.config.fields import ms
from pilotline.rules.booking.charges import Basis, ChargeRule

__all__ = ["Charge", "merged_charge"]

_DURATION_KEYS = ("step_s", "minimum_s")
_PLAIN_KEYS = ("rate_per_hour", "unused_fraction", "no_show_fraction", "late_cancel_fee",
               "currency")


class Charge(Model):
    """``charge:``: how a booking of the machine is charged. Every key is optional: one not
    set here comes from the owner's ``booking.charge``, then ``defaults.booking.charge``,
    then pilotline's default (given with each key)."""

    basis: Literal["reservation", "use", "overage", "max"] | None = None
    """What is billed: ``reservation`` (booked time; the default), ``use`` (running time
    inside the booking plus its overrun), ``overage`` (booked time plus overrun), ``max``
    (the larger of ``reservation`` and ``use``)."""
    rate_per_hour: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)
    """Price of one billed hour, in ``currency`` (default 0: bookings are free)."""
    step_s: Seconds | None = None
    """The billed time is rounded up to a multiple of this (default 0: not rounded)."""
    minimum_s: Seconds | None = None
    """A charged booking is billed at least this long (default 0)."""
    unused_fraction: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    """With ``basis: use`` or ``max``: the fraction of the rate charged for booked time the
    machine did not run (default 0)."""
    no_show_fraction: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    """A ``no_show`` is charged this fraction of its booked time (default 1)."""
    late_cancel_fee: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)
    """Flat fee for cancelling a confirmed booking later than ``late_cancel_s`` before its
    start; waived when another booking reuses the slot (default 0)."""
    currency: str | None = Field(
        default=None, min_length=1, max_length=16, pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$"
    )
    """The currency's label on statements (default ``EUR``): ``EUR``, ``USD``, ``credits``."""

    def overrides(self) -> dict[str, Any]:
        """The ``ChargeRule`` fields this section sets, in the core's units."""
        out: dict[str, Any] = {}
        if self.basis is not None:
            out["basis"] = Basis(self.basis)
        for key in _DURATION_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key.removesuffix("_s") + "_ms"] = ms(value)
        for key in _PLAIN_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def merged_charge(layers: Sequence[Charge | None]) -> ChargeRule:
    """The rule from ``layers``, most general first (defaults, owner, machine): each key from
    the last layer that sets it, else ``ChargeRule``'s default."""
    fields: dict[str, Any] = {}
    for layer in layers:
        if layer is not None:
            fields.update(layer.overrides())
    return ChargeRule(**fields)
