"""Decode a JSON payload by its ``Format`` (formats.py) into a ``Sample`` or a ``Rejection``.

Pure, never raises, no clock (the arrival time is passed in). The default format keeps to
``parse.decode``, the hot path; this decoder reads the others: the time at a configured path
and unit, the signals in a nested object, one value per topic (the signal named by the
topic's ``{signal}`` level). A payload without its time is quarantined as ``missing_time``
unless the format says ``missing_time: arrival``: never stamped at arrival silently.

Signals follow the rules of ``parse.py``: a number becomes a float, a string of at most 256
characters stays a string, the name must be one line protocol can write; a boolean is 1 or
0 where the format says ``booleans: number``, else refused like any other type.
"""

from __future__ import annotations

import math

import orjson

from pilotline.collectors.mqtt.formats import Format
from pilotline.collectors.mqtt.parse import (
    _NAMES,
    _QUALITIES,
    BAD_TIMESTAMP,
    MALFORMED_JSON,
    MAX_STRING_CHARS,
    MAX_TS_MS,
    MIN_TS_MS,
    MISSING_TIME,
    NAN,
    NOT_AN_OBJECT,
    OVERSIZED,
    WRONG_TYPE,
    Rejection,
    _name_rejection,
    _short,
    _type_name,
    iso_time_ms,
)
from pilotline.rules.sample import Quality, Sample, SignalValue

__all__ = ["decode_mapped", "from_mapped"]

_MISSING = object()
_INT_SCALE = {"ms": (1, 1), "s": (1000, 1), "us": (1, 1000), "ns": (1, 1_000_000)}
"""unit -> (multiply, divide) to get milliseconds from an integer, exactly."""


def decode_mapped(
    payload: bytes,
    machine: str,
    arrival_ms: int,
    max_bytes: int,
    fmt: Format,
    *,
    signal: str | None = None,
) -> Sample | Rejection:
    """Decode ``payload`` for ``machine`` by ``fmt``; ``signal``: the name a ``{signal}``
    topic level gave (the payload is then one value)."""
    if len(payload) > max_bytes:
        return Rejection(OVERSIZED, f"{len(payload)} bytes > max_payload_bytes {max_bytes}")
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return Rejection(MALFORMED_JSON, str(exc)[:120] or "not JSON")
    return from_mapped(obj, machine, arrival_ms, fmt, signal=signal)


def _lookup(obj: object, path: tuple[str, ...]) -> object:
    for key in path:
        if type(obj) is not dict:
            return _MISSING
        obj = obj.get(key, _MISSING)
        if obj is _MISSING:
            return _MISSING
    return obj


def _label(path: tuple[str, ...]) -> str:
    return ".".join(path) or "."


def from_mapped(
    obj: object, machine: str, arrival_ms: int, fmt: Format, *, signal: str | None = None
) -> Sample | Rejection:
    """Validate an already parsed JSON value (what ``decode_mapped`` does after parsing)."""
    if signal is None and type(obj) is not dict:
        return Rejection(NOT_AN_OBJECT, f"payload is a JSON {_type_name(obj)}, not an object")
    # The time before the signals: a payload without it (a Telegraf batch) is named for that.
    raw_ts = _lookup(obj, fmt.time)
    if raw_ts is _MISSING:
        if fmt.missing_time != "arrival":
            return Rejection(
                MISSING_TIME,
                f"no {_label(fmt.time)!r} in the payload: the {fmt.name!r} format takes the "
                "time from it (set missing_time: arrival to stamp such payloads on arrival)",
            )
        ts_ms = arrival_ms
    else:
        ts = epoch_ms(raw_ts, fmt.time_unit, _label(fmt.time))
        if isinstance(ts, Rejection):
            return ts
        ts_ms = ts

    values: dict[str, SignalValue] = {}
    if signal is not None:
        # One value per topic: a bare number or string, or an object holding it at ``value``.
        if type(obj) is dict:
            value = _lookup(obj, fmt.value)
            if value is _MISSING:
                return Rejection(
                    WRONG_TYPE,
                    f"no {_label(fmt.value)!r} in the object: a {{signal}} topic carries a "
                    "value, or an object with the value at the format's 'value' path",
                )
        else:
            value = obj
        refused = _add(values, signal, value, fmt.booleans)
        if refused is not None:
            return refused
    else:
        container = _lookup(obj, fmt.signals)
        if type(container) is not dict:
            what = "none" if container is _MISSING else _type_name(container)
            return Rejection(
                NOT_AN_OBJECT,
                f"the signals' object {_label(fmt.signals)!r} is {what}, not an object",
            )
        skip = fmt.skip
        for key, value in container.items():
            if key in skip:
                continue
            refused = _add(values, key, value, fmt.booleans)
            if refused is not None:
                return refused

    quality = Quality.GOOD
    if fmt.quality is not None:
        raw_q = _lookup(obj, fmt.quality)
        if raw_q is not _MISSING:
            q = _QUALITIES.get(raw_q.lower()) if isinstance(raw_q, str) else None
            if q is None:
                return Rejection(
                    WRONG_TYPE,
                    f"{_label(fmt.quality)!r} {_short(raw_q)} is not one of good, uncertain, bad",
                )
            quality = q
    return Sample(machine=machine, ts_ms=ts_ms, values=values, quality=quality)


