"""The gateway's alerting: the two pure cores wired together, with their state kept.

``Alerts`` (rules/alerts/) decides when an alert fires and resolves; ``Dispatcher``
(rules/dispatch/) decides who is told and when (routes, groups, repeats, silences,
acknowledgements). This class feeds one into the other and keeps what must survive a restart
(``alert_state.py``):

- the dispatcher's checkpoint goes into the same commit as the notification rows it produced
  (``Gateway.commit``), so a notification is queued exactly once: a gateway killed before
  that commit forgets both the decision and the rows, and decides again after the restart;
- the alert core's checkpoint (every rule x machine instance) is larger: it goes with a commit
  after transitions (at most every ``ALERTS_CHECKPOINT_MIN_MS``) and at least every
  ``ALERTS_CHECKPOINT_MS``: a crash loses at most that much of a *pending* condition's age
  (it then fires that much later); a transition not yet in it is decided again after the
  restart, and the dispatcher does not notify a status it already sent, so nothing is
  notified twice;
- silences and acknowledgements are written when the API sets them, before it answers; at
  most ``alerts.max_silences`` silences are active or to come at once (``SilenceLimitError``
  beyond: each one is checked against every alert's labels at every notification).

Time: both cores run on the gateway's watermark clock (``Gateway.tick``); API actions are
applied at the watermark too, so they interleave with the rules' own time.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog

from pilotline.gateway.config import SiteConfig
from pilotline.gateway.store.alert_state import AlertStateStore, StoredSilence
from pilotline.rules import Event, Sample, State
from pilotline.rules.alerts import Alerts, AlertTransition, AlertView
from pilotline.rules.dispatch import Notification, Silence, labels_of
from pilotline.rules.spec import MachineSpec

log = structlog.get_logger("pilotline.gateway.alerting")

ALERTS_CHECKPOINT_MS = 30_000
"""The alert core's checkpoint is kept at least this often while it changes."""
ALERTS_CHECKPOINT_MIN_MS = 1_000
"""...and at most this often, even when transitions come in every commit: it holds every
(rule, machine) instance, so on a large site writing it per commit would cost more than the
commit. A transition not yet in it is decided again after a restart, and the dispatcher
(checkpointed with every notification) does not notify a status it already sent."""


