"""The soft interlock's configuration (issue 15): the site's ``interlock:`` section (where
and how often the signal goes out), and ``interlock:`` under ``defaults:``, an owner and a
machine (which machines have one, and its timing).

A machine has an interlock when its merged section (machine, then owner, then ``defaults``,
key by key, as ``booking:``) sends it somewhere: ``mqtt: true`` (the default once any layer
has an ``interlock:``) or the machine's own ``opcua:`` node. The OPC UA node is written
through the endpoint the machine's collector reads, so only a machine read over OPC UA can
have one; ``mqtt: true`` needs the site's broker. ``interlock_checks`` reports both at the
key that asks for what is missing.

It is an access signal for the machine's HMI or controller, never a safety function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import AfterValidator, Field

from pilotline.collectors.fields import Model, PositiveSeconds, Seconds
from pilotline.collectors.opcua.config import NODE_ID_RE
from pilotline.gateway.config.fields import ms
from pilotline.gateway.config.locate import Loc
from pilotline.rules.booking.interlock import Timing

__all__ = [
    "InterlockNode",
    "InterlockPolicy",
    "InterlockSettings",
    "InterlockSpec",
    "MachineInterlock",
    "interlock_checks",
    "merged_interlock",
]

_MAX_LEAD_S: Final = 86_400.0


def _topic_prefix(value: str) -> str:
    if not value or value.startswith("/") or value.endswith("/"):
        raise ValueError(f"{value!r}: a topic prefix is non-empty, without a leading or "
                         "trailing /")
    if any(ch in value for ch in "+#\x00"):
        raise ValueError(f"{value!r}: a topic prefix has no wildcards (+, #) or NUL")
    return value


def _node_id(value: str) -> str:
    if not NODE_ID_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an OPC UA node id (like 'ns=2;s=Laser01.Enable' or "
            "'nsu=urn:vendor:laser;s=Enable')"
        )
    return value


NodeId = Annotated[str, AfterValidator(_node_id)]


class InterlockSettings(Model):
    """The site's ``interlock:``: where the machines' interlock signals go and how often they
    are evaluated (which machines have one: ``interlock:`` under ``defaults``, an owner or a
    machine)."""

    topic_prefix: Annotated[str, AfterValidator(_topic_prefix)] | None = None
    """Signals go, retained, to ``<topic_prefix>/interlock/<machine>``; default
    ``pilotline/<site>``."""
    interval_s: PositiveSeconds = Field(default=2.0, le=60)
    """The signals are evaluated this often (and at once when a booking changes)."""
    retry_s: PositiveSeconds = Field(default=5.0, le=3600)
    """A failed OPC UA write, or one that did not read back, is tried again after this."""
    timeout_s: PositiveSeconds = Field(default=10.0, le=300)
    """How long a connection, a publish's acknowledgement or an OPC UA write may take."""

    def prefix(self, site: str) -> str:
        return self.topic_prefix or f"pilotline/{site}"


class InterlockPolicy(Model):
    """``interlock:`` under ``defaults`` or an owner: the machines it covers get an interlock
    signal, with this timing. Each key is optional: one not set here comes from the owner's,
    then ``defaults.interlock``, then the default given with the key."""

    mqtt: bool | None = None
    """Publish the signal, retained, on ``<prefix>/interlock/<machine>`` (default true;
    needs the site's ``mqtt:`` broker). ``false`` on a machine turns off one set by its owner
    or the site."""
    lead_s: Annotated[Seconds, Field(le=_MAX_LEAD_S)] | None = None
    """Enabled this long before a booking starts, for setting up (default 0)."""
    off_delay_s: Annotated[Seconds, Field(le=_MAX_LEAD_S)] | None = None
    """Still enabled this long after a booking's end, so a run that ends a little late is not
    cut (default 0)."""


class InterlockNode(Model):
    """``opcua:`` of a machine's ``interlock:``: the boolean node the signal is written to,
    on the endpoint of the machine's own ``opcua:`` source, and read back."""

    node: NodeId
    """The boolean node written ``true`` while enabled (``ns=2;s=Laser01.Enable``)."""
    readback: NodeId | None = None
    """The node read back after each write (default: ``node`` itself); the signal counts as
    set only when it reads what was written."""


