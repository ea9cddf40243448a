"""The Sparkplug topic namespace: ``spBv1.0/<group>/<type>/<edge node>[/<device>]`` and the
host's ``spBv1.0/STATE/<host id>``."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["NAMESPACE", "Topic", "parse_topic", "state_topic"]

NAMESPACE = "spBv1.0"
NODE_TYPES = frozenset({"NBIRTH", "NDEATH", "NDATA", "NCMD"})
DEVICE_TYPES = frozenset({"DBIRTH", "DDEATH", "DDATA", "DCMD"})


class Topic(NamedTuple):
    group: str
    kind: str  # NBIRTH, NDATA, ..., or STATE (then ``node`` is the host id)
    node: str
    device: str | None = None


def parse_topic(topic: str) -> Topic | None:
    """The parts of a Sparkplug B topic; None for a topic outside the namespace or malformed."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != NAMESPACE or not all(parts):
        return None
    if parts[1] == "STATE" and len(parts) == 3:
        return Topic("", "STATE", parts[2])
    if len(parts) == 4 and parts[2] in NODE_TYPES:
        return Topic(parts[1], parts[2], parts[3])
    if len(parts) == 5 and parts[2] in DEVICE_TYPES:
        return Topic(parts[1], parts[2], parts[3], parts[4])
    return None


def state_topic(host_id: str) -> str:
    return f"{NAMESPACE}/STATE/{host_id}"


def node_topic(group: str, kind: str, node: str) -> str:
    return f"{NAMESPACE}/{group}/{kind}/{node}"
