"""The MQTT payload decoder and the collector's configuration (pure, no broker)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pilotline.collectors.mqtt.config import MqttBrokerConfig, MqttMachineSource
from pilotline.collectors.mqtt.parse import (
    MAX_TS_MS,
    MIN_TS_MS,
    REJECT_REASONS,
    Rejection,
    _from_object,
    cap_signals,
    decode,
    from_object,
)
from pilotline.rules.sample import Quality, Sample

ARRIVAL = 1_795_737_699_000
TS = 1_795_737_600_123
MAX = 65_536


def dec(payload: bytes | str, max_bytes: int = MAX) -> Sample | Rejection:
    data = payload.encode() if isinstance(payload, str) else payload
    return decode(data, "cam-02", ARRIVAL, max_bytes)


def reason(payload: bytes | str, max_bytes: int = MAX) -> str:
    result = dec(payload, max_bytes)
    assert isinstance(result, Rejection), result
    assert result.reason in REJECT_REASONS
    assert result.detail
    return result.reason


# -- good paths ------------------------------------------------------------------------------


def test_the_documented_payload() -> None:
    assert dec('{"ts": 1795737600123, "power_w": 812.5, "state": "Executing"}') == Sample(
        "cam-02", TS, {"power_w": 812.5, "state": "Executing"}, Quality.GOOD
    )


@pytest.mark.parametrize(
    "ts",
    [
        "1795737600123",
        "1795737600123.9",
        '"2026-11-27T00:00:00.123Z"',
        '"2026-11-27T00:00:00.123+00:00"',
        '"2026-11-27T01:00:00.123+01:00"',
        '"2026-11-26T19:00:00.123-05:00"',
    ],
)
def test_timestamps_in_ms_or_iso_with_zone(ts: str) -> None:
    result = dec(f'{{"ts": {ts}, "x": 1}}')
    assert isinstance(result, Sample)
    assert result.ts_ms == TS


def test_missing_ts_takes_the_arrival_time() -> None:
    assert dec('{"x": 1}') == Sample("cam-02", ARRIVAL, {"x": 1.0})


def test_ints_become_floats_and_strings_stay() -> None:
    result = dec('{"n": 3, "s": "Idle", "e": ""}')
    assert isinstance(result, Sample)
    assert result.values == {"n": 3.0, "s": "Idle", "e": ""}
    assert type(result.values["n"]) is float


@pytest.mark.parametrize(
    ("text", "quality"),
    [
        ("good", Quality.GOOD),
        ("uncertain", Quality.UNCERTAIN),
        ("bad", Quality.BAD),
        ("BAD", Quality.BAD),
    ],
)
def test_quality(text: str, quality: Quality) -> None:
    result = dec(f'{{"x": 1, "quality": "{text}"}}')
    assert isinstance(result, Sample)
    assert result.quality is quality
    assert "quality" not in result.values


@pytest.mark.parametrize("payload", ["{}", f'{{"ts": {TS}}}', '{"quality": "bad"}'])
def test_an_object_without_signals_is_a_heartbeat(payload: str) -> None:
    result = dec(payload)
    assert isinstance(result, Sample)
    assert result.values == {}


def test_a_256_char_string_is_accepted() -> None:
    assert isinstance(dec(orjson.dumps({"s": "x" * 256})), Sample)


# -- rejections ------------------------------------------------------------------------------


def test_oversized_is_refused_before_parsing() -> None:
    assert reason(b"{" * 101, max_bytes=100) == "oversized"
    assert isinstance(dec(b'{"x": 1}', max_bytes=8), Sample)


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b'{"x": NaN}', b'{"x": Infinity}', b'{"x": 1e999}', b"\xff\xfe", b"{'x': 1}"],
)
def test_malformed_json(payload: bytes) -> None:
    assert reason(payload) == "malformed_json"


@pytest.mark.parametrize(
    "name", ["bad\\", "a\\b\\", "", "x" * 129, "line\nbreak", "tab\there", "nul\x00", "del\x7f"]
)
@pytest.mark.parametrize("value", [1.5, 2, "Executing"])
def test_a_signal_name_line_protocol_cannot_write_is_refused(name: str, value: object) -> None:
    """Ending in a backslash (it would escape the ``=`` after it), empty, longer than 128
    characters, or with a control character: the whole payload, as for any bad key."""
    assert reason(orjson.dumps({"power_w": 812.5, name: value})) == "bad_signal_name"
    assert reason(orjson.dumps({name: value, "power_w": 812.5})) == "bad_signal_name"


@pytest.mark.parametrize("name", ["a\\b", "x" * 128, "with space", "comma,=equals", "µ_°C"])
def test_names_line_protocol_escapes_are_accepted(name: str) -> None:
    assert dec(orjson.dumps({name: 1.5})) == Sample("cam-02", ARRIVAL, {name: 1.5})


def test_cap_signals_keeps_the_configured_ones_then_the_first_others() -> None:
    values = {f"k{i}": float(i) for i in range(10)} | {"power_w": 1.0, "temp_c": 2.0}
    sample = Sample("m", TS, values)
    capped, dropped = cap_signals(sample, 4, frozenset({"temp_c", "power_w", "absent"}))
    assert capped == Sample("m", TS, {"k0": 0.0, "k1": 1.0, "power_w": 1.0, "temp_c": 2.0})
    assert dropped == [f"k{i}" for i in range(2, 10)]
    # configured ones beyond the bound are kept all the same
    capped, dropped = cap_signals(sample, 1, frozenset({"temp_c", "power_w"}))
    assert capped.values == {"power_w": 1.0, "temp_c": 2.0}
    assert len(dropped) == 10
    # within the bound: the sample itself
    assert cap_signals(sample, 12, frozenset()) == (sample, [])


@pytest.mark.parametrize("payload", ["[]", "[1]", "1", '"x"', "null", "true"])
def test_not_an_object(payload: str) -> None:
    assert reason(payload) == "not_an_object"


@pytest.mark.parametrize(
    "ts",
    [
        '"2026-11-27T00:00:00"',  # naive
        '"2026-11-27"',  # naive date
        '"yesterday"',
        '"' + "9" * 100 + '"',
        "true",
        "null",
        "[1]",
        '{"ms": 1}',
        "1795737600",  # seconds by mistake
        "1795737600.5",
        "-1",
        "0",
        "99999999999999999",  # after 2100
        '"1999-12-31T23:59:59Z"',
        '"2100-01-01T00:00:00Z"',
        '"9999-12-31T23:59:59-23:59"',
    ],
)
def test_bad_timestamp(ts: str) -> None:
    assert reason(f'{{"ts": {ts}, "x": 1}}') == "bad_timestamp"


def test_seconds_by_mistake_says_so() -> None:
    result = dec('{"ts": 1795737600}')
    assert isinstance(result, Rejection)
    assert "seconds" in result.detail


@pytest.mark.parametrize(
    "value", ["true", "false", "null", "[1, 2]", '{"a": 1}', '"' + "x" * 257 + '"']
)
def test_wrong_type_names_the_key(value: str) -> None:
    result = dec(f'{{"x": 1, "power_w": {value}}}')
    assert isinstance(result, Rejection)
    assert result.reason == "wrong_type"
    assert "power_w" in result.detail


@pytest.mark.parametrize("quality", ['"excellent"', "0", "null", "true"])
def test_unknown_quality_is_wrong_type(quality: str) -> None:
    assert reason(f'{{"x": 1, "quality": {quality}}}') == "wrong_type"


def test_non_finite_numbers_are_nan() -> None:
    # orjson refuses NaN/Infinity literals (malformed_json), so non-finite values only reach
    # the check through an already parsed object; finite extremes pass.
    for bad in (math.nan, math.inf, -math.inf, 10**400):
        result = from_object({"ok": 1, "x": bad}, "m", ARRIVAL)
        assert result == Rejection("nan", "'x' is not a finite number")
    assert from_object({"ts": math.inf}, "m", ARRIVAL).reason == "bad_timestamp"  # type: ignore[union-attr]
    assert isinstance(dec('{"x": 1e308, "y": -1e308}'), Sample)


# -- never raises ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
payload_objects = st.dictionaries(
    st.sampled_from(["ts", "quality", "power_w", "state", ""]) | st.text(max_size=8),
    json_values
    | st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
    | st.integers(min_value=0, max_value=10**14),
    max_size=6,
)


@given(st.binary(max_size=512), st.integers(min_value=0, max_value=600))
def test_never_raises_on_arbitrary_bytes(payload: bytes, max_bytes: int) -> None:
    result = decode(payload, "m", ARRIVAL, max_bytes)
    assert isinstance(result, Sample | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REJECT_REASONS


@given(json_values | payload_objects)
def test_never_raises_on_json_values(obj: Any) -> None:
    result = decode(orjson.dumps(obj), "m", ARRIVAL, MAX)
    assert result == from_object(obj, "m", ARRIVAL)
    if isinstance(result, Rejection):
        assert result.reason in REJECT_REASONS
        return
    assert isinstance(obj, dict)
    assert all(isinstance(v, float | str) for v in result.values.values())
    assert all(math.isfinite(v) for v in result.values.values() if isinstance(v, float))
    assert 946_684_800_000 <= result.ts_ms < 4_102_444_800_000 or result.ts_ms == ARRIVAL


fast_path_objects = st.dictionaries(
    st.sampled_from(["ts", "quality", "power_w", "state"]) | st.text(max_size=4),
    st.floats() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([1_795_737_600_000, MIN_TS_MS, MAX_TS_MS - 1, MAX_TS_MS, MIN_TS_MS - 1])
    | st.text(max_size=300) | st.booleans() | st.none(),
    max_size=5,
)


@given(fast_path_objects)
def test_the_fast_path_agrees_with_the_full_validation(obj: dict[str, Any]) -> None:
    """``from_object`` takes a shortcut for common payloads; ``_from_object`` is the full
    validation: they must give the same Sample or the same rejection for anything."""
    assert from_object(obj, "m", ARRIVAL) == _from_object(obj, "m", ARRIVAL)


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port", "tls"),
    [
        ("mqtt://127.0.0.1", "127.0.0.1", 1883, False),
        ("mqtt://broker.local:1884", "broker.local", 1884, False),
        ("mqtts://broker.local", "broker.local", 8883, True),
        ("MQTTS://[::1]:9000/", "::1", 9000, True),
    ],
)
def test_broker_url(url: str, host: str, port: int, tls: bool) -> None:
    cfg = MqttBrokerConfig(url=url)
    assert (cfg.host, cfg.port, cfg.tls) == (host, port, tls)


@pytest.mark.parametrize(
    "url",
    [
        "http://broker",
        "broker:1883",
        "mqtt://",
        "mqtt://broker:99999",
        "mqtt://broker:0",
        "mqtt://broker/topic",
        "mqtt://user:secret@broker",
    ],
)
def test_bad_broker_url(url: str) -> None:
    with pytest.raises(ValidationError, match="url"):
        MqttBrokerConfig(url=url)


def test_inline_password_is_refused() -> None:
    with pytest.raises(ValidationError, match="secrets are not accepted inline"):
        MqttBrokerConfig.model_validate({"url": "mqtt://b", "username": "u", "password": "p"})


def test_unknown_keys_and_bounds_are_refused() -> None:
    with pytest.raises(ValidationError):
        MqttBrokerConfig.model_validate({"url": "mqtt://b", "keepalive": 30})
    with pytest.raises(ValidationError):
        MqttBrokerConfig(url="mqtt://b", keepalive_s=2)
    with pytest.raises(ValidationError, match="ca_file"):
        MqttBrokerConfig(url="mqtt://b", ca_file=Path("/etc/ca.pem"))


def test_password_from_file_or_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PILOTLINE_MQTT_PASSWORD", raising=False)
    assert MqttBrokerConfig(url="mqtt://b").password() is None
    monkeypatch.setenv("PILOTLINE_MQTT_PASSWORD", "from-env\n")
    assert MqttBrokerConfig(url="mqtt://b", username="u").password() == "from-env"
    secret = tmp_path / "mqtt"
    secret.write_text("from-file\n")
    cfg = MqttBrokerConfig(url="mqtt://b", username="u", password_file=secret)
    assert cfg.password() == "from-file"
    assert "from-file" not in repr(cfg)


@pytest.mark.parametrize(
    "topic", ["", "a/b+/c", "a/#/c", "a#", "a/{signal}/c", "a/{machine}/{machine}", "a/{id}"]
)
def test_a_malformed_machine_topic_is_refused(topic: str) -> None:
    with pytest.raises(ValidationError):
        MqttMachineSource(topic=topic)
    assert MqttMachineSource(topic="pilot/cam-02/telemetry").qos == 1
    assert MqttMachineSource(topic="pilot/+/{machine}/{signal}").topic
