"""When idle time may be offered: a machine's own, its owner's or the site default weekly
hours and blackouts, and what an owner lets tenants see.

Offering fails closed: a machine is offered only under a policy that applies to it (its
own ``offering:``, its owner's, or ``defaults.offering``: ``SiteConfig.offering_of``);
without one it is never offered. ``offering: always`` says "any time" in plain words.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from datetime import time as dt_time
from typing import Annotated, Any, Final, Literal

from pydantic import BeforeValidator, Field, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from pilotline.collectors.fields import Model, Seconds
from pilotline.gateway.config.booking import Booking
from pilotline.gateway.config.fields import local_epoch_ms, ms
from pilotline.gateway.config.interlock import InterlockPolicy
from pilotline.rules.policy import OfferingPolicy, WeeklySlot

__all__ = ["Blackout", "DayName", "Offering", "OwnerPolicy", "WeeklyHours"]

_DAY_NAMES: Final = {
    "mon": (0,), "tue": (1,), "wed": (2,), "thu": (3,), "fri": (4,), "sat": (5,), "sun": (6,),
    "weekdays": (0, 1, 2, 3, 4), "weekend": (5, 6), "daily": (0, 1, 2, 3, 4, 5, 6),
}
DayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun", "weekdays", "weekend", "daily"]


def _clock_time(value: Any) -> Any:
    """``"18:00"``; YAML 1.1 reads an unquoted 18:00 as the base-60 number 1080."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        value = f"{value // 60:02d}:{value % 60:02d}"
    if isinstance(value, str):
        hours, sep, minutes = value.partition(":")
        if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
            raise ValueError(f"a time of day is HH:MM, like \"18:00\", got {value!r}")
        if not (0 <= int(hours) <= 24 and int(minutes) < 60) or (
            int(hours) == 24 and int(minutes) != 0
        ):
            raise ValueError(f"{value!r} is not a time of day (00:00 to 24:00)")
        return f"{int(hours):02d}:{minutes}"
    return value


ClockTime = Annotated[str, BeforeValidator(_clock_time)]


class WeeklyHours(Model):
    """``{days: [weekdays], from: "18:00", to: "06:00"}``: ``to`` at or before ``from`` runs
    into the next day; ``to: "24:00"`` is the end of the day."""

    days: list[DayName] = Field(min_length=1)
    """Days of the week: ``mon`` ... ``sun``, ``weekdays``, ``weekend`` or ``daily``."""
    from_: ClockTime = Field(alias="from")
    """Start, ``HH:MM`` in the site's ``timezone`` (quote it: ``"18:00"``)."""
    to: ClockTime
    """End, ``HH:MM``; at or before ``from``: the next day; ``"24:00"``: the end of the day."""

    def slot(self) -> WeeklySlot:
        days = frozenset(d for name in self.days for d in _DAY_NAMES[name])
        start = _time_of(self.from_)
        end = None if self.to == "24:00" else _time_of(self.to)
        return WeeklySlot(days, start if start is not None else dt_time(0), end)


def _time_of(text: str) -> dt_time | None:
    hours, minutes = (int(part) for part in text.split(":"))
    return None if hours == 24 else dt_time(hours, minutes)


class Blackout(Model):
    """A period when nothing is offered (planned production, holidays); a time without an
    offset is the facility's local time."""

    from_: datetime = Field(alias="from")
    """Start, ISO 8601 (``2026-12-24T00:00:00``; without an offset: the site's ``timezone``)."""
    to: datetime
    """End, after ``from``."""
    reason: str | None = None
    """Why (shown to operators)."""

    @model_validator(mode="after")
    def _ordered(self) -> Blackout:
        if self.to <= self.from_:
            raise ValueError("a blackout's `to` must come after its `from`")
        return self

    def interval(self, tz: tzinfo) -> tuple[int, int]:
        return local_epoch_ms(self.from_, tz), local_epoch_ms(self.to, tz)


class Offering(Model):
    """``offering:``: when a machine's available idle time may be offered (its own, its
    owner's or the site default); ``always`` is any time, the same as ``{}``."""

    weekly: list[WeeklyHours] = Field(default_factory=list)
    """Hours of the week when idle time may be offered; none listed: any time."""
    blackouts: list[Blackout] = Field(default_factory=list)
    """Periods when nothing is offered, whatever the weekly hours."""
    min_idle_s: Seconds | None = None
    """Idle this long before it is offered (overrides defaults.min_idle_s)."""
    min_window_s: Seconds = 0.0
    """Offer only while the allowed hours still have this long to run."""

    @model_validator(mode="before")
    @classmethod
    def _always(cls, value: Any) -> Any:
        if value == "always":
            return {}
        if isinstance(value, str):
            raise ValueError(
                "an offering is `always` or a mapping (weekly:, blackouts:, min_idle_s:, "
                f"min_window_s:), got {value!r}"
            )
        return value

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # What ``_always`` accepts, for editors: the word, or the mapping.
        return {"anyOf": [{"const": "always"}, handler(core_schema)]}

    def describe(self) -> str:
        """``weekdays 18:00-06:00, 1 blackout``, or ``any time``: for ``pilotline check``."""
        parts = [f"{' '.join(h.days)} {h.from_}-{h.to}" for h in self.weekly] or ["any time"]
        if self.blackouts:
            n = len(self.blackouts)
            parts.append(f"{n} blackout{'s' if n > 1 else ''}")
        if self.min_window_s:
            parts.append(f"min window {self.min_window_s:g} s")
        return ", ".join(parts)

    def policy(self, tz: tzinfo) -> OfferingPolicy:
        return OfferingPolicy(
            tz=tz,
            weekly=tuple(hours.slot() for hours in self.weekly),
            blackouts=tuple(b.interval(tz) for b in self.blackouts),
            min_window_ms=ms(self.min_window_s),
        )


class OwnerPolicy(Model):
    """``owners: {acme-optics: {...}}``: what an owner lets tenants see of its machines."""

    show_to_tenants: bool = False
    """Tenants see this owner's name beside its offered capacity (default: hidden)."""
    offering: Offering | None = None
    """When this owner's machines may be offered; without it, the site default
    (``defaults.offering``) if the configuration names one, else never."""
    booking: Booking | None = None
    """How this owner's machines may be booked (over ``defaults.booking``; a machine's own
    ``booking:`` overrides it key by key)."""
    interlock: InterlockPolicy | None = None
    """This owner's machines get an interlock signal (over ``defaults.interlock``; a
    machine's own ``interlock:`` overrides it key by key)."""