def _add(
    values: dict[str, SignalValue], key: str, value: object, booleans: bool
) -> Rejection | None:
    """Put signal ``key`` in ``values``, or say why it is refused."""
    if key not in _NAMES:
        refused = _name_rejection(key)
        if refused is not None:
            return refused
    vtype = type(value)
    if vtype is float or vtype is int:
        try:
            number = float(value)  # type: ignore[arg-type]
        except OverflowError:  # an int beyond float range (orjson never yields one)
            number = math.inf
        if not math.isfinite(number):
            return Rejection(NAN, f"{_short(key)} is not a finite number")
        values[key] = number
    elif vtype is str:
        assert isinstance(value, str)
        if len(value) > MAX_STRING_CHARS:
            return Rejection(
                WRONG_TYPE,
                f"{_short(key)} is a string of {len(value)} chars (max {MAX_STRING_CHARS})",
            )
        values[key] = value
    elif vtype is bool and booleans:
        values[key] = 1.0 if value else 0.0
    else:
        return Rejection(
            WRONG_TYPE, f"{_short(key)} is {_type_name(value)}: expected a number or a string"
        )
    return None


def _in_range(ms: int) -> bool:
    return MIN_TS_MS <= ms < MAX_TS_MS


def _as_ms(value: int | float, unit: str) -> int:
    if type(value) is int:
        mul, div = _INT_SCALE[unit]
        return value * mul // div
    return int(value * _INT_SCALE[unit][0] / _INT_SCALE[unit][1])


def epoch_ms(value: object, unit: str, label: str) -> int | Rejection:
    """A time in ``unit`` (a number) or ISO 8601 (a string) as epoch milliseconds, or why it
    is refused; ``label`` names it in the reason (its path)."""
    if isinstance(value, bool):
        return Rejection(BAD_TIMESTAMP, f"{label!r} is a bool: expected a time")
    if isinstance(value, int | float):
        if unit == "iso8601":
            return Rejection(
                BAD_TIMESTAMP, f"{label!r} is a number: the format's time_unit is iso8601"
            )
        if not math.isfinite(value):
            return Rejection(BAD_TIMESTAMP, f"{label!r} is not finite: {value!r}")
        ms = _as_ms(value, unit)
        if _in_range(ms):
            return ms
        for other in _INT_SCALE:
            if other != unit and _in_range(_as_ms(value, other)):
                return Rejection(
                    BAD_TIMESTAMP,
                    f"{label!r} {value!r} looks like epoch {other}, not {unit}: set the "
                    f"format's time_unit: {other}",
                )
        return Rejection(
            BAD_TIMESTAMP, f"{label!r} {_short(value)} is outside 2000..2100 (epoch {unit})"
        )
    if isinstance(value, str):
        return iso_time_ms(value, label)
    return Rejection(
        BAD_TIMESTAMP, f"{label!r} is {_type_name(value)}: expected epoch {unit} or ISO 8601"
    )
