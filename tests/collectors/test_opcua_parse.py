"""The pure parts of the OPC UA collector: values, times, qualities, stamps, config."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asyncua import ua
from pydantic import ValidationError

from pilotline.collectors.opcua.config import OpcuaSource, connection_conflicts
from pilotline.collectors.opcua.parse import Reading, Rejection, Stamper, read_data_value
from pilotline.collectors.opcua.states import state_name
from pilotline.rules.sample import Quality
from pilotline.rules.states import DEFAULT_STATE_MAP

ARRIVAL = 1_795_737_600_000
AT = datetime(2026, 11, 27, 8, 0, 0, 123000, tzinfo=UTC)
AT_MS = int(AT.timestamp() * 1000)


def dv(value: object, vtype: ua.VariantType | None = None, **kw: object) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, vtype) if vtype else ua.Variant(value), **kw)


@pytest.mark.parametrize(
    ("value", "vtype", "expected"),
    [
        (812.5, ua.VariantType.Double, 812.5),
        (7, ua.VariantType.Int32, 7.0),
        (True, ua.VariantType.Boolean, 1.0),
        (False, ua.VariantType.Boolean, 0.0),
        ("READY", ua.VariantType.String, "READY"),
        (ua.LocalizedText("Executing"), ua.VariantType.LocalizedText, "Executing"),
        (ua.QualifiedName("Idle", 2), ua.VariantType.QualifiedName, "Idle"),
    ],
)
def test_values(value: object, vtype: ua.VariantType, expected: object) -> None:
    reading = read_data_value(dv(value, vtype, SourceTimestamp=AT), ARRIVAL)
    assert reading == Reading(expected, AT_MS, Quality.GOOD, "Good")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([1.0, 2.0], "wrong_type"),
        (float("nan"), "nan"),
        (None, "no_value"),
        ("x" * 300, "wrong_type"),
    ],
)
def test_refused_values(value: object, reason: str) -> None:
    result = read_data_value(dv(value), ARRIVAL)
    assert isinstance(result, Rejection)
    assert result.reason == reason


def test_time_falls_back_to_server_then_arrival() -> None:
    assert read_data_value(dv(1.0, ServerTimestamp=AT), ARRIVAL).ts_ms == AT_MS
    assert read_data_value(dv(1.0), ARRIVAL).ts_ms == ARRIVAL
    old = datetime(1601, 1, 1, tzinfo=UTC)  # an unset DateTime
    assert read_data_value(dv(1.0, SourceTimestamp=old, ServerTimestamp=AT), ARRIVAL).ts_ms == AT_MS


def test_quality_from_status_severity() -> None:
    bad = read_data_value(
        ua.DataValue(ua.Variant(None), ua.StatusCode(ua.StatusCodes.BadSensorFailure)), ARRIVAL
    )
    assert isinstance(bad, Reading)
    assert (bad.value, bad.quality, bad.status) == (None, Quality.BAD, "BadSensorFailure")
    unsure = read_data_value(
        ua.DataValue(ua.Variant(3.0), ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue)),
        ARRIVAL,
    )
    assert isinstance(unsure, Reading)
    assert (unsure.value, unsure.quality) == (3.0, Quality.UNCERTAIN)


def test_stamper_never_goes_back() -> None:
    stamper = Stamper()
    assert stamper.stamp("m", 1000) == 1000
    assert stamper.stamp("m", 900) == 1000  # an older value of another node is still current
    assert stamper.stamp("m", 1100) == 1100
    assert stamper.last("m") == 1100
    assert stamper.last("other") is None


@pytest.mark.parametrize(
    ("model", "code", "name"),
    [("packml", 6, "Execute"), ("packml", 11, "Held"), ("machinery", 2, "NotExecuting")],
)
def test_state_models_name_codes_the_default_map_knows(model: str, code: int, name: str) -> None:
    assert state_name(model, float(code)) == name
    assert name in DEFAULT_STATE_MAP
    assert state_name(model, "Executing") == "Executing"
    assert state_name(model, 99.0) == 99.0


def test_config_rules() -> None:
    base = {"endpoint": "opc.tcp://h:4840", "nodes": {"state": "nsu=urn:x;s=S", "p": "ns=2;i=5"}}
    src = OpcuaSource.model_validate({**base, "deadband": {"p": 0.5}, "state_model": "packml"})
    assert src.deadband == {"p": 0.5}
    for bad in (
        {"deadband": {"nope": 1.0}},
        {"state_model": "packml", "state_signal": "nope"},
        {"certificate_file": "c.der"},
        {"password": "x"},
        {"endpoint": "opc.tcp://u:p@h:4840"},
    ):
        with pytest.raises(ValidationError):
            OpcuaSource.model_validate({**base, **bad})
    other = OpcuaSource.model_validate({**base, "username": "u"})
    assert connection_conflicts([("a", src), ("b", other)])
    assert not connection_conflicts([("a", src), ("b", src)])
