"""The JSON shape of the dispatcher's checkpoint, record by record, both ways.

``Dispatcher.checkpoint`` assembles these into one dict and ``Dispatcher.restore`` reads them
back; a missing key or a wrong type raises ``KeyError``/``TypeError``, which ``restore``
turns into ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from pilotline.rules.alerts import AlertTransition
from pilotline.rules.dispatch.groups import AlertRecord, Group
from pilotline.rules.dispatch.notifications import Notification
from pilotline.rules.dispatch.silences import Silence

CHECKPOINT_VERSION = 1


def transition_json(t: AlertTransition) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(t):
        value = getattr(t, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # JSON has no NaN; read back as NaN
        out[f.name] = value
    return out


def transition_from(data: Mapping[str, Any]) -> AlertTransition:
    values = dict(data)
    for f in fields(AlertTransition):
        if f.type in ("float", float) and values.get(f.name, 0.0) is None:
            values[f.name] = math.nan
    return AlertTransition(**values)


def alert_json(a: AlertRecord) -> dict[str, Any]:
    return {
        "transition": transition_json(a.last),
        "firing": a.firing,
        "acked_by": a.acked_by,
        "acked_ms": a.acked_ms,
    }


def alert_from(item: Mapping[str, Any]) -> AlertRecord:
    alert = AlertRecord(transition_from(item["transition"]))
    alert.firing = bool(item["firing"])
    alert.acked_by = item["acked_by"]
    alert.acked_ms = item["acked_ms"]
    return alert


def silence_json(seq: int, s: Silence) -> dict[str, Any]:
    return {
        "seq": seq,
        "id": s.id,
        "matchers": dict(s.matchers),
        "starts_ms": s.starts_ms,
        "ends_ms": s.ends_ms,
        "created_by": s.created_by,
        "comment": s.comment,
    }


def silence_from(item: Mapping[str, Any]) -> tuple[int, Silence]:
    silence = Silence(
        item["id"],
        dict(item["matchers"]),
        int(item["starts_ms"]),
        int(item["ends_ms"]),
        item.get("created_by", ""),
        item.get("comment", ""),
    )
    return int(item["seq"]), silence


def group_json(g: Group, channel: str, group_by: Sequence[str]) -> dict[str, Any]:
    return {
        "seq": g.seq,
        "channel": channel,
        "labels": list(group_by),
        "key": list(g.key),
        "anchor": g.anchor,
        "last_flush": g.last_flush,
        "change_due": g.change_due,
        "repeat_due": g.repeat_due,
        "due": g.due,
        "members": [
            [rule, machine, m.notified, m.notified_ms] for (rule, machine), m in g.members.items()
        ],
    }


def group_from(item: Mapping[str, Any], route: int) -> Group:
    """The group without its members (the dispatcher adds those whose alert it knows) and
    its heap entry (``due``: the dispatcher sets it once the group is in place)."""
    group = Group(int(item["seq"]), route, tuple(item["key"]), int(item["anchor"]))
    group.last_flush = item["last_flush"]
    group.change_due = item["change_due"]
    group.repeat_due = item["repeat_due"]
    return group


def notification_json(n: Notification) -> dict[str, Any]:
    return {
        "channel": n.channel,
        "group": [list(pair) for pair in n.group],
        "kind": n.kind,
        "ts_ms": n.ts_ms,
        "alerts": [transition_json(t) for t in n.alerts],
    }


def notification_from(item: Mapping[str, Any]) -> Notification:
    return Notification(
        item["channel"],
        tuple((str(label), str(value)) for label, value in item["group"]),
        item["kind"],
        int(item["ts_ms"]),
        tuple(transition_from(t) for t in item["alerts"]),
    )
