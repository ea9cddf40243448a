"""Sparkplug B payloads for tests, encoded with the vendored specification's module."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pilotline.collectors.sparkplug.payload import DataType
from pilotline.collectors.sparkplug.proto import sparkplug_b_pb2 as pb


@dataclass(frozen=True)
class M:
    name: str | None
    value: object = None
    datatype: int = DataType.DOUBLE
    alias: int | None = None
    timestamp: int | None = None
    is_null: bool = False
    is_historical: bool = False
    quality: int | None = None


def encode(metrics: Sequence[M], *, seq: int | None = None, timestamp: int | None = None) -> bytes:
    p = pb.Payload()
    if timestamp is not None:
        p.timestamp = timestamp
    if seq is not None:
        p.seq = seq
    for m in metrics:
        x = p.metrics.add()
        if m.name is not None:
            x.name = m.name
        if m.alias is not None:
            x.alias = m.alias
        if m.timestamp is not None:
            x.timestamp = m.timestamp
        x.datatype = m.datatype
        if m.is_null:
            x.is_null = True
        if m.is_historical:
            x.is_historical = True
        if m.quality is not None:
            x.properties.keys.append("Quality")
            v = x.properties.values.add()
            v.type = DataType.INT32
            v.int_value = m.quality
        if m.value is None or m.is_null:
            continue
        if m.datatype in (DataType.INT8, DataType.INT16, DataType.INT32, DataType.UINT8,
                          DataType.UINT16, DataType.UINT32):
            assert isinstance(m.value, int)
            x.int_value = m.value & 0xFFFFFFFF
        elif m.datatype in (DataType.INT64, DataType.UINT64, DataType.DATETIME):
            assert isinstance(m.value, int)
            x.long_value = m.value & 0xFFFFFFFFFFFFFFFF
        elif m.datatype == DataType.FLOAT:
            assert isinstance(m.value, float)
            x.float_value = m.value
        elif m.datatype == DataType.DOUBLE:
            assert isinstance(m.value, float)
            x.double_value = m.value
        elif m.datatype == DataType.BOOLEAN:
            assert isinstance(m.value, bool)
            x.boolean_value = m.value
        else:
            assert isinstance(m.value, str)
            x.string_value = m.value
    return p.SerializeToString()
