"""Payload formats (formats.py, mapped.py) and topic templates (templates.py, routes.py).

The payloads are in the exact shapes the tools emit, from their documentation:
- UMH historian (umh.docs.umh.app, "datamodel/messages/_historian"): a JSON object with
  ``timestamp_ms`` (unix ms, required) and one or more tag/value pairs (string, number or
  boolean; "a boolean value ... will be interpreted as a number");
- Telegraf's JSON output serializer (docs.influxdata.com, "data_formats/output/json"):
  ``{"fields": {...}, "name": ..., "tags": {...}, "timestamp": 1458229140}``, the time in
  ``json_timestamp_units``, "1s" by default.
"""

from __future__ import annotations

import time

import orjson
import pytest
from pydantic import ValidationError

from pilotline.collectors.mqtt.config import MqttBrokerConfig, MqttMachineSource
from pilotline.collectors.mqtt.formats import DEFAULT_FORMAT, Format
from pilotline.collectors.mqtt.mapped import decode_mapped
from pilotline.collectors.mqtt.parse import REJECT_REASONS, Rejection, decode
from pilotline.collectors.mqtt.routes import CACHE_MAX, Route, Router
from pilotline.rules.sample import Quality, Sample

ARRIVAL = 1_795_737_600_000
MAX = 65_536


def fmt(payload: object) -> Format:
    return MqttMachineSource.model_validate({"topic": "t", "payload": payload}).payload.compiled()  # type: ignore[union-attr]


def run(f: Format, payload: bytes | str, signal: str | None = None) -> Sample | Rejection:
    data = payload.encode() if isinstance(payload, str) else payload
    result = decode_mapped(data, "m1", ARRIVAL, MAX, f, signal=signal)
    if isinstance(result, Rejection):
        assert result.reason in REJECT_REASONS
    return result


def reason(result: Sample | Rejection) -> str:
    assert isinstance(result, Rejection), result
    return result.reason


# -- umh -----------------------------------------------------------------------------------

UMH_HEAD_POS = '{"timestamp_ms": 1670001234567, "x": 12.5, "y": 7.3, "z": 3.2}'
UMH_NOTES = (
    '{"timestamp_ms": 1702286893000, "temperature_c": 154.1, "pressure_bar": 5, '
    '"notes": "sensor 1 is faulty"}'
)


def test_umh_historian_payloads_keep_their_time_and_tags() -> None:
    umh = fmt("umh")
    assert run(umh, UMH_HEAD_POS) == Sample("m1", 1670001234567, {"x": 12.5, "y": 7.3, "z": 3.2})
    assert run(umh, UMH_NOTES) == Sample(
        "m1",
        1702286893000,
        {"temperature_c": 154.1, "pressure_bar": 5.0, "notes": "sensor 1 is faulty"},
    )


def test_the_default_format_reads_a_umh_payload_wrongly_which_is_why_the_preset_exists() -> None:
    # The bug of issue 17: without the preset, timestamp_ms is a signal, the time arrival's.
    wrong = decode(UMH_HEAD_POS.encode(), "m1", ARRIVAL, MAX)
    assert isinstance(wrong, Sample)
    assert wrong.ts_ms == ARRIVAL
    assert "timestamp_ms" in wrong.values


def test_umh_booleans_are_numbers_as_umh_reads_them() -> None:
    result = run(fmt("umh"), '{"timestamp_ms": 1670001234567, "running": true, "fault": false}')
    assert result == Sample("m1", 1670001234567, {"running": 1.0, "fault": 0.0})
    assert reason(run(DEFAULT_FORMAT, '{"ts": 1670001234567, "running": true}')) == "wrong_type"


def test_a_umh_payload_without_its_time_is_quarantined_not_stamped_at_arrival() -> None:
    result = run(fmt("umh"), '{"temperature_c": 154.1}')
    assert reason(result) == "missing_time"
    assert isinstance(result, Rejection)
    assert "timestamp_ms" in result.detail


def test_umh_seconds_sent_as_timestamp_ms_are_refused_with_the_unit_named() -> None:
    # The UMH page's own first example carries 1702286893: seconds, not milliseconds.
    result = run(fmt("umh"), '{"timestamp_ms": 1702286893, "temperature_c": 154.1}')
    assert reason(result) == "bad_timestamp"
    assert isinstance(result, Rejection)
    assert "looks like epoch s" in result.detail


# -- telegraf ------------------------------------------------------------------------------

TELEGRAF_DOCKER = """{
    "fields": {"field_1": 30, "field_2": 4, "field_N": 59, "n_images": 660},
    "name": "docker",
    "tags": {"host": "raynor"},
    "timestamp": 1458229140
}"""


def test_telegraf_json_output_reads_fields_at_its_timestamp_in_seconds() -> None:
    assert run(fmt("telegraf"), TELEGRAF_DOCKER) == Sample(
        "m1",
        1458229140_000,
        {"field_1": 30.0, "field_2": 4.0, "field_N": 59.0, "n_images": 660.0},
    )


