"""Notification policy over alert transitions (Alertmanager's part): routing to channels,
grouping, repeats, silences and acknowledgements. Pure: no I/O, time is passed in.

Shaped like the plant and the alert core: ``receive(transitions)``, ``handle_timer(now)``,
``next_deadline()``, ``notifications()``. Every input (a transition, an acknowledgement, a
silence added or expired) is applied at ``max(its time, now)`` after the deadlines up to that
time have fired, so the same input gives the same notifications in any chunking and with any
timer calls in between (property test in tests/rules/test_dispatch.py).

Semantics (after Prometheus Alertmanager's ``dispatch.go`` and its dedup stage):

- **Alerts.** An alert is one (rule, machine) pair; its labels (``GROUP_LABELS``) are
  ``rule``, ``zone``, ``severity``, ``machine`` and ``owner`` of its transitions. A firing
  transition for an alert already firing (or a resolution for one not firing) only updates
  the transition the alert's notifications carry.
- **Routing.** Each ``Route`` is a channel. An alert goes to every route whose
  ``min_severity`` it meets (info < warning < critical) and whose ``zones`` (None: all)
  contain its zone.
- **Grouping.** Per (channel, values of the ``group_by`` labels) there is one aggregation
  group. A new group flushes first ``group_wait`` after its first alert arrived (the 50
  machines of a zone that go down together make one notification per channel). After that
  first flush the group lives on a grid of ``group_interval`` steps from it: a change is
  flushed at the first grid tick strictly after it, so an already-notified group is sent at
  most once per ``group_interval`` (Alertmanager's group ticker, without idle ticks). A
  group left with no alerts is dropped ``group_interval`` after its last flush (at once if
  it never flushed); the next alert of that key then starts a new group, with
  ``group_wait`` again, so even a new group never follows the old one's last notification
  within ``group_interval``.
- **What a flush sends.** Only alerts whose notified status changes: a firing alert not yet
  notified on that channel (*newly firing*) and a resolved alert whose firing was notified
  (*newly resolved*), in one notification of ``kind`` ``firing`` if any alert in it newly
  fires, else ``resolved``. Status, not episodes, is compared: an alert that resolves and
  fires again between two flushes of its group sends nothing (the recipients' picture did
  not change), and one that fires and resolves before it was ever flushed sends nothing at
  all (it leaves its group at once). A resolution is only ever sent for a notified firing.
- **Repeat.** A firing alert that was notified, is not acknowledged and not silenced is sent
  again, in a ``repeat`` notification with the group's other alerts due at the same tick,
  ``repeat_interval`` after it was last sent (rounded up to the group's grid). A flush that
  has both changes and repeats sends the change notification first, then the repeat.
- **Acknowledgements** are per alert, for every channel: an acknowledged alert is not
  repeated. They do not stop its first notification or its resolution, and they end when
  the alert resolves (a new episode needs a new acknowledgement).
- **Silences.** An alert whose labels equal all of an active silence's matchers
  (``starts_ms <= t < ends_ms``) is not sent as firing or as a repeat; the resolution of an
  alert whose firing *was* sent before the silence still goes out (whoever was paged gets the
  all-clear). When a silence ends (its ``ends_ms`` deadline, or ``expire_silence``) the
  groups of the alerts it covered are woken: a matching alert still firing and never sent
  goes out at that group's next tick, and overdue repeats resume. Silences change neither
  the alerts' own state nor the ``alert`` measurement (the gateway writes those from the
  transitions).

Deadlines (each group's next flush, each silence's end) live in one heap with lazy
deletion, as in the plant. At equal times silence ends come first (a flush at the end of a
silence sees it over), then groups in route order and creation order, so notifications never
depend on how the input was chunked. ``group_wait: 0`` flushes at the very time of the first
alert, before any later input of that same millisecond.

``checkpoint()`` is a JSON-able dict of the whole state (alerts, acknowledgements, silences,
groups, undelivered notifications); ``restore`` on a dispatcher built from the same
configuration continues exactly where it stopped. With a changed configuration, groups of
channels no longer configured or of another ``group_by`` are dropped, and firing alerts join
the groups they now belong to as not yet notified there.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol

from pilotline.rules.alerts import SEVERITIES, AlertTransition
from pilotline.rules.errors import RulesConfigError

NotificationKind = Literal["firing", "resolved", "repeat"]

GROUP_LABELS = ("rule", "zone", "severity", "machine", "owner")
"""The labels an alert can be grouped and silenced by."""

CHECKPOINT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Route:
    """One channel and what it wants: severities at or above ``min_severity``, alerts of
    ``zones`` (None: every zone)."""

    channel: str
    min_severity: str = "info"
    zones: frozenset[str] | None = None

    def matches(self, severity: str, zone: str) -> bool:
        if severity not in SEVERITIES:
            return False
        return SEVERITIES.index(severity) >= SEVERITIES.index(self.min_severity) and (
            self.zones is None or zone in self.zones
        )


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes every alert whose labels equal all of ``matchers`` while
    ``starts_ms <= now < ends_ms``."""

    id: str
    matchers: Mapping[str, str]
    starts_ms: int
    ends_ms: int
    created_by: str = ""
    comment: str = ""

    def active(self, at_ms: int) -> bool:
        return self.starts_ms <= at_ms < self.ends_ms

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.matchers.items())


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for one channel about one group of alerts.

    ``kind``: ``firing`` when at least one alert in it newly fires, ``resolved`` when it only
    carries resolutions, ``repeat`` for a reminder of alerts still firing. ``alerts``: each
    notified alert's latest transition, firing ones first, then in the order the alerts
    joined the group (the alert core emits same-time transitions in configuration order).
    """

    channel: str
    group: tuple[tuple[str, str], ...]  # (label, value) pairs of the group key, in group_by order
    kind: NotificationKind
    ts_ms: int
    alerts: tuple[AlertTransition, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class AlertState:
    """What the dispatcher knows of one alert, for the API."""

    rule: str
    machine: str
    firing: bool
    acked_by: str | None
    acked_ms: int | None
    silenced_by: str | None  # id of the first active silence that matches it


# -- internal state --------------------------------------------------------------------------

_Key = tuple[str, str]  # (rule, machine)

_SILENCE = 0  # heap entry kinds, in the order they fire at equal times
_GROUP = 1


class Labelled(Protocol):
    """What carries an alert's labels: a transition, or the alert core's view of it."""

    @property
    def rule(self) -> str: ...
    @property
    def zone(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def machine(self) -> str: ...
    @property
    def owner(self) -> str: ...


def labels_of(t: Labelled) -> dict[str, str]:
    """An alert's labels (``GROUP_LABELS``) from one of its transitions or its view."""
    return {
        "rule": t.rule,
        "zone": t.zone,
        "severity": t.severity,
        "machine": t.machine,
        "owner": t.owner,
    }


