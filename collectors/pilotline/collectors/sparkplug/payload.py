"""A Sparkplug B payload decoded: the only module that touches protobuf.

The wire keeps every integer unsigned (``int_value`` is a uint32, ``long_value`` a uint64);
the datatype of the metric, which a DATA message usually leaves out and its birth gives, says
how to read it back: ``typed`` takes the low bits of the width and reads them as two's
complement for Int8..Int64 (so a producer that sign-extends an Int8 to 32 bits and one that
does not both decode to the same number). Booleans become 1.0/0.0 (a threshold state can read
them), DateTime its epoch milliseconds; types pilotline has no use for (DataSet, Template,
Bytes, File, arrays) are None, and the host counts them as unsupported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from google.protobuf.message import DecodeError

from pilotline.collectors.sparkplug.proto import sparkplug_b_pb2 as pb

__all__ = ["DataType", "Metric", "Payload", "PayloadError", "decode", "encode_rebirth", "typed"]


class PayloadError(ValueError):
    """Bytes that are not a Sparkplug B payload."""


class DataType:
    """The specification's ``DataType`` numbers that pilotline reads."""

    UNKNOWN = 0
    INT8, INT16, INT32, INT64 = 1, 2, 3, 4
    UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
    FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT, UUID = 9, 10, 11, 12, 13, 14, 15


_SIGNED_BITS = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}
_UNSIGNED_BITS = {DataType.UINT8: 8, DataType.UINT16: 16, DataType.UINT32: 32, DataType.UINT64: 64}
_TEXT = frozenset({DataType.STRING, DataType.TEXT, DataType.UUID})

Raw = int | float | bool | str | None
"""A metric's value as the wire holds it (the oneof's member), before its datatype is known."""


class Metric(NamedTuple):
    """One metric as the wire holds it. A named tuple rather than a frozen dataclass: one is
    built per metric of every message, and a frozen dataclass's ``__init__`` costs twice as
    much (benchmarks/README.md, "Sparkplug B")."""

    name: str | None
    alias: int | None
    timestamp: int | None
    datatype: int | None
    raw: Raw
    is_null: bool = False
    is_historical: bool = False
    quality: int | None = None
    """The ``Quality`` property (OPC DA codes: 192 good), which Ignition and others send."""


@dataclass(frozen=True, slots=True)
class Payload:
    timestamp: int | None
    seq: int | None
    metrics: tuple[Metric, ...]

    def metric(self, name: str) -> Metric | None:
        for m in self.metrics:
            if m.name == name:
                return m
        return None


_SCALARS = ("int_value", "long_value", "float_value", "double_value", "boolean_value",
            "string_value")


def _quality(metric: pb.Payload.Metric) -> int | None:
    if not metric.HasField("properties"):
        return None
    props = metric.properties
    for key, value in zip(props.keys, props.values, strict=False):
        if key.lower() == "quality":
            which = value.WhichOneof("value")
            if which == "int_value":
                return int(value.int_value)
            if which == "long_value":
                return int(value.long_value)
    return None


def decode(data: bytes) -> Payload:
    """The payload in ``data``; ``PayloadError`` when it is not one."""
    message = pb.Payload()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise PayloadError(f"not a Sparkplug B payload: {exc}") from None
    metrics = []
    for m in message.metrics:
        which = m.WhichOneof("value")
        raw: Raw = getattr(m, which) if which in _SCALARS else None
        has = m.HasField
        metrics.append(
            Metric(  # positional: the fields' order (measurably faster than keywords)
                m.name if has("name") else None,
                m.alias if has("alias") else None,
                m.timestamp if has("timestamp") else None,
                m.datatype if has("datatype") else None,
                raw,
                m.is_null,
                m.is_historical,
                _quality(m) if has("properties") else None,
            )
        )
    return Payload(
        timestamp=message.timestamp if message.HasField("timestamp") else None,
        seq=message.seq if message.HasField("seq") else None,
        metrics=tuple(metrics),
    )


def typed(raw: Raw, datatype: int | None) -> float | str | None:
    """``raw`` read as ``datatype``: a float or a string for a ``Sample``, None when the
    type is not one pilotline reads (or the wire holds no value that fits it)."""
    if raw is None or datatype is None:
        return None
    if type(raw) is int:
        bits = _SIGNED_BITS.get(datatype)
        if bits is not None:
            value = raw & ((1 << bits) - 1)
            return float(value - (1 << bits) if value >> (bits - 1) else value)
        bits = _UNSIGNED_BITS.get(datatype)
        if bits is not None:
            return float(raw & ((1 << bits) - 1))
        if datatype == DataType.DATETIME:
            return float(raw)
        return None
    if type(raw) is float:
        return raw if datatype in (DataType.FLOAT, DataType.DOUBLE) else None
    if type(raw) is bool:
        return (1.0 if raw else 0.0) if datatype == DataType.BOOLEAN else None
    if type(raw) is str:
        return raw if datatype in _TEXT else None
    return None


def encode_rebirth(timestamp_ms: int) -> bytes:
    """The NCMD payload that asks an edge node to rebirth (``Node Control/Rebirth`` = true)."""
    message = pb.Payload()
    message.timestamp = timestamp_ms
    metric = message.metrics.add()
    metric.name = "Node Control/Rebirth"
    metric.timestamp = timestamp_ms
    metric.datatype = DataType.BOOLEAN
    metric.boolean_value = True
    return bytes(message.SerializeToString())