class MachineInterlock(InterlockPolicy):
    """A machine's ``interlock:``: its keys override its owner's and the site's, plus the OPC
    UA node only a machine can name."""

    opcua: InterlockNode | None = None
    """Also write the signal to this node of the machine's OPC UA server, and read it back
    (the machine must be read over ``opcua:``)."""


@dataclass(frozen=True, slots=True)
class InterlockSpec:
    """One machine's interlock, merged: where it goes and its timing."""

    machine: str
    mqtt: bool
    timing: Timing
    node: str | None = None
    readback: str | None = None


def merged_interlock(
    machine: str, layers: Sequence[InterlockPolicy | None]
) -> InterlockSpec | None:
    """``machine``'s interlock from ``layers``, most general first (defaults, owner,
    machine), each key from the last layer that sets it; None: it has none (no layer has an
    ``interlock:``, or the merged one goes nowhere)."""
    present = [layer for layer in layers if layer is not None]
    if not present:
        return None
    keys: dict[str, Any] = {}
    for layer in present:
        keys.update(layer.model_dump(exclude_none=True, exclude={"opcua"}))
    own = present[-1] if isinstance(layers[-1], MachineInterlock) else None
    node = own.opcua if isinstance(own, MachineInterlock) else None
    mqtt = bool(keys.get("mqtt", True))
    if not mqtt and node is None:
        return None
    return InterlockSpec(
        machine=machine,
        mqtt=mqtt,
        timing=Timing(ms(keys.get("lead_s", 0.0)), ms(keys.get("off_delay_s", 0.0))),
        node=None if node is None else node.node,
        readback=None if node is None else (node.readback or node.node),
    )


def interlock_checks(data: Mapping[str, Any], found: list[tuple[Loc, str]]) -> None:
    """Each machine's merged interlock has what it sends to: an OPC UA node needs the
    machine's ``opcua:`` source (its endpoint is written to), ``mqtt`` the site's broker.
    Reported at the key that asks (on raw data that may be partly wrong: what does not
    validate is skipped; the models report it)."""
    has_broker = data.get("mqtt") is not None
    owners = data.get("owners")
    site_mqtt = _mqtt_key(data.get("defaults"), ("defaults",))
    zones = data.get("zones")
    for zi, zone in enumerate(zones if isinstance(zones, list) else []):
        machines = zone.get("machines") if isinstance(zone, dict) else None
        for mi, machine in enumerate(machines if isinstance(machines, list) else []):
            if not isinstance(machine, dict):
                continue
            here: Loc = ("zones", zi, "machines", mi, "interlock")
            section = machine.get("interlock")
            owner = owners.get(machine.get("owner")) if isinstance(owners, dict) else None
            layers = [
                site_mqtt,
                _mqtt_key(owner, ("owners", str(machine.get("owner")))),
                _mqtt_key(machine, here[:-1]),
            ]
            if isinstance(section, dict) and section.get("opcua") is not None and not (
                isinstance(machine.get("opcua"), dict)
            ):
                found.append(
                    (
                        (*here, "opcua"),
                        "the interlock's node is written through the machine's OPC UA "
                        "endpoint, and this machine has no opcua: source",
                    )
                )
            present = [layer for layer in layers if layer is not None]
            if not present or has_broker:
                continue
            loc, mqtt = next(
                ((loc, v) for loc, v in reversed(present) if v is not None), (present[-1][0], True)
            )
            if mqtt:
                where = loc if loc[-1] == "mqtt" else (*loc, "interlock")
                problem = (
                    where,
                    "the MQTT interlock needs the site's mqtt: broker section (or set "
                    "interlock.mqtt: false)",
                )
                if problem not in found:  # an owner's or the site's mistake, once
                    found.append(problem)


def _mqtt_key(parent: object, here: Loc) -> tuple[Loc, bool | None] | None:
    """The ``interlock:`` section under ``parent``: where its ``mqtt`` key is (or the
    section, when it sets none) and its value (None: not set)."""
    if not isinstance(parent, dict) or not isinstance(parent.get("interlock"), dict):
        return None
    value = parent["interlock"].get("mqtt")
    if isinstance(value, bool):
        return (*here, "interlock", "mqtt"), value
    return here, None
