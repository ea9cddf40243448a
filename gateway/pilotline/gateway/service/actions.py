"""Operators' actions on alerts (acknowledge, silence) and the views the API shows of them.

Actions are applied on the rules' own (watermark) clock; silences are listed and marked as
operators set them, active by the wall clock. A silence that ends may release notifications
at once, so an action is followed by a commit.
"""

from __future__ import annotations

from collections.abc import Callable

from pilotline.gateway.clock import Clock, SteadyClock
from pilotline.gateway.notify.alerting import Alerting, Marks
from pilotline.gateway.store.alert_state import StoredSilence
from pilotline.rules.alerts import AlertView
from pilotline.rules.dispatch import Silence


class AlertActions:
    def __init__(
        self,
        alerting: Alerting,
        *,
        steady: SteadyClock,
        clock_ms: Clock,
        lateness_ms: int,
        commit: Callable[[], None],
    ) -> None:
        self._alerting = alerting
        self._steady = steady
        self._clock_ms = clock_ms
        self._lateness_ms = lateness_ms
        self._commit = commit

    def _now(self) -> int:
        """The rules' watermark clock (never behind the alert core's own time)."""
        return max(self._steady.now() - self._lateness_ms, self._alerting.alerts.now_ms or 0)

    def acknowledge(self, rule: str, machine: str, by: str, comment: str = "") -> int | None:
        """Acknowledge a firing alert; its time (epoch ms), or None if it is not firing."""
        at = self._now()
        return at if self._alerting.acknowledge(rule, machine, by, at, comment) else None

    def add_silence(
        self, matchers: dict[str, str], starts_ms: int, ends_ms: int, by: str, comment: str = ""
    ) -> Silence:
        silence = self._alerting.add_silence(
            matchers=matchers,
            starts_ms=starts_ms,
            ends_ms=ends_ms,
            by=by,
            comment=comment,
            at_ms=self._now(),
        )
        self._commit()  # commit() collects what the dispatcher released
        return silence

    def end_silence(self, silence_id: str) -> StoredSilence | None:
        ended = self._alerting.end_silence(silence_id, self._now())
        self._commit()
        return ended

    def silences(self) -> list[StoredSilence]:
        return self._alerting.silences(self._clock_ms())

    def marks(self, view: AlertView) -> Marks:
        return self._alerting.marks(view, self._clock_ms())
