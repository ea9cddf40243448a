"""``sparkplug:`` in the configuration: a machine bound to an edge node or device, the site's
host section, and what ``pilotline check`` refuses with its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.sites import load_text, refused, site_yaml

SOURCE = {
    "group": "Plant1",
    "node": "edge-1",
    "device": "press-7",
    "metrics": {"state": "Status/State", "power_w": "Power"},
}


def machine(source: Any = SOURCE, **keys: Any) -> dict[str, Any]:
    return {"id": "press-07", "owner": "acme", "sparkplug": source, "state": {"signal": "state"},
            **keys}


def test_a_sparkplug_machine_loads(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        site_yaml({"hall": [machine()]}, sparkplug={"mode": "primary", "host_id": "pilotline"}),
    )
    (_, m) = config.machines()[0]
    assert m.source == "sparkplug"
    assert m.sparkplug is not None
    assert (m.sparkplug.group, m.sparkplug.node, m.sparkplug.device) == (
        "Plant1", "edge-1", "press-7"
    )
    assert m.signals() == ("state", "power_w")
    assert config.sparkplug is not None
    assert config.sparkplug.mode == "primary"


def _issues(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in refused(tmp_path, text)]


def test_without_a_broker(tmp_path: Path) -> None:
    issues = _issues(tmp_path, site_yaml({"hall": [machine()]}, mqtt=None))
    assert ("zones[0].machines[0].sparkplug",
            "a Sparkplug machine needs the site's mqtt: broker section") in issues


def test_the_state_signal_must_be_a_metric(tmp_path: Path) -> None:
    m = machine(state={"signal": "status"})
    issues = _issues(tmp_path, site_yaml({"hall": [m]}))
    assert ("zones[0].machines[0].state.signal",
            "'status' is not one of sparkplug.metrics (state, power_w)") in issues


def test_one_source(tmp_path: Path) -> None:
    m = machine(mqtt={"topic": "t/x"})
    issues = _issues(tmp_path, site_yaml({"hall": [m]}))
    message = "both mqtt: and sparkplug: are set: a machine has one source"
    assert ("zones[0].machines[0]", message) in issues


def test_an_id_is_one_topic_level(tmp_path: Path) -> None:
    issues = _issues(tmp_path, site_yaml({"hall": [machine({**SOURCE, "node": "edge/1"})]}))
    assert [p for p, _ in issues] == ["zones[0].machines[0].sparkplug.node"]
    assert "one topic level" in issues[0][1]


def test_primary_needs_a_host_id(tmp_path: Path) -> None:
    text = site_yaml({"hall": [machine()]}, sparkplug={"mode": "primary"})
    ((path, message),) = _issues(tmp_path, text)
    assert path == "sparkplug"
    assert "mode primary needs a host_id" in message


def test_a_rebirth_cooldown_under_30_s_is_refused(tmp_path: Path) -> None:
    text = site_yaml({"hall": [machine()]}, sparkplug={"rebirth_cooldown_s": 5})
    assert [p for p, _ in _issues(tmp_path, text)] == ["sparkplug.rebirth_cooldown_s"]
