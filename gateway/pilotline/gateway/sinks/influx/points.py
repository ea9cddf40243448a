"""Core events to lines of the time-series contract (../shared/DESIGN.md).

- sample values -> ``telemetry`` (site, zone, machine): one float per numeric signal;
- ``StateChanged`` -> ``machine_state`` (+ owner): ``state``, ``state_code``;
- ``IdleWindowClosed`` -> ``idle_window``, stamped at the window's start: ``duration_s``,
  ``end_ms``, ``offered``;
- ``Capacity`` -> ``capacity`` (+ owner): ``available``, ``idle_for_s``, ``offered``,
  ``reserved`` (0/1: a live booking covers it; ``offered`` is then 0);
- ``ZoneCapacity`` -> ``zone_capacity`` (site, zone, capability; no machine): ``machines``,
  ``available``, ``running``, ``down``, ``offline``, ``reserved``.
- an alert core ``AlertTransition`` -> ``alert`` (site, zone, machine, rule, severity):
  ``firing`` (0/1), ``value`` (float; NaN is written as 0), ``message`` (string).

- a day's ``Utilization`` -> ``utilization`` (site, zone, machine; zone rows without
  machine), stamped at the start of the day: ``running``, ``idle``, ``down``,
  ``maintenance``, ``offline`` (shares 0..1) and the same with ``_s`` (seconds; for a zone,
  machine-seconds), plus ``period_s`` (the measured part of the day; machine-seconds for a
  zone) and, on zone rows, ``machines`` (int).

Zone-level points (``zone_capacity``, zone rows of ``utilization``) of a gateway that owns only
part of a zone (``shard_by: machine``, docs/scaling.md) carry one more tag, ``shard`` = ``K/N``:
each such gateway counts only its own machines, and readers sum over the tag.

``IdleWindowOpened`` and ``SampleRejected`` produce no line. Every line goes to the outbox
with a priority: ``PRIORITY_EVENT`` for states, windows, capacity and alerts,
``PRIORITY_TELEMETRY`` for raw telemetry, which is shed first under disk pressure.

Field types never vary for a given field (InfluxDB rejects a batch on a type conflict):
telemetry values are always floats, even when a source sends ``812`` one time and ``812.5``
the next; 0/1 flags are always integers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from pilotline.gateway.sinks.influx.lineproto import (
    UnwritableNameError,
    field_key,
    line_from_key,
    series_key,
)
from pilotline.rules.alerts import AlertTransition
from pilotline.rules.events import (
    Capacity,
    Event,
    IdleWindowClosed,
    StateChanged,
    ZoneCapacity,
)
from pilotline.rules.utilization import STATES, Usage, Utilization

PRIORITY_EVENT = 0
PRIORITY_TELEMETRY = 1

TELEMETRY = "telemetry"
MACHINE_STATE = "machine_state"
IDLE_WINDOW = "idle_window"
CAPACITY = "capacity"
ZONE_CAPACITY = "zone_capacity"
UTILIZATION = "utilization"
ALERT = "alert"


# Series keys repeat for every point of a machine: format each once. Bounded, so a stream
# of distinct names cannot grow it without limit.
_KEYS: dict[tuple[str, ...], str] = {}
_KEYS_MAX = 65_536


def _key(measurement: str, *pairs: str) -> str:
    """Cached ``series_key`` of ``measurement`` and tag ``k1, v1, k2, v2, ...`` pairs."""
    cache_key = (measurement, *pairs)
    key = _KEYS.get(cache_key)
    if key is None:
        tags = dict(zip(pairs[::2], pairs[1::2], strict=True))
        key = series_key(measurement, tags)
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        _KEYS[cache_key] = key
    return key


_TELEMETRY_KEYS: dict[tuple[str, str, str], str] = {}
_FIELD_PREFIXES: dict[str, str] = {}  # signal name -> its escaped field key and "="


def telemetry_line(
    site: str, zone: str, machine: str, values: Mapping[str, float | str], ts_ms: int
) -> str | None:
    """One ``telemetry`` line with a float field per numeric signal, or None if none.

    String values (enumerated states) are not telemetry fields and are skipped, as are
    non-finite numbers (the core rejects them; they must never poison a batch) and names
    line protocol cannot write (the collectors refuse them before; this never raises).
    """
    # The hot path, one call per sample: specialised for float fields, with the series key
    # and each field's "key=" cached (measured: benchmarks/README.md, "The hot path").
    parts: list[str] = []
    for name, value in values.items():
        if type(value) is float:
            if value - value != 0.0:  # NaN or infinite
                continue
            text = repr(value)
        elif isinstance(value, str):
            continue
        else:
            try:
                number = float(value)
            except (TypeError, ValueError, OverflowError):  # not a number: not a field
                continue
            if not math.isfinite(number):
                continue
            text = repr(number)
        if text[-2:] == ".0":
            text = text[:-2]
        prefix = _FIELD_PREFIXES.get(name)
        if prefix is None:
            try:
                prefix = field_key(name) + "="
            except UnwritableNameError:  # refused where names come in; never fail the sample
                continue
            if len(_FIELD_PREFIXES) >= _KEYS_MAX:
                _FIELD_PREFIXES.clear()
            _FIELD_PREFIXES[name] = prefix
        parts.append(prefix + text)
    if not parts:
        return None
    key = _TELEMETRY_KEYS.get((site, zone, machine))
    if key is None:
        key = _key(TELEMETRY, "site", site, "zone", zone, "machine", machine)
        if len(_TELEMETRY_KEYS) >= _KEYS_MAX:
            _TELEMETRY_KEYS.clear()
        _TELEMETRY_KEYS[site, zone, machine] = key
    return f"{key} {','.join(parts)} {ts_ms * 1_000_000}"


def event_lines(site: str, event: Event, shard: str = "") -> list[str]:
    """The contract lines of one core event (empty for events that are not measurements).

    ``shard`` (``"K/N"``) tags the zone-level ``zone_capacity`` of a gateway that owns only
    part of a zone's machines (``SiteConfig.shard_tag``); ``""`` adds no tag."""
    if isinstance(event, StateChanged):
        key = _key(
            MACHINE_STATE,
            "site",
            site,
            "zone",
            event.zone,
            "machine",
            event.machine,
            "owner",
            event.owner,
        )
        return [
            line_from_key(
                key, {"state": event.state.value, "state_code": event.state.code}, event.ts_ms
            )
        ]
    if isinstance(event, IdleWindowClosed):
        key = _key(IDLE_WINDOW, "site", site, "zone", event.zone, "machine", event.machine)
        fields = {
            "duration_s": float(event.duration_s),
            "end_ms": event.end_ms,
            "offered": int(event.offered),
        }
        return [line_from_key(key, fields, event.start_ms)]
    if isinstance(event, Capacity):
        key = _key(
            CAPACITY,
            "site",
            site,
            "zone",
            event.zone,
            "machine",
            event.machine,
            "owner",
            event.owner,
        )
        fields = {
            "available": int(event.available),
            "idle_for_s": float(event.idle_for_s),
            "offered": int(event.offered),
            "reserved": int(event.reserved),
        }
        return [line_from_key(key, fields, event.ts_ms)]
    if isinstance(event, ZoneCapacity):
        key = _key(
            ZONE_CAPACITY,
            "site",
            site,
            "zone",
            event.zone,
            "capability",
            event.capability,
            "shard",
            shard,
        )
        counts = {
            "machines": int(event.machines),
            "available": int(event.available),
            "running": int(event.running),
            "down": int(event.down),
            "offline": int(event.offline),
            "reserved": int(event.reserved),
        }
        return [line_from_key(key, counts, event.ts_ms)]
    return []


