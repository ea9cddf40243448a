"""``store_retention:``: how long the store keeps its history tables.

The embedded store grows with every state change, closed idle window, quarantined input and
refused line. The gateway prunes rows older than these ages once an hour
(service/pruning.py); ``null`` keeps a group forever. What is still needed is never pruned,
whatever the ages: open idle windows, unsent outbox lines, unsent notifications, each
machine's latest state, and the state history of days whose ``utilization`` points are not
written yet.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator, BeforeValidator, Field

from pilotline.collectors.fields import Model, reject_bool

__all__ = ["MIN_HISTORY_DAYS", "StoreRetention"]

MIN_HISTORY_DAYS: Final = 35
"""The shortest ``history_days``: the forecasts read four weeks of idle windows, and a
restarted gateway writes the ``utilization`` of up to 31 missed days from the state
history."""

_MAX_DAYS: Final = 100 * 366


def _enough_history(days: int) -> int:
    if days < MIN_HISTORY_DAYS:
        raise ValueError(
            f"keep at least {MIN_HISTORY_DAYS} days of history (null: forever): the forecasts "
            "read four weeks of idle windows and a restarted gateway writes the utilization "
            "of up to 31 missed days from it"
        )
    return days


# Whole days up to a century, or ``null`` (forever); ``yes`` is refused, not read as 1.
HistoryDays = Annotated[
    Annotated[int, Field(le=_MAX_DAYS), AfterValidator(_enough_history)] | None,
    BeforeValidator(reject_bool),
]
Days = Annotated[Annotated[int, Field(ge=1, le=_MAX_DAYS)] | None, BeforeValidator(reject_bool)]


class StoreRetention(Model):
    """Ages in days, per group of tables; ``null``: keep forever."""

    history_days: HistoryDays = 400
    """``state_history``, closed ``idle_windows``, ``alert_acks`` and the record of written
    reports: a bit more than a year, so a year can be compared with the one before."""
    quarantine_days: Days = 30
    """``quarantine`` (besides its row limit): rejected input, kept for an operator to read."""
    dead_letter_days: Days = 90
    """``dead_letter`` (besides its row limit): lines InfluxDB refused for good."""