class SilenceLimitError(Exception):
    """``alerts.max_silences`` silences are already active or to come."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} silences are already active or to come (alerts.max_silences)")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Marks:
    """What an operator did about one alert, for the API."""

    acked_by: str | None = None
    acked_ms: int | None = None
    silenced_by: tuple[str, ...] = ()


def collector_names(config: SiteConfig) -> dict[str, str]:
    """Machine id -> the name of the collector that reads it (as /health names them)."""
    out: dict[str, str] = {}
    for _, machine in config.machines():
        if machine.mqtt is not None:
            out[machine.id] = "mqtt"
        elif machine.opcua is not None:
            out[machine.id] = f"opcua:{machine.opcua.endpoint}"
    return out


class Alerting:
    def __init__(
        self,
        config: SiteConfig,
        machines: Iterable[MachineSpec],
        store: AlertStateStore,
        *,
        states: Mapping[str, State],
        now_ms: int,
    ) -> None:
        self._store = store
        self._max_silences = config.alerts.max_silences
        specs = list(machines)
        ids = {s.id for s in specs}
        self.alerts = Alerts(
            config.alert_rules(),
            specs,
            states=states,
            collectors={m: c for m, c in collector_names(config).items() if m in ids},
        )
        self.dispatcher = config.alerts.dispatcher()
        self._restore("alerts", self.alerts.restore)
        self._restore("dispatch", self.dispatcher.restore)
        known = {s.id for s in self.dispatcher.silences(now_ms)}
        for stored in store.silences(now_ms):
            s = stored.silence
            if s.id not in known and s.ends_ms > max(now_ms, s.starts_ms):
                self.dispatcher.add_silence(s)
        self._collectors: dict[str, bool] = {}
        self._interlocks: Callable[[], Mapping[str, bool]] | None = None
        self._unknown: dict[str, bool] = {}  # as last told to the core in this run
        self._alerts_saved_ms: int | None = None
        self.save_alerts = False
        self.save_dispatch = False
        """Cores whose checkpoint the next commit must carry (see ``checkpoints``)."""

    def _restore(self, core: str, restore: object) -> None:
        saved = self._store.load(core)
        if saved is None:
            return
        try:
            restore(saved)  # type: ignore[operator]
        except (ValueError, RuntimeError) as e:
            # A checkpoint of another version: start afresh (alerts may fire again) and say so.
            log.warning("alerts.restore_failed", core=core, error=str(e))
        else:
            log.info("alerts.restored", core=core)

    # -- inputs ------------------------------------------------------------------------------

    def receive(self, sample: Sample) -> None:
        self.alerts.receive(sample)

    def observe(self, events: Iterable[Event]) -> None:
        self.alerts.observe(events)

    def watch_interlocks(self, unknown: Callable[[], Mapping[str, bool]]) -> None:
        """Poll ``unknown()`` (machine -> its soft interlock does not read back) at every
        timer turn, for ``interlock: unknown`` rules."""
        self._interlocks = unknown

    def handle_timer(self, now_ms: int) -> None:
        if self._interlocks is not None:
            for machine, unknown in self._interlocks().items():
                if self._unknown.get(machine) is not unknown:
                    self.alerts.interlock(machine, unknown, now_ms)
                    self.save_alerts = True
                self._unknown[machine] = unknown
        self.alerts.handle_timer(now_ms)
        self.dispatcher.handle_timer(now_ms)

    def collector(self, name: str, connected: bool, at_ms: int) -> None:
        """A collector's connection, polled by the gateway's timer: only changes count."""
        if self._collectors.get(name, True) != connected:
            self.alerts.collector(name, connected, at_ms)
            self.save_alerts = True
        self._collectors[name] = connected

    def next_deadline(self) -> int | None:
        deadlines = [
            d for d in (self.alerts.next_deadline(), self.dispatcher.next_deadline()) if d
        ]
        return min(deadlines) if deadlines else None

    # -- outputs -----------------------------------------------------------------------------

    def drain(self) -> tuple[list[AlertTransition], list[Notification]]:
        """The alert core's transitions since the last call, and the notifications the
        dispatcher decided on (from them, or from its own deadlines)."""
        transitions = self.alerts.transitions()
        if transitions:
            self.dispatcher.receive(transitions)
            self.save_alerts = self.save_dispatch = True
        notifications = self.dispatcher.notifications()
        if notifications:
            self.save_dispatch = True
        return transitions, notifications

    def checkpoints(self, now_ms: int) -> list[tuple[str, str]]:
        """``(core, JSON)`` rows for this commit: the dispatcher when it decided something, the
        alert core after a transition (at most every ``ALERTS_CHECKPOINT_MIN_MS``) or every
        ``ALERTS_CHECKPOINT_MS``."""
        out = []
        if self._alerts_due(now_ms):
            out.append(("alerts", _json(self.alerts.checkpoint())))
            self._alerts_saved_ms = now_ms
            self.save_alerts = False
        if self.save_dispatch:
            out.append(("dispatch", _json(self.dispatcher.checkpoint())))
            self.save_dispatch = False
        return out

    def checkpoints_due(self, now_ms: int) -> bool:
        return self.save_dispatch or self._alerts_due(now_ms)

    def _alerts_due(self, now_ms: int) -> bool:
        saved = self._alerts_saved_ms
        if saved is None:
            return True
        age = now_ms - saved
        return age >= ALERTS_CHECKPOINT_MS or (self.save_alerts and age >= ALERTS_CHECKPOINT_MIN_MS)

    def save_now(self, now_ms: int) -> list[tuple[str, str]]:
        """Both checkpoints, whatever is due (on shutdown)."""
        self.save_alerts = self.save_dispatch = True
        self._alerts_saved_ms = None
        return self.checkpoints(now_ms)

    # -- operators ---------------------------------------------------------------------------

    def acknowledge(self, rule: str, machine: str, by: str, at_ms: int, comment: str) -> bool:
        if not self.dispatcher.acknowledge(rule, machine, by, at_ms):
            return False
        self._store.record_ack(rule, machine, by, at_ms, comment)
        self._store.save("dispatch", self.dispatcher.checkpoint(), at_ms)
        log.info("alert.acknowledged", rule=rule, machine=machine, by=by)
        return True

    def add_silence(
        self,
        *,
        matchers: Mapping[str, str],
        starts_ms: int,
        ends_ms: int,
        by: str,
        comment: str,
        at_ms: int,
    ) -> Silence:
        if len(self.dispatcher.silences(at_ms)) >= self._max_silences:
            raise SilenceLimitError(self._max_silences)
        silence = Silence(
            id=secrets.token_hex(6),
            matchers=dict(matchers),
            starts_ms=starts_ms,
            ends_ms=ends_ms,
            created_by=by,
            comment=comment,
        )
        self._store.add_silence(silence, at_ms)
        self.dispatcher.add_silence(silence, at_ms)
        self._store.save("dispatch", self.dispatcher.checkpoint(), at_ms)
        log.info(
            "alert.silenced", silence=silence.id, matchers=dict(matchers), by=by,
            starts_ms=starts_ms, ends_ms=ends_ms,
        )
        return silence

    def end_silence(self, silence_id: str, at_ms: int) -> StoredSilence | None:
        if not self._store.end_silence(silence_id, at_ms):
            return None
        self.dispatcher.expire_silence(silence_id, at_ms)
        self._store.save("dispatch", self.dispatcher.checkpoint(), at_ms)
        log.info("alert.silence_ended", silence=silence_id)
        return next((s for s in self._store.silences(at_ms) if s.silence.id == silence_id), None)

    def silences(self, now_ms: int) -> list[StoredSilence]:
        return self._store.silences(now_ms)

    def marks(self, view: AlertView, at_ms: int) -> Marks:
        state = self.dispatcher.alert_state(view.rule, view.machine)
        labels = labels_of(view)
        silenced = tuple(
            s.id for s in self.dispatcher.silences(at_ms) if s.active(at_ms) and s.matches(labels)
        )
        if state is None:
            return Marks(silenced_by=silenced)
        return Marks(state.acked_by, state.acked_ms, silenced)


def _json(data: Mapping[str, object]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


__all__ = ["ALERTS_CHECKPOINT_MS", "Alerting", "Marks", "SilenceLimitError", "collector_names"]