def test_the_default_format_refused_telegraf_output() -> None:
    assert reason(decode(TELEGRAF_DOCKER.encode(), "m1", ARRIVAL, MAX)) == "wrong_type"


def test_telegraf_with_json_timestamp_units_1ms_is_one_key_more() -> None:
    f = fmt({"preset": "telegraf", "time_unit": "ms"})
    payload = TELEGRAF_DOCKER.replace("1458229140", "1458229140123")
    assert run(f, payload) == Sample(
        "m1", 1458229140123, {"field_1": 30.0, "field_2": 4.0, "field_N": 59.0, "n_images": 660.0}
    )
    # ... and a millisecond stamp read as seconds says which unit it looks like
    result = run(fmt("telegraf"), payload)
    assert isinstance(result, Rejection)
    assert "looks like epoch ms" in result.detail


def test_telegraf_without_timestamp_or_fields() -> None:
    assert reason(run(fmt("telegraf"), '{"fields": {"a": 1}, "name": "x"}')) == "missing_time"
    no_fields = run(fmt("telegraf"), '{"name": "x", "timestamp": 1458229140}')
    assert reason(no_fields) == "not_an_object"
    # the batch form (``{"metrics": [...]}``) has no time at the top: not read as empty
    batch = orjson.dumps({"metrics": [orjson.loads(TELEGRAF_DOCKER)]})
    assert reason(run(fmt("telegraf"), batch)) == "missing_time"
    assert reason(run(fmt("umh"), "[1]")) == "not_an_object"


def test_a_nested_iso_time() -> None:
    f = fmt({"time": "fields.time", "time_unit": "iso8601", "signals": "fields"})
    ok = run(f, '{"fields": {"time": "2026-11-27T02:00:00.123+02:00", "power_w": 812.5}}')
    assert ok == Sample("m1", 1795737600123, {"power_w": 812.5})
    assert reason(run(f, '{"fields": {"time": 1795737600123, "power_w": 1}}')) == "bad_timestamp"
    assert reason(run(f, '{"fields": {"power_w": 1}}')) == "missing_time"


@pytest.mark.parametrize(
    ("unit", "stamp"),
    [("s", 1795737600.123), ("ms", 1795737600123), ("us", 1795737600123456),
     ("ns", 1795737600123456789)],
)
def test_time_units(unit: str, stamp: float) -> None:
    f = fmt({"preset": "umh", "time_unit": unit})
    result = run(f, orjson.dumps({"timestamp_ms": stamp, "a": 1}))
    assert isinstance(result, Sample)
    assert result.ts_ms == 1795737600123


# -- the pilotline format through the mapped decoder gives what the fast one does -------------

SAME = [
    b'{"ts": 1795737600123, "power_w": 812.5, "state": "Executing"}',
    b'{"ts": "2026-11-27T02:00:00.123+02:00", "power_w": 3, "quality": "uncertain"}',
    b"{}",
    b'{"quality": "bad"}',
    b'{"ts": 1795737600, "a": 1}',
    b'{"ts": true}',
    b'{"a": null}',
    b'{"a": "x"}',
    b"[1]",
    b'{"quality": "weird"}',
    b'{"a\\\\": 1}',
]


@pytest.mark.parametrize("payload", SAME)
def test_the_pilotline_preset_decodes_as_the_fast_path_does(payload: bytes) -> None:
    fast = decode(payload, "m1", ARRIVAL, MAX)
    mapped = decode_mapped(payload, "m1", ARRIVAL, MAX, DEFAULT_FORMAT)
    if isinstance(fast, Sample):
        assert mapped == fast
    else:
        assert isinstance(mapped, Rejection)
        assert mapped.reason == fast.reason


# -- one value per topic -------------------------------------------------------------------


def test_one_value_per_topic() -> None:
    # a bare value: nothing in it gives a time, so the pilotline preset stamps it at arrival
    bare = run(DEFAULT_FORMAT, "812.5", signal="power_w")
    assert bare == Sample("m1", ARRIVAL, {"power_w": 812.5})
    assert run(DEFAULT_FORMAT, '"Executing"', signal="state") == Sample(
        "m1", ARRIVAL, {"state": "Executing"}
    )
    # an object: the value at ``value``, the time where the format has it
    umh = fmt("umh")
    assert run(umh, '{"timestamp_ms": 1670001234567, "value": 23.4}', signal="temp") == Sample(
        "m1", 1670001234567, {"temp": 23.4}
    )
    assert reason(run(umh, "23.4", signal="temp")) == "missing_time"
    assert reason(run(umh, '{"timestamp_ms": 1670001234567}', signal="temp")) == "wrong_type"
    assert reason(run(DEFAULT_FORMAT, "[1]", signal="temp")) == "wrong_type"
    assert reason(run(DEFAULT_FORMAT, "1", signal="bad\\")) == "bad_signal_name"


# -- configuration -------------------------------------------------------------------------


