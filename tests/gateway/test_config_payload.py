"""The site file's MQTT payload formats and topic patterns: refused with their paths and
lines, and the routes a valid file gives the collector."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pilotline.gateway.config import ConfigError, ConfigIssue, load_config
from pilotline.gateway.service.collectors import mqtt_routes, mqtt_topics

SITE = """\
site: test-site
mqtt:
  url: mqtt://127.0.0.1:1883
  topics:
    - topic: umh/v1/acme/+/{machine}/_historian
      payload: umh
zones:
  - id: z1
    machines:
      - id: cnc-1
        owner: acme
        mqtt: {}
        state: {signal: state}
      - id: press-1
        owner: acme
        mqtt: {topic: "plant/press-1/{signal}"}
        state: {signal: power_w, running_above: 100, idle_below: 50}
      - id: oven-1
        owner: acme
        mqtt: {topic: telegraf/oven-1/modbus, payload: telegraf}
        state: {signal: power_w, running_above: 100, idle_below: 50}
"""


def issues(tmp_path: Path, text: str) -> list[ConfigIssue]:
    path = tmp_path / "pilotline.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.issues


def test_a_site_with_patterns_and_formats_gives_each_machine_its_routes(tmp_path: Path) -> None:
    path = tmp_path / "pilotline.yaml"
    path.write_text(SITE, encoding="utf-8")
    config = load_config(path)

    assert mqtt_topics(config) == {
        "umh/v1/acme/+/cnc-1/_historian": "cnc-1",
        "plant/press-1/+": "press-1",
        "telegraf/oven-1/modbus": "oven-1",
    }
    formats = {r.machine: r.format.name if r.format else None for r in mqtt_routes(config)}
    assert formats == {"cnc-1": "umh", "press-1": None, "oven-1": "telegraf"}


MISTAKES = [
    ("      payload: umh\n", "      payload: umhh\n", "mqtt.topics[0].payload.preset", 6,
     "'pilotline', 'umh' or 'telegraf'"),
    ("umh/v1/acme/+/{machine}/_historian", "umh/v1/acme/+/+/_historian",
     "mqtt.topics[0].topic", 5, "no {machine} level"),
    ("payload: telegraf}", "payload: {preset: telegraf, time: fields..t}}",
     "zones[0].machines[2].mqtt.payload.time", 20, "not a key path"),
    ("plant/press-1/{signal}", "plant/{signal}/press-1",
     "zones[0].machines[1].mqtt.topic", 16, "must be the last level"),
    ("  topics:\n    - topic: umh/v1/acme/+/{machine}/_historian\n      payload: umh\n", "",
     "zones[0].machines[0].mqtt", 9, "no topic"),
    ("telegraf/oven-1/modbus", "plant/press-1/+",
     "zones[0].machines[2].mqtt.topic", 20, "already the topic of press-1"),
]


@pytest.mark.parametrize(
    ("old", "new", "expected", "says"),
    [(old, new, (path, line), says) for old, new, path, line, says in MISTAKES],
)
def test_a_wrong_pattern_or_format_is_refused_with_its_path_and_line(
    tmp_path: Path, old: str, new: str, expected: tuple[str, int], says: str
) -> None:
    assert old in SITE
    found = issues(tmp_path, SITE.replace(old, new, 1))
    assert [(i.path, i.line) for i in found] == [expected], found
    assert says in found[0].message


def test_a_pattern_that_gives_a_machine_another_machines_topic(tmp_path: Path) -> None:
    text = SITE.replace("telegraf/oven-1/modbus", "umh/v1/acme/+/cnc-1/_historian")
    found = issues(tmp_path, text)
    assert [i.path for i in found] == ["mqtt.topics[0].topic"], found
    assert "the topic of oven-1" in found[0].message
