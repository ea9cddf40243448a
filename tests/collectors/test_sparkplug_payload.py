"""Sparkplug B payloads decoded by datatype: signed integers back from their unsigned wire
form, floats, booleans, strings, null and historical flags, the Quality property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.sparkplug_payloads import M, encode

from pilotline.collectors.sparkplug.payload import (
    DataType,
    PayloadError,
    decode,
    encode_rebirth,
    typed,
)

SIGNED = [(DataType.INT8, 8), (DataType.INT16, 16), (DataType.INT32, 32), (DataType.INT64, 64)]
UNSIGNED = [(DataType.UINT8, 8), (DataType.UINT16, 16), (DataType.UINT32, 32),
            (DataType.UINT64, 64)]


@pytest.mark.parametrize(("datatype", "bits"), SIGNED)
@given(data=st.data())
def test_signed_integers_come_back_negative(datatype: int, bits: int, data: st.DataObject) -> None:
    value = data.draw(st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    metric = decode(encode([M("x", value, datatype)])).metrics[0]
    assert typed(metric.raw, metric.datatype) == float(value)


@pytest.mark.parametrize(("datatype", "bits"), UNSIGNED)
@given(data=st.data())
def test_unsigned_integers_stay_positive(datatype: int, bits: int, data: st.DataObject) -> None:
    value = data.draw(st.integers(0, 2**bits - 1))
    metric = decode(encode([M("x", value, datatype)])).metrics[0]
    assert typed(metric.raw, metric.datatype) == float(value)


def test_an_int8_not_sign_extended_on_the_wire_reads_the_same() -> None:
    assert typed(0xFF, DataType.INT8) == -1.0
    assert typed(0xFFFFFFFF, DataType.INT8) == -1.0
    assert typed(0x80, DataType.INT8) == -128.0


def test_other_scalars() -> None:
    p = decode(
        encode(
            [
                M("f", 1.5, DataType.FLOAT),
                M("d", -2.25, DataType.DOUBLE),
                M("b", True, DataType.BOOLEAN),
                M("s", "Executing", DataType.STRING),
                M("t", 1_795_737_600_123, DataType.DATETIME),
            ],
            seq=7,
            timestamp=42,
        )
    )
    assert (p.seq, p.timestamp) == (7, 42)
    assert [typed(m.raw, m.datatype) for m in p.metrics] == [
        1.5, -2.25, 1.0, "Executing", 1_795_737_600_123.0
    ]


def test_a_value_of_the_wrong_wire_type_or_an_unread_type_is_none() -> None:
    assert typed("x", DataType.DOUBLE) is None
    assert typed(1.5, DataType.STRING) is None
    assert typed(3, DataType.UNKNOWN) is None
    assert typed(None, DataType.DOUBLE) is None


def test_flags_and_quality() -> None:
    p = decode(
        encode(
            [
                M("n", None, DataType.DOUBLE, alias=3, is_null=True),
                M("h", 2.0, DataType.DOUBLE, timestamp=5, is_historical=True, quality=0),
            ]
        )
    )
    n, h = p.metrics
    assert (n.is_null, n.alias, n.raw) == (True, 3, None)
    assert (h.is_historical, h.timestamp, h.quality) == (True, 5, 0)


def test_garbage_is_refused() -> None:
    with pytest.raises(PayloadError):
        decode(b"\xff\xff\xff")


def test_rebirth_command() -> None:
    p = decode(encode_rebirth(1000))
    (m,) = p.metrics
    assert (m.name, m.raw, m.datatype) == ("Node Control/Rebirth", True, DataType.BOOLEAN)