def alert_rows(site: str, transitions: Iterable[AlertTransition]) -> list[tuple[int, str]]:
    """``(PRIORITY_EVENT, alert line)`` rows of alert transitions, stamped at each one."""
    rows = []
    for t in transitions:
        key = _key(
            ALERT,
            "site",
            site,
            "zone",
            t.zone,
            "machine",
            t.machine,
            "rule",
            t.rule,
            "severity",
            t.severity,
        )
        value = float(t.value) if math.isfinite(t.value) else 0.0
        fields: dict[str, float | int | str] = {
            "firing": int(t.firing),
            "value": value,
            "message": t.message,
        }
        rows.append((PRIORITY_EVENT, line_from_key(key, fields, t.ts_ms)))
    return rows


def event_rows(site: str, events: Iterable[Event], shard: str = "") -> list[tuple[int, str]]:
    """``(PRIORITY_EVENT, line)`` rows of many events, ready for ``Store.commit(lines=...)``."""
    return [
        (PRIORITY_EVENT, text) for event in events for text in event_lines(site, event, shard)
    ]


def _usage_fields(usage: Usage) -> dict[str, float | int]:
    fields: dict[str, float | int] = {state.value: usage.share(state) for state in STATES}
    fields.update({f"{state.value}_s": usage.seconds(state) for state in STATES})
    fields["period_s"] = usage.period_ms / 1000.0
    return fields


def utilization_rows(
    site: str, report: Utilization, ts_ms: int, shard: str = ""
) -> list[tuple[int, str]]:
    """``utilization`` lines of every machine and zone of ``report``, stamped at ``ts_ms``
    (the start of the day they cover), as ``(PRIORITY_EVENT, line)`` rows; zone rows carry
    ``shard`` as a tag when it is not empty (see ``event_lines``)."""
    rows: list[tuple[int, str]] = []
    for m in report.machines:
        key = _key(UTILIZATION, "site", site, "zone", m.zone, "machine", m.machine)
        rows.append((PRIORITY_EVENT, line_from_key(key, _usage_fields(m.usage), ts_ms)))
    for z in report.zones:
        key = _key(UTILIZATION, "site", site, "zone", z.zone, "shard", shard)
        fields = {**_usage_fields(z.usage), "machines": z.machines}
        rows.append((PRIORITY_EVENT, line_from_key(key, fields, ts_ms)))
    return rows
