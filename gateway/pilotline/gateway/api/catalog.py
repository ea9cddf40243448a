"""The catalog: which machines can be booked, what they can do and when they are offered.

A tenant gets the machines some offering policy offers (a machine under none is never
offered, so not in its catalog), with capabilities, zone, the policy in plain words, and the
owner's name only where ``owners.<id>.show_to_tenants`` allows, and each machine's booking
rules and charge rule as the gateway applies them (api/booking_terms.py); no fleet sizes, no
states.
An owner gets its own machines, offered or not; operators every machine.
"""

from __future__ import annotations

from datetime import time, tzinfo
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from pilotline.gateway.api.auth import EVERYONE, Principal, Role
from pilotline.gateway.api.booking_terms import (
    BookingTerms,
    ChargeTerms,
    booking_terms,
    charge_terms,
)
from pilotline.gateway.api.ports import CatalogPort
from pilotline.rules.policy import OfferingPolicy, WeeklySlot

_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_GROUPS = {
    frozenset(range(7)): "every day",
    frozenset(range(5)): "Mon to Fri",
    frozenset({5, 6}): "Sat and Sun",
}


class CatalogEntry(BaseModel):
    machine: str
    zone: str
    capabilities: list[str]
    owner: str | None = Field(
        description="null for tenants unless the owner shows its name (show_to_tenants)"
    )
    offered: bool = Field(description="whether a policy offers it at all")
    offering: str = Field(
        description="when its idle time is offered, in plain words",
        examples=["after 15 min idle, Mon to Fri 18:00 to 06:00 next day (Europe/Berlin "
                  "time); not during 1 planned blackout ahead"],
    )
    min_idle_s: float = Field(description="idle this long before it is offered")
    booking: BookingTerms = Field(description="what a booking of it must keep, as applied")
    charge: ChargeTerms | None = Field(
        description="what a booking of it costs; null: no charge rule is set (free)"
    )


def add_routes(routes: APIRouter, gateway: CatalogPort) -> None:
    """Adds this group's routes to the app's router."""
    shown_to_tenants = {o for o, policy in gateway.config.owners.items() if policy.show_to_tenants}

    @routes.get(
        "/api/catalog",
        summary="The machines a tenant may book: capabilities, zone, when they are offered, "
        "their booking rules and what a booking costs. "
        "Operators: all; owners: their own; tenants: the offered ones, owner names only where "
        "the owner allows.",
        tags=["capacity"],
    )
    async def get_catalog(who: Annotated[Principal, EVERYONE]) -> list[CatalogEntry]:
        tenant = who.role is Role.TENANT
        now_ms = gateway.clock_ms()
        out = []
        for spec in sorted(gateway.plant_spec.machines, key=lambda m: (m.zone, m.id)):
            if tenant and spec.policy.never:
                continue  # what no policy offers cannot be booked, and is the owner's business
            if not tenant and not who.sees_owner(spec.owner):
                continue
            rules = gateway.config.booking_rules(spec.id)
            out.append(
                CatalogEntry(
                    machine=spec.id,
                    zone=spec.zone,
                    capabilities=list(spec.capabilities),
                    owner=spec.owner if not tenant or spec.owner in shown_to_tenants else None,
                    offered=not spec.policy.never,
                    offering=describe(spec.policy, spec.min_idle_ms, now_ms),
                    min_idle_s=spec.min_idle_ms / 1000,
                    booking=booking_terms(rules),
                    charge=charge_terms(gateway.config.charge_rule(spec.id),
                                        rules.late_cancel_ms),
                )
            )
        return out


def describe(policy: OfferingPolicy, min_idle_ms: int, now_ms: int) -> str:
    """``after 15 min idle, Mon to Fri 18:00 to 06:00 next day (Europe/Berlin time)``."""
    if policy.never:
        return "not offered: no offering policy applies to it"
    parts = [f"after {duration(min_idle_ms)} idle" if min_idle_ms > 0 else "as soon as idle"]
    if policy.weekly:
        hours = ", ".join(_slot(slot) for slot in policy.weekly)
        parts.append(f"{hours} ({_zone_name(policy.tz)} time)")
    else:
        parts.append("any time")
    if policy.min_window_ms > 0:
        parts.append(f"while at least {duration(policy.min_window_ms)} of the offered hours "
                     "remain")
    text = ", ".join(parts)
    ahead = sum(1 for _, end in policy.blackouts if end > now_ms)
    if ahead:
        text += f"; not during {ahead} planned blackout{'s' if ahead > 1 else ''} ahead"
    return text


def duration(ms: int) -> str:
    """``90 s``, ``15 min``, ``2 h``, ``1 h 30 min``."""
    seconds = ms // 1000
    if seconds < 120 and seconds % 60:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h" + (f" {minutes} min" if minutes else "")


def _slot(slot: WeeklySlot) -> str:
    days = _DAY_GROUPS.get(slot.days) or ", ".join(_DAY_NAMES[d] for d in sorted(slot.days))
    if slot.start == time(0) and slot.end is None:
        return f"{days} all day"
    start = slot.start.strftime("%H:%M")
    if slot.end is None:
        return f"{days} {start} to 24:00"
    end = slot.end.strftime("%H:%M")
    return f"{days} {start} to {end}" + (" next day" if slot.end <= slot.start else "")


def _zone_name(tz: tzinfo) -> str:
    return str(getattr(tz, "key", None) or tz)
