"""The dispatcher's records: each alert it knows, and each aggregation group with its members.

A group lives on a grid of ``group_interval`` steps from its first flush (its *anchor*);
``tick`` and ``after`` place a change on that grid. Internal to the dispatcher.
"""

from __future__ import annotations

from pilotline.rules.alerts import AlertTransition
from pilotline.rules.labels import labels_of

Key = tuple[str, str]
"""An alert: (rule, machine)."""


class AlertRecord:
    """One alert the dispatcher knows: firing, or resolved with a resolution still to send."""

    __slots__ = ("acked_by", "acked_ms", "firing", "groups", "labels", "last")

    def __init__(self, last: AlertTransition) -> None:
        self.last = last
        self.labels = labels_of(last)
        self.firing = False
        self.acked_by: str | None = None
        self.acked_ms: int | None = None
        self.groups: list[int] = []  # seq of each group it is a member of


class Member:
    """An alert in one group: what that group's channel was told of it."""

    __slots__ = ("notified", "notified_ms")

    def __init__(self, notified: bool = False, notified_ms: int = 0) -> None:
        self.notified = notified  # its firing was sent on this channel (and not yet resolved)
        self.notified_ms = notified_ms  # when its firing was last sent (first time or repeat)


class Group:
    """The alerts of one (channel, values of the ``group_by`` labels)."""

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
        self.members: dict[Key, Member] = {}

    def tick(self, not_before: int, interval: int) -> int:
        """The group's first grid tick at or after ``not_before``."""
        if not_before <= self.anchor:
            return self.anchor
        steps = -(-(not_before - self.anchor) // interval)
        return self.anchor + steps * interval

    def after(self, at: int, interval: int) -> int:
        """The tick a change at ``at`` is flushed at: strictly after it and the last flush."""
        last = self.last_flush if self.last_flush is not None else at
        return self.tick(max(at, last) + 1, interval)
