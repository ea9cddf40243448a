"""The forecast beside an offered slot, as advice (``/api/offers``): how often the machine was
idle and offerable in the same hours of past weeks.

A slot is free bookable time; whether the owner will leave the machine alone then is not
known, only how it went before. ``SlotForecast`` sums that up from the latest forecast run
(gateway/forecasts.py, rules/forecast.py: the offerable idle share of the same hour of the
week over the last 4 weeks): ``idle_share`` is that share over the slot's hours (each hour
weighted by how much of the slot it holds), ``weeks`` the fewest past weeks behind any of
them, ``until`` where the forecast stops (48 h ahead). Advice, never a promise (DESIGN.md):
a booking holds the slot whatever the share; a low share says the owner often runs the
machine then, so preemption is likelier.

Tenants see it too: it is the figure ``/api/forecast`` already gives them for offered hours
(``expected_free_min / offered_min``), and slots lie in offered time; as a share it says
nothing of the fleet.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from pilotline.gateway.api.times import Instant
from pilotline.gateway.forecasts import Outlook
from pilotline.gateway.timefmt import iso

__all__ = ["SlotForecast", "forecast_json"]


class SlotForecast(BaseModel):
    """Advice, never a promise: how the slot's hours went in past weeks."""

    idle_share: float | None = Field(
        description="0..1: share of the slot's hours the machine was idle and offerable in the "
        "same hours of past weeks; null: no history yet"
    )
    weeks: int = Field(description="the fewest past weeks behind any of its hours (0: none)")
    hours: int = Field(description="forecast hours the slot overlaps")
    until: Instant = Field(description="the forecast covers the slot up to here (48 h ahead)")


def forecast_json(outlook: Outlook | None) -> dict[str, Any] | None:
    """The advice for a slot from its ``Forecasts.outlook``, as the plain dict
    ``/api/offers`` writes in ``SlotForecast``'s shape (a pydantic object per slot costs more
    than the offers: benchmarks/README.md, "Booking")."""
    if outlook is None:
        return None
    share = outlook.idle_share
    return {
        "idle_share": None if share is None else round(share, 2),
        "weeks": outlook.weeks,
        "hours": outlook.hours,
        "until": iso(outlook.until_ms),
    }
