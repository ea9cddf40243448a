"""InfluxDB line protocol, formatted by hand: this is the gateway's hot path.

influxdb-client's ``Point`` costs several microseconds a point; direct formatting with
``str.translate`` and cached series keys costs well under one. The output follows the
escaping of ``Point.to_line_protocol()`` (and is checked against it by the tests):

- measurement: comma and space escaped;
- tag keys, tag values and field keys: comma, equals sign and space escaped;
- string field values: double quote and backslash escaped;
- newline, tab and carriage return in names and tag values are written as ``\\n``, ``\\t``
  and ``\\r`` (line protocol has no way to carry them; a raw newline would end the line);
- a tag value ending in a backslash gets a trailing escaped space, as ``Point`` does, so
  the backslash cannot escape the separator after it; a measurement, tag key or field key
  ending in a backslash raises ``UnwritableNameError`` (``Point`` writes a corrupt line for it).
  Signal names are checked where they come in (``pilotline.collectors.signals``: the site
  file and the MQTT decoder refuse them), so a telemetry line never meets one.

Tags are sorted by key (InfluxDB's canonical order, cheapest to ingest); tags with an empty
key or value are omitted because line protocol forbids them. Fields keep the order given.
Integers carry the ``i`` suffix, booleans are ``true``/``false``, floats are written with
``repr`` (a trailing ``.0`` trimmed, as ``Point`` does); NaN and infinities raise
``ValueError`` because InfluxDB rejects the whole batch for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

FieldValue = float | int | bool | str

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_KEY = str.maketrans(
    {",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"}
)
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": "\\\\"})

# Field keys repeat endlessly (the configured signal names): escape each once. Bounded so
# that a stream of distinct names (a misbehaving source) cannot grow it without limit.
_KEY_CACHE: dict[str, str] = {}
_KEY_CACHE_MAX = 4096
# Series keys (measurement and tags) repeat just as much.
_SERIES_CACHE: dict[tuple[object, ...], str] = {}
_SERIES_CACHE_MAX = 65_536


class UnwritableNameError(ValueError):
    """A measurement, tag key or field key line protocol has no way to write."""


def escape_measurement(name: str) -> str:
    if not name:
        raise UnwritableNameError("empty measurement name")
    if name.endswith("\\"):
        raise UnwritableNameError(f"measurement {name[:40]!r} ends with a backslash")
    return name.translate(_ESCAPE_MEASUREMENT)


def escape_key(key: str) -> str:
    """A tag key or field key.

    A key ending in a backslash would escape the ``=`` after it and corrupt the line (which
    ``Point`` lets through); there is no escape for it, so it is refused.
    """
    if key.endswith("\\"):
        raise UnwritableNameError(f"key {key[:40]!r} ends with a backslash")
    return key.translate(_ESCAPE_KEY)


def escape_tag_value(value: str) -> str:
    escaped = value.translate(_ESCAPE_KEY)
    if escaped.endswith("\\"):
        escaped += " "
    return escaped


def series_key(measurement: str, tags: Mapping[str, str]) -> str:
    """``measurement,k=v,...`` with tags sorted by key and empty ones omitted.

    Callers that write many points of the same series (telemetry of one machine) compute
    this once and pass it to ``line_from_key``.
    """
    parts = [escape_measurement(measurement)]
    for key in sorted(tags):
        value = tags[key]
        if key and value:
            parts.append(f"{escape_key(key)}={escape_tag_value(value)}")
    return ",".join(parts)


def field_key(key: str) -> str:
    """``escape_key`` for field keys, cached (they are the configured signal names)."""
    escaped = _KEY_CACHE.get(key)
    if escaped is None:
        if not key:
            raise UnwritableNameError("empty field key")
        escaped = escape_key(key)
        if len(_KEY_CACHE) >= _KEY_CACHE_MAX:
            _KEY_CACHE.clear()
        _KEY_CACHE[key] = escaped
    return escaped


def format_value(value: FieldValue) -> str:
    """One field value in line protocol syntax."""
    # Exact type checks first: they are the common case and cheaper than isinstance chains.
    kind = type(value)
    if kind is float:
        return _format_float(value)  # type: ignore[arg-type]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return _format_int(value)  # type: ignore[arg-type]
    if kind is str:
        return '"' + value.translate(_ESCAPE_STRING) + '"'  # type: ignore[union-attr]
    # Subclasses (IntEnum, numpy scalars registered as float, str subclasses)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _format_int(int(value))
    if isinstance(value, float):
        return _format_float(float(value))
    if isinstance(value, str):
        return '"' + str(value).translate(_ESCAPE_STRING) + '"'
    raise TypeError(f"unsupported field value type {kind.__name__}")


def _format_float(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"non-finite float field value {value!r}")
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _format_int(value: int) -> str:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"integer field value {value} does not fit in 64 bits")
    return f"{value}i"


def line_from_key(key: str, fields: Mapping[str, FieldValue], ts_ms: int) -> str:
    """A line for a precomputed ``series_key``."""
    if not fields:
        raise ValueError("a point needs at least one field")
    body = ",".join([f"{field_key(k)}={format_value(v)}" for k, v in fields.items()])
    return f"{key} {body} {ts_ms * 1_000_000:d}"


def line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue],
    ts_ms: int,
) -> str:
    """One point in line protocol, timestamp in nanoseconds (``ts_ms * 1_000_000``)."""
    cache_key = (measurement, *tags.items())
    key = _SERIES_CACHE.get(cache_key)
    if key is None:
        key = series_key(measurement, tags)
        if len(_SERIES_CACHE) >= _SERIES_CACHE_MAX:
            _SERIES_CACHE.clear()
        _SERIES_CACHE[cache_key] = key
    return line_from_key(key, fields, ts_ms)