def test_a_preset_is_one_word_and_its_keys_can_be_overridden() -> None:
    assert fmt("pilotline").default
    assert fmt({"preset": "pilotline"}).default
    assert not fmt({"preset": "pilotline", "missing_time": "quarantine"}).default
    assert fmt({"preset": "telegraf", "quality": "fields.q"}).skip == frozenset({"q"})
    assert fmt({"preset": "umh", "quality": None}).quality is None


@pytest.mark.parametrize(
    ("payload", "where", "says"),
    [
        ("influx", ("payload", "preset"), "'pilotline', 'umh' or 'telegraf'"),
        ({"preset": "influx"}, ("payload", "preset"), "'pilotline', 'umh' or 'telegraf'"),
        ({"time": "fields..time"}, ("payload", "time"), "not a key path"),
        ({"time": "."}, ("payload",), "not '.'"),
        ({"time_unit": "min"}, ("payload", "time_unit"), "'ms'"),
        ({"preset": "umh", "tiem": "t"}, ("payload", "tiem"), "Extra inputs"),
    ],
)
def test_a_wrong_payload_section_is_refused_at_its_key(
    payload: object, where: tuple[str, ...], says: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        MqttMachineSource.model_validate({"topic": "t", "payload": payload})
    errors = caught.value.errors()
    locs = [tuple(str(p) for p in e["loc"]) for e in errors]
    assert any(loc[: len(where)] == where for loc in locs), locs
    assert any(says in e["msg"] for e in errors), errors


def test_a_site_pattern_needs_a_machine_level() -> None:
    with pytest.raises(ValidationError) as caught:
        MqttBrokerConfig.model_validate(
            {"url": "mqtt://b", "topics": [{"topic": "umh/v1/acme/+/+/_historian"}]}
        )
    assert caught.value.errors()[0]["loc"] == ("topics", 0, "topic")
    assert "{machine}" in caught.value.errors()[0]["msg"]
    ok = MqttBrokerConfig.model_validate(
        {"url": "mqtt://b", "topics": [{"topic": "umh/v1/acme/+/{machine}/_historian",
                                        "payload": "umh"}]}
    )
    assert ok.topics[0].payload.preset == "umh"


# -- routes --------------------------------------------------------------------------------


def test_routes_resolve_exact_and_templated_topics() -> None:
    umh = fmt("umh")
    router = Router(
        {"t/exact": "m0"},
        [
            Route.of("umh/v1/acme/+/{machine}/_historian", "cnc-1", umh),
            Route.of("umh/v1/acme/+/{machine}/_historian", "cnc-2", umh),
            Route.of("plant/{machine}/{signal}", "press-1"),
            Route.of("fixed/topic", "m9", fmt("telegraf")),
        ],
    )
    assert router.filters == {
        "t/exact": "m0",
        "umh/v1/acme/+/cnc-1/_historian": "cnc-1",
        "umh/v1/acme/+/cnc-2/_historian": "cnc-2",
        "plant/press-1/+": "press-1",
        "fixed/topic": "m9",
    }
    assert router.lookup("t/exact") == ("t/exact", "m0", None, None, "t/exact")
    got = router.lookup("umh/v1/acme/hall/cnc-2/_historian")
    assert got is not None
    assert got[1:4] == ("cnc-2", umh, None)
    assert got[4] == "umh/v1/acme/+/cnc-2/_historian"
    assert router.lookup("plant/press-1/power_w") == (
        "plant/press-1/power_w", "press-1", None, "power_w", "plant/press-1/+"
    )
    fixed = router.lookup("fixed/topic")
    assert fixed is not None
    assert fixed[2] is not None
    assert fixed[2].name == "telegraf"
    for unknown in ("umh/v1/acme/hall/cnc-3/_historian", "plant/press-1", "plant/press-1/a/b"):
        assert router.lookup(unknown) is None
    assert b"umh/v1/acme/hall/cnc-2/_historian" in router.by_bytes  # remembered


def test_the_route_cache_is_bounded() -> None:
    router = Router({}, [Route.of("p/{machine}/{signal}", "m1")])
    held = router.by_bytes
    start = time.monotonic()
    for i in range(CACHE_MAX + 10):
        assert router.lookup(f"p/m1/s{i}") is not None
    assert len(router.by_bytes) <= CACHE_MAX
    assert router.by_bytes is held  # cleared in place: the collector holds this dict
    assert time.monotonic() - start < 5


def test_the_pilotline_preset_keeps_the_fast_decoder() -> None:
    assert Route.of("t", "m1", fmt("pilotline")).format is None
    assert Route.of("t", "m1", fmt("umh")).format is not None


def test_quality_where_the_format_has_it() -> None:
    f = fmt({"preset": "telegraf", "quality": "tags.quality"})
    payload = TELEGRAF_DOCKER.replace('"host": "raynor"', '"quality": "uncertain"')
    result = run(f, payload)
    assert isinstance(result, Sample)
    assert result.quality is Quality.UNCERTAIN
    assert reason(run(f, payload.replace("uncertain", "meh"))) == "wrong_type"
