"""The soft interlock from the file: ``interlock:`` under ``defaults``, an owner and a machine,
merged key by key; the site's section; what each machine's interlock needs (the broker, its
own OPC UA source), refused at the key that asks for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.sites import load_text, machine_config, refused, site_yaml

from pilotline.gateway.config.interlock import InterlockSpec
from pilotline.rules.booking.interlock import Timing

OPCUA = {"endpoint": "opc.tcp://127.0.0.1:4840", "nodes": {"state": "ns=2;s=L.State"}}


def test_each_key_from_the_most_specific_section_and_none_without_any(tmp_path: Path) -> None:
    text = site_yaml(
        {
            "z": [
                machine_config(
                    "a", "acme", interlock={"off_delay_s": "10m"}, opcua=OPCUA
                ),
                machine_config("b", "acme"),
                machine_config("c", "lumen"),
                machine_config("d", "acme", interlock={"mqtt": False}),
            ]
        },
        defaults={"interlock": {"lead_s": "5m", "off_delay_s": "1m"}},
        owners={"acme": {"interlock": {"lead_s": 60}}, "lumen": {}},
        interlock={"topic_prefix": "plant/7"},
    )
    config = load_text(tmp_path, text)

    assert config.interlock_of("a") == InterlockSpec("a", True, Timing(60_000, 600_000))
    assert config.interlock_of("b") == InterlockSpec("b", True, Timing(60_000, 60_000))
    assert config.interlock_of("c") == InterlockSpec("c", True, Timing(300_000, 60_000))
    assert config.interlock_of("d") is None  # turned off on the machine
    assert config.interlock.prefix(config.site) == "plant/7"

    bare = load_text(tmp_path, site_yaml({"z": [machine_config("a")]}))
    assert bare.interlock_of("a") is None
    assert bare.interlock.prefix("unit") == "pilotline/unit"


def test_an_opcua_node_is_written_and_read_back(tmp_path: Path) -> None:
    node: dict[str, Any] = {"node": "ns=2;s=L.Enable"}
    text = site_yaml(
        {
            "z": [
                machine_config("a", interlock={"mqtt": False, "opcua": node}, opcua=OPCUA),
                machine_config(
                    "b", interlock={"opcua": {**node, "readback": "ns=2;s=L.Enabled"}},
                    opcua={**OPCUA, "nodes": {"state": "ns=2;s=B.State"}},
                ),
            ]
        },
    )
    config = load_text(tmp_path, text)

    assert config.interlock_of("a") == InterlockSpec(
        "a", False, Timing(), "ns=2;s=L.Enable", "ns=2;s=L.Enable"
    )
    assert config.interlock_of("b") == InterlockSpec(
        "b", True, Timing(), "ns=2;s=L.Enable", "ns=2;s=L.Enabled"
    )


def test_what_an_interlock_needs_is_refused_at_the_key_that_asks(tmp_path: Path) -> None:
    def on(machine: str) -> dict[str, Any]:
        return {**OPCUA, "nodes": {"state": f"ns=2;s={machine}.State"}}

    text = site_yaml(
        {
            "z": [
                machine_config(
                    "a", interlock={"opcua": {"node": "ns=2;s=A.Enable"}}, opcua=on("a")
                ),
                machine_config("b", "lumen", interlock={"mqtt": True}, opcua=on("b")),
                machine_config("c", "lumen", opcua=on("c")),
                machine_config("d", "lumen", opcua=on("d")),
            ]
        },
        mqtt=None,
        owners={"acme": {}, "lumen": {"interlock": {"off_delay_s": "5m"}}},
    )

    issues = {(i.path, i.message) for i in refused(tmp_path, text)}

    needs_broker = (
        "the MQTT interlock needs the site's mqtt: broker section (or set interlock.mqtt: false)"
    )
    assert issues == {
        ("zones[0].machines[0].interlock", needs_broker),  # a: mqtt by default
        ("zones[0].machines[1].interlock.mqtt", needs_broker),
        ("owners.lumen.interlock", needs_broker),  # c's and d's, from their owner: once
    }


def test_an_opcua_interlock_on_an_mqtt_machine_and_bad_keys_are_refused(tmp_path: Path) -> None:
    text = site_yaml(
        {
            "z": [
                machine_config("a", interlock={"opcua": {"node": "ns=2;s=A.Enable"}}),
                machine_config(
                    "b", interlock={"opcua": {"node": "Laser.Enable"}, "lead_s": "-5m"}
                ),
            ]
        },
        defaults={"interlock": {"opcua": {"node": "ns=2;s=X"}}},
        interlock={"topic_prefix": "plant/#"},
    )

    issues = {i.path: i.message for i in refused(tmp_path, text)}

    assert issues["zones[0].machines[0].interlock.opcua"] == (
        "the interlock's node is written through the machine's OPC UA endpoint, and this "
        "machine has no opcua: source"
    )
    assert "not an OPC UA node id" in issues["zones[0].machines[1].interlock.opcua.node"]
    assert "zones[0].machines[1].interlock.lead_s" in issues
    assert "defaults.interlock.opcua" in issues  # a node is a machine's, never the site's
    assert "wildcards" in issues["interlock.topic_prefix"]
