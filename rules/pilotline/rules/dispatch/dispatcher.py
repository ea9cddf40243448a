"""The dispatcher: alert transitions in, notifications out (the package docstring is its
policy). Pure: no I/O, time is passed in.

Deadlines (each group's next flush, each silence's end) live in one heap with lazy
deletion, as in the plant. At equal times silence ends come first (a flush at the end of a
silence sees it over), then groups in route order and creation order, so notifications never
depend on how the input was chunked. ``group_wait: 0`` flushes at the very time of the first
alert, before any later input of that same millisecond.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pilotline.rules.alerts import AlertTransition
from pilotline.rules.dispatch.checkpoint import (
    CHECKPOINT_VERSION,
    alert_from,
    alert_json,
    group_from,
    group_json,
    notification_from,
    notification_json,
    silence_from,
    silence_json,
)
from pilotline.rules.dispatch.groups import AlertRecord, Group, Key, Member
from pilotline.rules.dispatch.notifications import AlertState, Notification, NotificationKind
from pilotline.rules.dispatch.routes import Route
from pilotline.rules.dispatch.silences import Silence, SilenceBook, check_silence
from pilotline.rules.errors import RulesConfigError
from pilotline.rules.labels import LABELS, SEVERITIES, labels_of

_SILENCE = 0  # heap entry kinds, in the order they fire at equal times
_GROUP = 1


class Dispatcher:
    def __init__(
        self,
        routes: Sequence[Route],
        *,
        group_by: Sequence[str] = ("rule", "zone"),
        group_wait_ms: int = 10_000,
        group_interval_ms: int = 60_000,
        repeat_interval_ms: int = 4 * 3_600_000,
    ) -> None:
        channels: set[str] = set()
        for route in routes:
            if route.channel in channels:
                raise RulesConfigError("*", f"channel {route.channel!r} routed twice")
            channels.add(route.channel)
            if route.min_severity not in SEVERITIES:
                raise RulesConfigError(
                    "*",
                    f"channel {route.channel!r}: min_severity must be one of "
                    f"{', '.join(SEVERITIES)}",
                )
        unknown = [label for label in group_by if label not in LABELS]
        if unknown or len(set(group_by)) != len(group_by):
            raise RulesConfigError(
                "*",
                f"group_by: unique labels among {', '.join(LABELS)}, got {list(group_by)}",
            )
        if group_wait_ms < 0:
            raise RulesConfigError("*", "group_wait must not be negative")
        if group_interval_ms <= 0:
            raise RulesConfigError("*", "group_interval must be positive")
        if repeat_interval_ms < group_interval_ms:
            raise RulesConfigError("*", "repeat_interval must not be shorter than group_interval")
        self._routes = tuple(routes)
        self._route_index = {r.channel: i for i, r in enumerate(self._routes)}
        self._group_by = tuple(group_by)
        self._wait = group_wait_ms
        self._interval = group_interval_ms
        self._repeat = repeat_interval_ms

        self._now: int | None = None
        self._alerts: dict[Key, AlertRecord] = {}
        self._groups: dict[int, Group] = {}  # by seq, in creation order
        self._group_of: dict[tuple[int, tuple[str, ...]], int] = {}
        self._next_group = 0
        self._silences = SilenceBook()
        # (time, kind, route or silence seq, group seq or 0)
        self._heap: list[tuple[int, int, int, int]] = []
        self._out: list[Notification] = []

    # -- input -----------------------------------------------------------------------------

    def receive(self, transitions: Iterable[AlertTransition]) -> None:
        """The alert core's transitions, in the order it emitted them."""
        for t in transitions:
            at = self._advance(t.ts_ms)
            self._transition(t, at)

    def handle_timer(self, now_ms: int) -> None:
        self._advance(now_ms)

    def next_deadline(self) -> int | None:
        heap = self._heap
        while heap and not self._current(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def notifications(self) -> list[Notification]:
        """The notifications produced since the last call, in order."""
        out, self._out = self._out, []
        return out

    # -- acknowledgements and silences -----------------------------------------------------

    def acknowledge(self, rule: str, machine: str, by: str, at_ms: int) -> bool:
        """Stop the repeats of a firing alert until it resolves. False if it is not firing."""
        at = self._advance(at_ms)
        alert = self._alerts.get((rule, machine))
        if alert is None or not alert.firing:
            return False
        alert.acked_by = by
        alert.acked_ms = at
        return True  # its group's repeat deadline goes stale and is skipped when it comes

    def add_silence(self, silence: Silence, at_ms: int | None = None) -> None:
        """Add (or replace, by id) a silence; ``at_ms``: when (default: the current time). A
        replaced silence counts as ended at that time."""
        check_silence(silence)
        at = self._advance(at_ms) if at_ms is not None else self._now
        old = self._silences.pop(silence.id)
        if old is not None and at is not None:
            self._silence_over(old, at)
        if at is not None and silence.ends_ms <= at:
            return  # already over: it never mutes anything from now on
        seq = self._silences.add(silence)
        heapq.heappush(self._heap, (silence.ends_ms, _SILENCE, seq, 0))

    def expire_silence(self, silence_id: str, at_ms: int) -> bool:
        """End a silence at ``at_ms``. False if there is no such silence still to come."""
        at = self._advance(at_ms)
        silence = self._silences.pop(silence_id)
        if silence is None:
            return False
        self._silence_over(silence, at)
        return True

    def silences(self, now_ms: int) -> list[Silence]:
        """The silences active at ``now_ms`` or still to come, in the order they were added."""
        return self._silences.upcoming(now_ms)

    def matching_silence(self, labels: Mapping[str, str], at_ms: int) -> str | None:
        """The id of the first silence active at ``at_ms`` that matches ``labels``."""
        return self._silences.matching(labels, at_ms)

    # -- views -----------------------------------------------------------------------------

    @property
    def now_ms(self) -> int | None:
        return self._now

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    @property
    def group_by(self) -> tuple[str, ...]:
        return self._group_by

    def alert_state(self, rule: str, machine: str) -> AlertState | None:
        """Acknowledgement and silence of one alert (None: not firing and nothing pending)."""
        alert = self._alerts.get((rule, machine))
        return None if alert is None else self._state_of(alert)

    def view(self) -> list[AlertState]:
        """Every firing alert, in the order they first fired."""
        return [self._state_of(a) for a in self._alerts.values() if a.firing]

    def _state_of(self, alert: AlertRecord) -> AlertState:
        silenced = (
            self.matching_silence(alert.labels, self._now)
            if alert.firing and self._now is not None
            else None
        )
        return AlertState(
            alert.last.rule,
            alert.last.machine,
            alert.firing,
            alert.acked_by,
            alert.acked_ms,
            silenced,
        )

    # -- time ------------------------------------------------------------------------------

    def _advance(self, now_ms: int) -> int:
        """Fire every deadline up to ``now_ms``; return the time input is applied at."""
        if self._now is None:
            self._now = now_ms
        # Time never goes back: an earlier time is the current one (which also pops anything
        # overdue, so a shell that arms its timer at next_deadline() can never spin).
        now_ms = max(now_ms, self._now)
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            entry = heapq.heappop(heap)
            if not self._current(entry):
                continue
            at, kind, a, b = entry
            if kind == _SILENCE:
                self._silence_over(self._silences.pop_seq(a), at)
            else:
                group = self._groups[b]
                if group.members:
                    self._flush(group, at)
                else:
                    self._drop(group)  # empty for a whole group_interval
        self._now = now_ms
        return now_ms

    def _current(self, entry: tuple[int, int, int, int]) -> bool:
        at, kind, a, b = entry
        if kind == _SILENCE:
            return self._silences.ends_ms(a) == at
        group = self._groups.get(b)
        return group is not None and group.due == at

    def _reschedule(self, group: Group) -> None:
        if not group.members:  # kept until group_interval after its last flush, then dropped
            due = None if group.last_flush is None else group.last_flush + self._interval
        else:
            due = group.change_due
            if group.repeat_due is not None and (due is None or group.repeat_due < due):
                due = group.repeat_due
        if due != group.due:
            group.due = due
            if due is not None:
                heapq.heappush(self._heap, (due, _GROUP, group.route, group.seq))

    def _repeat_due(self, group: Group, at: int) -> int | None:
        """The next tick a member is due a repeat; silenced or acknowledged members wait for
        the end of the silence (which recomputes this) or for a new episode."""
        due: int | None = None
        for key, member in group.members.items():
            alert = self._alerts[key]
            if (
                not alert.firing
                or not member.notified
                or alert.acked_ms is not None
                or self.matching_silence(alert.labels, at) is not None
            ):
                continue
            not_before = max(member.notified_ms + self._repeat, group.after(at, self._interval))
            tick = group.tick(not_before, self._interval)
            due = tick if due is None else min(due, tick)
        return due

    def _wake(self, group: Group, at: int) -> None:
        """Something in the group may need sending: flush at its next tick."""
        if group.last_flush is None:
            return  # its first flush (group_wait) is still to come
        due = group.after(at, self._interval)
        if group.change_due is None or due < group.change_due:
            group.change_due = due
        self._reschedule(group)

    # -- alerts ----------------------------------------------------------------------------

    def _transition(self, t: AlertTransition, at: int) -> None:
        key = (t.rule, t.machine)
        alert = self._alerts.get(key)
        if alert is None:
            if not t.firing:
                return  # a resolution of an alert never seen firing: nothing to tell
            alert = AlertRecord(t)
            self._alerts[key] = alert
        alert.last = t
        alert.labels = labels_of(t)
        if alert.firing == t.firing:
            return
        alert.firing = t.firing
        if t.firing:
            for index in self._routes_of(t):
                group = self._join(alert, key, index, at)
                if not group.members[key].notified:
                    self._wake(group, at)
                # else: it fired again before its resolution was sent; nothing changed
            return
        alert.acked_by = None
        alert.acked_ms = None
        for seq in list(alert.groups):
            group = self._groups[seq]
            if group.members[key].notified:
                self._wake(group, at)
            else:
                self._leave(alert, key, group, at)
        if not alert.groups:
            del self._alerts[key]

    def _routes_of(self, t: AlertTransition) -> list[int]:
        return [i for i, r in enumerate(self._routes) if r.matches(t.severity, t.zone)]

    def _group_key(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(labels[label] for label in self._group_by)

    def _join(self, alert: AlertRecord, key: Key, route: int, at: int) -> Group:
        gkey = self._group_key(alert.labels)
        seq = self._group_of.get((route, gkey))
        if seq is None:
            seq = self._next_group
            self._next_group += 1
            group = Group(seq, route, gkey, at + self._wait)
            self._groups[seq] = group
            self._group_of[(route, gkey)] = seq
        group = self._groups[seq]
        if key not in group.members:
            group.members[key] = Member()
            alert.groups.append(seq)
            if group.last_flush is None:
                self._reschedule(group)  # its first flush, group_wait after its first alert
        return group

    def _leave(self, alert: AlertRecord, key: Key, group: Group, at: int) -> None:
        del group.members[key]
        alert.groups.remove(group.seq)
        if group.members:
            return
        if group.last_flush is None or group.last_flush + self._interval <= at:
            self._drop(group)
        else:
            group.change_due = None
            group.repeat_due = None
            self._reschedule(group)

    def _drop(self, group: Group) -> None:
        del self._groups[group.seq]
        del self._group_of[(group.route, group.key)]

    # -- flushing ----------------------------------------------------------------------------

    def _flush(self, group: Group, at: int) -> None:
        group.last_flush = at
        group.change_due = None
        fired: list[Key] = []
        resolved: list[Key] = []
        repeat: list[Key] = []
        for key, member in group.members.items():
            alert = self._alerts[key]
            if not alert.firing:
                if member.notified:
                    resolved.append(key)
                continue
            if self.matching_silence(alert.labels, at) is not None:
                continue
            if not member.notified:
                fired.append(key)
            elif alert.acked_ms is None and member.notified_ms + self._repeat <= at:
                repeat.append(key)
        if fired or resolved:
            self._emit(group, "firing" if fired else "resolved", at, fired + resolved)
        for key in fired:
            group.members[key].notified = True
            group.members[key].notified_ms = at
        for key in resolved:
            alert = self._alerts[key]
            del group.members[key]
            alert.groups.remove(group.seq)
            if not alert.groups and not alert.firing:
                del self._alerts[key]
        if repeat:
            self._emit(group, "repeat", at, repeat)
            for key in repeat:
                group.members[key].notified_ms = at
        group.repeat_due = self._repeat_due(group, at)
        self._reschedule(group)

    def _emit(self, group: Group, kind: NotificationKind, at: int, keys: list[Key]) -> None:
        self._out.append(
            Notification(
                self._routes[group.route].channel,
                tuple(zip(self._group_by, group.key, strict=True)),
                kind,
                at,
                tuple(self._alerts[k].last for k in keys),
            )
        )

    def _silence_over(self, silence: Silence, at: int) -> None:
        """``silence`` (already removed) stopped muting at ``at``: wake the groups of the firing
        alerts it matched."""
        if silence.starts_ms >= at:
            return  # it never muted anything
        for group in list(self._groups.values()):
            woken = False
            for key, member in group.members.items():
                alert = self._alerts[key]
                if alert.firing and silence.matches(alert.labels):
                    woken = True
                    if not member.notified:
                        self._wake(group, at)
                        break
            if woken:
                group.repeat_due = self._repeat_due(group, at)
                self._reschedule(group)

    # -- restart ---------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        """The whole state as plain JSON values (undelivered notifications included)."""
        return {
            "version": CHECKPOINT_VERSION,
            "now_ms": self._now,
            "next_group": self._next_group,
            "next_silence": self._silences.next_seq,
            "alerts": [alert_json(a) for a in self._alerts.values()],
            "silences": [silence_json(seq, s) for seq, s in self._silences],
            "groups": [
                group_json(g, self._routes[g.route].channel, self._group_by)
                for g in self._groups.values()
            ],
            "pending": [notification_json(n) for n in self._out],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from ``checkpoint()`` of an earlier run (call before any input). Raises
        ``ValueError`` for a checkpoint this version cannot read."""
        if self._now is not None or self._alerts or self._silences:
            raise ValueError("restore a dispatcher before its first input")
        try:
            self._load(state)
        except (KeyError, TypeError, IndexError, AttributeError) as e:
            raise ValueError(f"not a dispatcher checkpoint: {e!r}") from e

    def _load(self, state: Mapping[str, Any]) -> None:
        if state["version"] != CHECKPOINT_VERSION:
            raise ValueError(f"dispatcher checkpoint version {state['version']!r}")
        self._now = state["now_ms"]
        self._next_group = int(state["next_group"])
        self._silences.next_seq = int(state["next_silence"])
        for item in state["alerts"]:
            alert = alert_from(item)
            self._alerts[(alert.last.rule, alert.last.machine)] = alert
        for item in state["silences"]:
            seq, silence = silence_from(item)
            self._silences.put(seq, silence)
            heapq.heappush(self._heap, (silence.ends_ms, _SILENCE, seq, 0))
        for item in state["groups"]:
            route = self._route_index.get(item["channel"])
            if route is None or tuple(item["labels"]) != self._group_by:
                continue  # a channel gone, or grouped differently now: its alerts regroup
            group = group_from(item, route)
            for rule, machine, notified, notified_ms in item["members"]:
                member_of = self._alerts.get((rule, machine))
                if member_of is None:
                    continue
                group.members[(rule, machine)] = Member(bool(notified), int(notified_ms))
                member_of.groups.append(group.seq)
            self._groups[group.seq] = group
            self._group_of[(route, group.key)] = group.seq
            group.due = item["due"]
            if group.due is not None:
                heapq.heappush(self._heap, (group.due, _GROUP, route, group.seq))
        self._out.extend(notification_from(item) for item in state["pending"])
        self._reconcile()

    def _reconcile(self) -> None:
        """After a restore under another configuration: each alert in exactly the groups its
        routes and ``group_by`` now give."""
        now = self._now
        for key, alert in list(self._alerts.items()):
            wanted = {(i, self._group_key(alert.labels)) for i in self._routes_of(alert.last)}
            for seq in list(alert.groups):
                group = self._groups[seq]
                if (group.route, group.key) not in wanted:
                    self._leave(alert, key, group, now if now is not None else 0)
            if alert.firing and now is not None:
                for route, _ in sorted(wanted):
                    group = self._join(alert, key, route, now)
                    if not group.members[key].notified:
                        self._wake(group, now)
            if not alert.groups and not alert.firing:
                del self._alerts[key]
