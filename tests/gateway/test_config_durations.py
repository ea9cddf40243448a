"""Durations with units (``90s``, ``15m``, ``2h``) wherever a ``*_s`` or ``*_ms`` key is set,
as alert rules already take them; plain numbers keep working, booleans are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.sites import UNIT_DEFAULTS, UNIT_INFLUX, UNIT_MQTT, load_text, machine_config, refused
from tests.sites import site_yaml as _site_yaml

from pilotline.gateway.config import SiteConfig

OPCUA = {"endpoint": "opc.tcp://127.0.0.1:1", "nodes": {"state": "ns=2;s=State"}}


def site_yaml(**keys: Any) -> str:
    """A unit site with one MQTT machine ``m1`` and one OPC UA machine ``o1``; ``keys``
    replace its sections (``m1``/``o1``: keys of that machine)."""
    m1 = machine_config("m1", **keys.pop("m1", {}))
    o1 = machine_config("o1", opcua={**OPCUA, **keys.pop("o1", {})})
    return _site_yaml({"z": [m1, o1]}, **keys)


def m1(config: SiteConfig) -> Any:
    return config.zones[0].machines[0]


# (keys of the site, what to read back, the value expected)
WITH_UNITS = [
    ({"defaults": {**UNIT_DEFAULTS, "min_idle_s": "15m"}}, lambda c: c.defaults.min_idle_s, 900),
    ({"defaults": {**UNIT_DEFAULTS, "max_skew_s": "1.5s"}}, lambda c: c.defaults.max_skew_s, 1.5),
    ({"m1": {"debounce_s": "90s"}}, lambda c: m1(c).debounce_s, 90),
    ({"m1": {"stale_after_s": "2m30s"}}, lambda c: m1(c).stale_after_s, 150),
    ({"m1": {"offering": {"min_window_s": "2h"}}}, lambda c: m1(c).offering.min_window_s, 7200),
    ({"mqtt": {**UNIT_MQTT, "keepalive_s": "1m"}}, lambda c: c.mqtt.keepalive_s, 60),
    ({"mqtt": {**UNIT_MQTT, "session_expiry_s": "1d"}}, lambda c: c.mqtt.session_expiry_s, 86400),
    ({"mqtt": {**UNIT_MQTT, "reconnect_max_s": "500ms"}}, lambda c: c.mqtt.reconnect_max_s, 0.5),
    ({"influx": {**UNIT_INFLUX, "timeout_s": "30s"}}, lambda c: c.influx.timeout_s, 30),
    ({"api": {"request_timeout_s": "1m"}}, lambda c: c.api.request_timeout_s, 60),
    ({"api": {"keep_alive_s": "10s"}}, lambda c: c.api.keep_alive_s, 10),
    (
        {"o1": {"publishing_interval_ms": "2s"}},
        lambda c: c.zones[0].machines[1].opcua.publishing_interval_ms,
        2000,
    ),
    (
        {"alerts": {"webhooks": [{"name": "w", "url": "http://h/", "timeout_s": "5s"}]}},
        lambda c: c.alerts.webhooks[0].timeout_s,
        5,
    ),
]


@pytest.mark.parametrize(("keys", "read", "expected"), WITH_UNITS)
def test_seconds_keys_take_durations_with_units(
    tmp_path: Path, keys: dict[str, Any], read: Any, expected: float
) -> None:
    assert read(load_text(tmp_path, site_yaml(**keys))) == expected


def test_bare_numbers_keep_their_meaning_beside_units(tmp_path: Path) -> None:
    config = load_text(tmp_path, site_yaml(
        defaults={**UNIT_DEFAULTS, "min_idle_s": 900, "debounce_s": "20", "stale_after_s": "2m"},
        mqtt={**UNIT_MQTT, "keepalive_s": 45},
        o1={"sampling_interval_ms": 250},
    ))
    assert (config.defaults.min_idle_s, config.defaults.debounce_s) == (900, 20)
    assert config.defaults.stale_after_s == 120
    assert config.mqtt is not None
    assert config.mqtt.keepalive_s == 45
    opcua = config.zones[0].machines[1].opcua
    assert opcua is not None
    assert opcua.sampling_interval_ms == 250


def test_alert_durations_still_need_their_units(tmp_path: Path) -> None:
    # `for: 5` could be seconds or minutes: alert rules keep refusing a bare number, while
    # the keys of the same file that end in _s take one.
    rule = {"name": "down", "state": "down", "for": 5}
    defaults = {**UNIT_DEFAULTS, "min_idle_s": 5}
    issues = refused(tmp_path, site_yaml(alerts={"rules": [rule]}, defaults=defaults))
    assert [i.path for i in issues] == ["alerts.rules[0].for"]
    assert "a duration needs a unit" in issues[0].message
    rule["for"] = "1m30s"
    defaults["min_idle_s"] = "5m"
    config = load_text(tmp_path, site_yaml(alerts={"rules": [rule]}, defaults=defaults))
    assert (config.alerts.rules[0].for_, config.defaults.min_idle_s) == (90_000, 300)


@pytest.mark.parametrize(
    ("keys", "path", "message"),
    [
        # YAML reads `yes` as true: never a number of seconds
        ({"mqtt": {**UNIT_MQTT, "keepalive_s": True}}, "mqtt.keepalive_s",
         "expected a number, got true"),
        ({"defaults": {**UNIT_DEFAULTS, "min_idle_s": "15 minutes"}}, "defaults.min_idle_s",
         "not a duration (like 90s, 15m, 2h or 1h30m): '15 minutes', or a number of seconds"),
        ({"m1": {"debounce_s": "-5s"}}, "zones[0].machines[0].debounce_s", "not a duration"),
        # the key's own bounds still hold, whatever the unit
        ({"defaults": {**UNIT_DEFAULTS, "max_skew_s": "2m"}}, "defaults.max_skew_s",
         "less than or equal to 60"),
        ({"mqtt": {**UNIT_MQTT, "keepalive_s": "1h"}}, "mqtt.keepalive_s",
         "less than or equal to 600"),
        # MQTT counts keep-alive in whole seconds
        ({"mqtt": {**UNIT_MQTT, "keepalive_s": "30.5s"}}, "mqtt.keepalive_s",
         "fractional part"),
    ],
)
def test_wrong_durations_are_refused_at_their_key(
    tmp_path: Path, keys: dict[str, Any], path: str, message: str
) -> None:
    issues = refused(tmp_path, site_yaml(**keys))
    assert [i.path for i in issues] == [path]
    assert message in issues[0].message