class _Alert:
    __slots__ = ("acked_by", "acked_ms", "firing", "groups", "labels", "last")

    def __init__(self, last: AlertTransition) -> None:
        self.last = last
        self.labels = labels_of(last)
        self.firing = False
        self.acked_by: str | None = None
        self.acked_ms: int | None = None
        self.groups: list[int] = []  # seq of each group it is a member of


class _Member:
    __slots__ = ("notified", "notified_ms")

    def __init__(self, notified: bool = False, notified_ms: int = 0) -> None:
        self.notified = notified  # its firing was sent on this channel (and not yet resolved)
        self.notified_ms = notified_ms  # when its firing was last sent (first time or repeat)


class _Group:
    __slots__ = (
        "anchor",
        "change_due",
        "due",
        "key",
        "last_flush",
        "members",
        "repeat_due",
        "route",
        "seq",
    )

    def __init__(self, seq: int, route: int, key: tuple[str, ...], anchor: int) -> None:
        self.seq = seq
        self.route = route
        self.key = key  # values of the group_by labels
        self.anchor = anchor  # the first flush; later ones are on anchor + k * group_interval
        self.last_flush: int | None = None
        self.change_due: int | None = anchor
        self.repeat_due: int | None = None
        self.due: int | None = None  # min(change_due, repeat_due): its current heap entry
        self.members: dict[_Key, _Member] = {}


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
        unknown = [label for label in group_by if label not in GROUP_LABELS]
        if unknown or len(set(group_by)) != len(group_by):
            raise RulesConfigError(
                "*",
                f"group_by: unique labels among {', '.join(GROUP_LABELS)}, got {list(group_by)}",
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
        self._alerts: dict[_Key, _Alert] = {}
        self._groups: dict[int, _Group] = {}  # by seq, in creation order
        self._group_of: dict[tuple[int, tuple[str, ...]], int] = {}
        self._next_group = 0
        self._silences: dict[str, tuple[int, Silence]] = {}  # id -> (seq, silence)
        self._silence_ids: dict[int, str] = {}
        self._next_silence = 0
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
        _check_silence(silence)
        at = self._advance(at_ms) if at_ms is not None else self._now
        old = self._silences.pop(silence.id, None)
        if old is not None:
            del self._silence_ids[old[0]]
            if at is not None:
                self._silence_over(old[1], at)
        if at is not None and silence.ends_ms <= at:
            return  # already over: it never mutes anything from now on
        seq = self._next_silence
        self._next_silence += 1
        self._silences[silence.id] = (seq, silence)
        self._silence_ids[seq] = silence.id
        heapq.heappush(self._heap, (silence.ends_ms, _SILENCE, seq, 0))

    def expire_silence(self, silence_id: str, at_ms: int) -> bool:
        """End a silence at ``at_ms``. False if there is no such silence still to come."""
        at = self._advance(at_ms)
        entry = self._silences.pop(silence_id, None)
        if entry is None:
            return False
        del self._silence_ids[entry[0]]
        self._silence_over(entry[1], at)
        return True

    def silences(self, now_ms: int) -> list[Silence]:
        """The silences active at ``now_ms`` or still to come, in the order they were added."""
        return [s for _, s in self._silences.values() if s.ends_ms > now_ms]

    def matching_silence(self, labels: Mapping[str, str], at_ms: int) -> str | None:
        """The id of the first silence active at ``at_ms`` that matches ``labels``."""
        for _, s in self._silences.values():
            if s.active(at_ms) and s.matches(labels):
                return s.id
        return None

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

    def _state_of(self, alert: _Alert) -> AlertState:
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
                _, silence = self._silences.pop(self._silence_ids.pop(a))
                self._silence_over(silence, at)
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
            sid = self._silence_ids.get(a)
            return sid is not None and self._silences[sid][1].ends_ms == at
        group = self._groups.get(b)
        return group is not None and group.due == at

    def _tick(self, group: _Group, not_before: int) -> int:
        """The group's first grid tick at or after ``not_before``."""
        if not_before <= group.anchor:
            return group.anchor
        steps = -(-(not_before - group.anchor) // self._interval)
        return group.anchor + steps * self._interval

    def _after(self, group: _Group, at: int) -> int:
        """The tick a change at ``at`` is flushed at: strictly after it and the last flush."""
        last = group.last_flush if group.last_flush is not None else at
        return self._tick(group, max(at, last) + 1)

    def _reschedule(self, group: _Group) -> None:
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

    def _repeat_due(self, group: _Group, at: int) -> int | None:
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
            tick = self._tick(group, max(member.notified_ms + self._repeat, self._after(group, at)))
            due = tick if due is None else min(due, tick)
        return due

    def _wake(self, group: _Group, at: int) -> None:
        """Something in the group may need sending: flush at its next tick."""
        if group.last_flush is None:
            return  # its first flush (group_wait) is still to come
        due = self._after(group, at)
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
            alert = _Alert(t)
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

    def _join(self, alert: _Alert, key: _Key, route: int, at: int) -> _Group:
        gkey = self._group_key(alert.labels)
        seq = self._group_of.get((route, gkey))
        if seq is None:
            seq = self._next_group
            self._next_group += 1
            group = _Group(seq, route, gkey, at + self._wait)
            self._groups[seq] = group
            self._group_of[(route, gkey)] = seq
        group = self._groups[seq]
        if key not in group.members:
            group.members[key] = _Member()
            alert.groups.append(seq)
            if group.last_flush is None:
                self._reschedule(group)  # its first flush, group_wait after its first alert
        return group

    def _leave(self, alert: _Alert, key: _Key, group: _Group, at: int) -> None:
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

    def _drop(self, group: _Group) -> None:
        del self._groups[group.seq]
        del self._group_of[(group.route, group.key)]

    # -- flushing ----------------------------------------------------------------------------

    def _flush(self, group: _Group, at: int) -> None:
        group.last_flush = at
        group.change_due = None
        fired: list[_Key] = []
        resolved: list[_Key] = []
        repeat: list[_Key] = []
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

    def _emit(self, group: _Group, kind: NotificationKind, at: int, keys: list[_Key]) -> None:
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
            "next_silence": self._next_silence,
            "alerts": [
                {
                    "transition": _transition_json(a.last),
                    "firing": a.firing,
                    "acked_by": a.acked_by,
                    "acked_ms": a.acked_ms,
                }
                for a in self._alerts.values()
            ],
            "silences": [
                {
                    "seq": seq,
                    "id": s.id,
                    "matchers": dict(s.matchers),
                    "starts_ms": s.starts_ms,
                    "ends_ms": s.ends_ms,
                    "created_by": s.created_by,
                    "comment": s.comment,
                }
                for seq, s in self._silences.values()
            ],
            "groups": [
                {
                    "seq": g.seq,
                    "channel": self._routes[g.route].channel,
                    "labels": list(self._group_by),
                    "key": list(g.key),
                    "anchor": g.anchor,
                    "last_flush": g.last_flush,
                    "change_due": g.change_due,
                    "repeat_due": g.repeat_due,
                    "due": g.due,
                    "members": [
                        [rule, machine, m.notified, m.notified_ms]
                        for (rule, machine), m in g.members.items()
                    ],
                }
                for g in self._groups.values()
            ],
            "pending": [
                {
                    "channel": n.channel,
                    "group": [list(pair) for pair in n.group],
                    "kind": n.kind,
                    "ts_ms": n.ts_ms,
                    "alerts": [_transition_json(t) for t in n.alerts],
                }
                for n in self._out
            ],
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
        self._next_silence = int(state["next_silence"])
        for item in state["alerts"]:
            alert = _Alert(_transition_from(item["transition"]))
            alert.firing = bool(item["firing"])
            alert.acked_by = item["acked_by"]
            alert.acked_ms = item["acked_ms"]
            self._alerts[(alert.last.rule, alert.last.machine)] = alert
        for item in state["silences"]:
            silence = Silence(
                item["id"],
                dict(item["matchers"]),
                int(item["starts_ms"]),
                int(item["ends_ms"]),
                item.get("created_by", ""),
                item.get("comment", ""),
            )
            seq = int(item["seq"])
            self._silences[silence.id] = (seq, silence)
            self._silence_ids[seq] = silence.id
            heapq.heappush(self._heap, (silence.ends_ms, _SILENCE, seq, 0))
        for item in state["groups"]:
            route = self._route_index.get(item["channel"])
            if route is None or tuple(item["labels"]) != self._group_by:
                continue  # a channel gone, or grouped differently now: its alerts regroup
            group = _Group(int(item["seq"]), route, tuple(item["key"]), int(item["anchor"]))
            group.last_flush = item["last_flush"]
            group.change_due = item["change_due"]
            group.repeat_due = item["repeat_due"]
            for rule, machine, notified, notified_ms in item["members"]:
                member_of = self._alerts.get((rule, machine))
                if member_of is None:
                    continue
                group.members[(rule, machine)] = _Member(bool(notified), int(notified_ms))
                member_of.groups.append(group.seq)
            self._groups[group.seq] = group
            self._group_of[(route, group.key)] = group.seq
            group.due = item["due"]
            if group.due is not None:
                heapq.heappush(self._heap, (group.due, _GROUP, route, group.seq))
        for item in state["pending"]:
            self._out.append(
                Notification(
                    item["channel"],
                    tuple((str(label), str(value)) for label, value in item["group"]),
                    item["kind"],
                    int(item["ts_ms"]),
                    tuple(_transition_from(t) for t in item["alerts"]),
                )
            )
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


def _check_silence(silence: Silence) -> None:
    where = f"silence {silence.id!r}"
    if not silence.id:
        raise ValueError("a silence needs an id")
    if not silence.matchers:
        raise ValueError(f"{where}: give at least one matcher")
    unknown = sorted(set(silence.matchers) - set(GROUP_LABELS))
    if unknown:
        raise ValueError(
            f"{where}: unknown label {unknown[0]!r} (labels: {', '.join(GROUP_LABELS)})"
        )
    if silence.ends_ms <= silence.starts_ms:
        raise ValueError(f"{where}: it must end after it starts")


def _transition_json(t: AlertTransition) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(t):
        value = getattr(t, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # JSON has no NaN; read back as NaN
        out[f.name] = value
    return out


def _transition_from(data: Mapping[str, Any]) -> AlertTransition:
    values = dict(data)
    for f in fields(AlertTransition):
        if f.type in ("float", float) and values.get(f.name, 0.0) is None:
            values[f.name] = math.nan
    return AlertTransition(**values)
