"""Checks across objects of the site: ids and topics unique, each machine with one source
that has what it needs, machines on one OPC UA endpoint agreeing on its connection, owners
that exist (each machine's in ``owners:`` when the site lists owners, each listed one a
machine's), alert rules and channels that name what exists (``alerts.alert_checks``), each
machine's merged booking rules (``booking.booking_checks``).

They run on the file's plain data, which may be partly wrong (those parts are skipped), so
that they are reported with their lines and alongside the models' own errors.
"""

from __future__ import annotations

import difflib

from pilotline.collectors.opcua.config import CONNECTION_FIELDS
from pilotline.gateway.config.alerts import alert_checks
from pilotline.gateway.config.booking import booking_checks
from pilotline.gateway.config.interlock import interlock_checks
from pilotline.gateway.config.locate import Loc, format_loc
from pilotline.gateway.config.mqtt_topics import machine_filter, pattern_checks
from pilotline.gateway.config.publish_back import publish_back_checks

__all__ = ["cross_checks"]


def _sparkplug_checks(
    here: Loc, source: object, state: object, has_broker: bool, found: list[tuple[Loc, str]]
) -> None:
    """A Sparkplug machine: the site's broker, and its state signal among its metrics."""
    if source is None:
        return
    if not has_broker:
        found.append(
            ((*here, "sparkplug"), "a Sparkplug machine needs the site's mqtt: broker section")
        )
    if not isinstance(source, dict) or not isinstance(state, dict):
        return
    metrics, signal = source.get("metrics"), state.get("signal")
    if isinstance(metrics, dict) and metrics and isinstance(signal, str) and signal not in metrics:
        found.append(
            (
                (*here, "state", "signal"),
                f"{signal!r} is not one of sparkplug.metrics ({', '.join(map(str, metrics))})",
            )
        )


def cross_checks(data: object) -> list[tuple[Loc, str]]:
    """Checks across objects, on plain data that may be partly wrong (those parts are skipped)."""
    found: list[tuple[Loc, str]] = []
    if not isinstance(data, dict):
        return found
    has_broker = data.get("mqtt") is not None
    zone_ids: dict[str, Loc] = {}
    machine_ids: dict[str, Loc] = {}
    topics: dict[str, tuple[Loc, str]] = {}
    topicless: list[tuple[Loc, str]] = []  # machines on the site's mqtt.topics patterns
    endpoints: dict[str, tuple[str, dict[str, object]]] = {}
    zones = data.get("zones")
    owners = data.get("owners")
    # A file that lists owners names every machine's: a misspelt owner would otherwise get
    # no policy and silently lose the owner's offering hours (offering fails closed).
    listed = [str(o) for o in owners] if isinstance(owners, dict) and owners else None
    for zi, zone in enumerate(zones if isinstance(zones, list) else []):
        if not isinstance(zone, dict):
            continue
        _unique(zone.get("id"), ("zones", zi), zone_ids, "zone id", found)
        machines = zone.get("machines")
        for mi, machine in enumerate(machines if isinstance(machines, list) else []):
            if not isinstance(machine, dict):
                continue
            here: Loc = ("zones", zi, "machines", mi)
            _unique(machine.get("id"), here, machine_ids, "machine id", found)
            owner = machine.get("owner")
            if listed is not None and isinstance(owner, str) and owner not in listed:
                found.append(((*here, "owner"), _unknown_owner(owner, listed)))
            mqtt, opcua = machine.get("mqtt"), machine.get("opcua")
            sparkplug = machine.get("sparkplug")
            sources = [k for k in ("mqtt", "opcua", "sparkplug") if machine.get(k) is not None]
            if not sources:
                found.append(
                    (here, "no source: give the machine an mqtt:, opcua: or sparkplug: section")
                )
            elif len(sources) > 1:
                named = " and ".join(f"{k}:" for k in sources)
                found.append((here, f"both {named} are set: a machine has one source"))
            _sparkplug_checks(here, sparkplug, machine.get("state"), has_broker, found)
            if mqtt is not None and not has_broker:
                found.append(
                    ((*here, "mqtt"), "an MQTT machine needs the site's mqtt: broker section")
                )
            if isinstance(mqtt, dict):
                topic = machine_filter(mqtt.get("topic"), machine.get("id"))
                if mqtt.get("topic") is None and isinstance(machine.get("id"), str):
                    topicless.append((here, machine["id"]))
                if isinstance(topic, str):
                    if topic in topics:
                        other, other_id = topics[topic]
                        found.append(
                            (
                                (*here, "mqtt", "topic"),
                                f"topic {topic!r} is already the topic of {other_id} "
                                f"({format_loc(other)}): one topic per machine",
                            )
                        )
                    else:
                        topics[topic] = (here, str(machine.get("id")))
            if isinstance(opcua, dict) and isinstance(opcua.get("endpoint"), str):
                # Machines on one endpoint share one connection, so one set of its settings.
                first_id, first = endpoints.setdefault(
                    opcua["endpoint"], (str(machine.get("id")), opcua)
                )
                for key in CONNECTION_FIELDS:
                    if first is not opcua and opcua.get(key) != first.get(key):
                        found.append(
                            (
                                (*here, "opcua", key),
                                f"{opcua.get(key)!r} differs from {first.get(key)!r} of "
                                f"{first_id} on the same endpoint: machines on one endpoint "
                                "share its connection and its settings",
                            )
                        )
            state = machine.get("state")
            if isinstance(opcua, dict) and isinstance(state, dict):
                nodes, signal = opcua.get("nodes"), state.get("signal")
                if (
                    isinstance(nodes, dict)
                    and nodes
                    and isinstance(signal, str)
                    and (signal not in nodes)
                ):
                    found.append(
                        (
                            (*here, "state", "signal"),
                            f"{signal!r} is not one of opcua.nodes "
                            f"({', '.join(str(k) for k in nodes)})",
                        )
                    )
    pattern_checks(data, topicless, topics, found)
    alert_checks(data, zone_ids, machine_ids, found)
    booking_checks(data, found)
    interlock_checks(data, found)
    publish_back_checks(data, found)
    for owner in owners if isinstance(owners, dict) else {}:
        machine_owners = {
            m.get("owner")
            for z in (zones if isinstance(zones, list) else [])
            if isinstance(z, dict) and isinstance(z.get("machines"), list)
            for m in z["machines"]
            if isinstance(m, dict)
        }
        if isinstance(owner, str) and owner not in machine_owners:
            found.append(
                (("owners", owner), f"no machine has the owner {owner!r}: a typo? "
                 f"owners of machines: {', '.join(sorted(str(o) for o in machine_owners))}")
            )
    return found


def _unknown_owner(owner: str, listed: list[str]) -> str:
    close = difflib.get_close_matches(owner, listed, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"owners: lists {', '.join(listed)}"
    return f"unknown owner {owner!r}: {hint}"


def _unique(
    value: object, here: Loc, seen: dict[str, Loc], what: str, found: list[tuple[Loc, str]]
) -> None:
    if not isinstance(value, str):
        return
    if value in seen:
        also = format_loc(seen[value])
        found.append(((*here, "id"), f"duplicate {what} {value!r}: also {also}"))
    else:
        seen[value] = here
