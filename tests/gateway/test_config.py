"""The site configuration: models, error paths and lines, secrets, conversion to the core."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pilotline.gateway.config import (
    INFLUX_TOKEN_ENV,
    AlertMqttConfig,
    ConfigError,
    ConfigIssue,
    EmailConfig,
    InfluxConfig,
    MqttBrokerConfig,
    MqttMachineSource,
    OpcuaSource,
    SiteConfig,
    WebhookConfig,
    load_config,
    summarize,
)
from pilotline.rules.spec import MappedState, ThresholdState
from pilotline.rules.states import DEFAULT_STATE_MAP, State

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# Copied verbatim from ../shared/DESIGN.md, "Configuration and command line".
DESIGN_EXAMPLE = """\
site: marseille-pilot
mqtt:
  url: mqtt://127.0.0.1:1883          # mqtts:// for TLS
  username: gateway                   # optional
  password_file: /run/secrets/mqtt    # optional; secrets never inline
influx:                               # optional: without it, the embedded store alone
  url: http://127.0.0.1:8086
  org: pilot
  bucket: pilotline
  token_file: /run/secrets/influx     # or PILOTLINE_INFLUX_TOKEN
store: ./var/pilotline.db             # embedded store and durable outbox
api: 127.0.0.1:8080
defaults:                             # any machine may override these
  debounce_s: 20
  stale_after_s: 60
  min_idle_s: 900
  publish_interval_s: 60
zones:
  - id: photonics
    machines:
      - id: laser-01
        owner: acme-optics
        capabilities: [laser-cutting, laser-marking]
        opcua:
          endpoint: opc.tcp://10.1.0.21:4840
          nodes: {state: "ns=2;s=Laser01.State", power_w: "ns=2;s=Laser01.Power"}
        state: {signal: state, map: {Executing: running, NotExecuting: idle, OutOfService: maintenance, Fault: down}}
      - id: cam-02
        owner: acme-optics
        capabilities: [optical-inspection]
        mqtt:
          topic: pilot/photonics/cam-02/telemetry
        state: {signal: power_w, running_above: 120, idle_below: 60}
"""  # noqa: E501 (verbatim)

# A small valid site: line numbers in the tests below refer to this text.
MINIMAL = """\
site: test-site
mqtt:
  url: mqtt://127.0.0.1:1883
zones:
  - id: z1
    machines:
      - id: m1
        owner: acme
        mqtt: {topic: t/m1}
        state: {signal: state}
      - id: m2
        owner: acme
        mqtt: {topic: t/m2}
        state: {signal: power_w, running_above: 100, idle_below: 50}
"""


def write(tmp_path: Path, text: str, name: str = "pilotline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def issues_of(path: Path, **kwargs: bool) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, **kwargs)
    return caught.value.issues


def where(issues: list[ConfigIssue]) -> list[tuple[str, int | None]]:
    return [(issue.path, issue.line) for issue in issues]


# --------------------------------------------------------------------------- valid files


def test_design_example_validates(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DESIGN_EXAMPLE), check_files=False)

    assert config.site == "marseille-pilot"
    assert config.mqtt is not None
    assert config.mqtt.username == "gateway"
    assert config.influx is not None
    assert config.influx.bucket == "pilotline"
    assert config.api_host == "127.0.0.1"
    assert config.api_port == 8080
    assert [(z.id, m.id, m.source) for z, m in config.machines()] == [
        ("photonics", "laser-01", "opcua"),
        ("photonics", "cam-02", "mqtt"),
    ]


def test_design_example_names_secret_files_that_must_exist(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path, DESIGN_EXAMPLE))

    assert where(issues) == [("mqtt.password_file", 5), ("influx.token_file", 10)]
    assert "file not found: /run/secrets/mqtt" in issues[0].message


@pytest.mark.parametrize("name", ["pilotline.yaml", "pilotline-mqtt.yaml"])
def test_deploy_examples_validate(name: str) -> None:
    config = load_config(DEPLOY / name, check_files=False)
    assert config.plant_spec().machines


# Each component's sample.yaml, beside its code: the sections it holds and the model of each
# ("*": every item of a list).
COMPONENT_SAMPLES: dict[str, list[tuple[tuple[str, ...], type[Any]]]] = {
    "collectors/pilotline/collectors/mqtt/sample.yaml": [
        (("mqtt",), MqttBrokerConfig),
        (("zones", "*", "machines", "*", "mqtt"), MqttMachineSource),
    ],
    "collectors/pilotline/collectors/opcua/sample.yaml": [
        (("zones", "*", "machines", "*", "opcua"), OpcuaSource),
    ],
    "gateway/pilotline/gateway/sinks/influx/sample.yaml": [(("influx",), InfluxConfig)],
    "gateway/pilotline/gateway/notify/webhook/sample.yaml": [
        (("alerts", "webhooks", "*"), WebhookConfig),
    ],
    "gateway/pilotline/gateway/notify/email/sample.yaml": [(("alerts", "email", "*"), EmailConfig)],
    "gateway/pilotline/gateway/notify/mqtt/sample.yaml": [
        (("alerts", "mqtt", "*"), AlertMqttConfig),
    ],
}
# What a sample without zones is completed with (its channels may name the zone).
SAMPLE_ZONES = [
    {
        "id": "photonics",
        "machines": [
            {
                "id": "laser-01",
                "owner": "acme-optics",
                "opcua": {"endpoint": "opc.tcp://10.1.0.21:4840", "nodes": {"state": "i=2258"}},
                "state": {"signal": "state"},
            }
        ],
    }
]


def sections(data: Any, path: tuple[str, ...]) -> Iterator[Any]:
    if not path:
        yield data
        return
    head, rest = path[0], path[1:]
    for item in data if head == "*" else [data[head]]:
        yield from sections(item, rest)


def test_every_component_has_its_sample() -> None:
    found = {str(p.relative_to(ROOT)) for p in ROOT.glob("*/pilotline/*/**/sample.yaml")}
    assert found == set(COMPONENT_SAMPLES)


@pytest.mark.parametrize("sample", sorted(COMPONENT_SAMPLES))
def test_component_samples_validate(sample: str, tmp_path: Path) -> None:
    """Through each section's own model, then as part of a site file."""
    data = yaml.safe_load((ROOT / sample).read_text())
    for path, model in COMPONENT_SAMPLES[sample]:
        found = list(sections(data, path))
        assert found, path
        for section in found:
            model.model_validate(section)
    site = write(tmp_path, yaml.safe_dump({"site": "sample", "zones": SAMPLE_ZONES, **data}))
    assert load_config(site, check_files=False).machines()


def test_mqtt_deploy_example_needs_no_secret_files() -> None:
    config = load_config(DEPLOY / "pilotline-mqtt.yaml")

    assert len(config.zones) == 2
    assert {m.source for _, m in config.machines()} == {"mqtt"}
    assert len(config.machines()) == 4


def test_broken_deploy_example_reports_all_its_mistakes() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(DEPLOY / "broken.yaml")

    assert where(caught.value.issues) == [
        ("mqtt.password", 6),
        ("defaults.debounce", 8),
        ("zones[0].machines[0].state", 15),
        ("zones[0].machines[1].mqtt.topic", 18),
        ("zones[0].machines[1].state.map.Fault", 19),
    ]
    lines = str(caught.value).splitlines()
    assert len(lines) == 5
    assert lines[1].endswith(
        "broken.yaml:8 defaults.debounce: unknown key 'debounce': did you mean 'debounce_s'?"
    )


def test_summary(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DESIGN_EXAMPLE), check_files=False)

    lines = summarize(config).splitlines()

    assert lines[0] == "site marseille-pilot: 1 zone, 2 machines (1 mqtt, 1 opcua)"
    assert lines[1] == (
        "  photonics: laser-01 [opcua: state, power_w] laser-cutting, laser-marking"
        " · not offered: no policy"  # DESIGN's example names no offering policy
    )
    assert lines[2].split() == [
        "cam-02", "[mqtt:", "power_w]", "optical-inspection", "·", "not", "offered:", "no",
        "policy",
    ]
    assert "  mqtt broker mqtt://127.0.0.1:1883" in lines
    assert "  api 127.0.0.1:8080" in lines


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "influx").write_text("tok\n")
    path = write(
        tmp_path,
        MINIMAL
        + textwrap.dedent("""\
        store: data/pl.db
        influx: {url: "http://h:8086", org: o, bucket: b, token_file: secrets/influx}
        """),
    )

    config = load_config(path)

    assert config.store == tmp_path / "data" / "pl.db"
    assert config.influx is not None
    assert config.influx.token_file == tmp_path / "secrets" / "influx"
    assert config.influx.token() == "tok"


# --------------------------------------------------------------------------- paths and lines


# (text replaced in MINIMAL, replacement, path, line, part of the message)
MISTAKES = [
    ("site: test-site", "site: Test Site", "site", 1, "not a valid id"),
    ("  url: mqtt://127.0.0.1:1883", "  url: http://x", "mqtt.url", 3, "mqtt://"),
    ("  - id: z1", "  - id: 7", "zones[0].id", 5, "YAML read it as an integer, quote it"),
    (
        "owner: acme\n        mqtt: {topic: t/m1}",
        "mqtt: {topic: t/m1}",
        "zones[0].machines[0].owner",
        7,
        "required key is missing",
    ),
    (
        "{signal: state}",
        "{signal: state, map: {Executing: busy}}",
        "zones[0].machines[0].state.map.Executing",
        10,
        "got 'busy'",
    ),
    (
        "{signal: state}",
        "{signal: state, running_above: 1, idle_below: 0, map: {}}",
        "zones[0].machines[0].state",
        10,
        "either map or running_above/idle_below",
    ),
    (
        "running_above: 100, idle_below: 50",
        "running_above: 50, idle_below: 100",
        "zones[0].machines[1].state",
        14,
        "must not exceed running_above",
    ),
    (
        "running_above: 100, idle_below: 50",
        "running_above: 100",
        "zones[0].machines[1].state",
        14,
        "go together",
    ),
    (
        "running_above: 100, idle_below: 50",
        "running_above: .nan, idle_below: 50",
        "zones[0].machines[1].state.running_above",
        14,
        "finite",
    ),
    (
        "{signal: state}",
        "{signal: state, map: {on: running}}",
        "zones[0].machines[0].state.map",
        10,
        "quote it",
    ),
    (
        "      - id: m2",
        "      - id: m1",
        "zones[0].machines[1].id",
        11,
        "duplicate machine id 'm1': also zones[0].machines[0]",
    ),
    (
        "{topic: t/m2}",
        "{topic: t/m1}",
        "zones[0].machines[1].mqtt.topic",
        13,
        "already the topic of m1",
    ),
    ("{topic: t/m2}", "{topic: 't/a+'}", "zones[0].machines[1].mqtt.topic", 13, "whole level"),
    ("        mqtt: {topic: t/m2}\n", "", "zones[0].machines[1]", 11, "no source"),
]


@pytest.mark.parametrize(
    ("old", "new", "expected", "fragment"),
    [(old, new, (path, line), fragment) for old, new, path, line, fragment in MISTAKES],
)
def test_each_mistake_has_its_path_and_line(
    tmp_path: Path, old: str, new: str, expected: tuple[str, int], fragment: str
) -> None:
    assert old in MINIMAL
    issues = issues_of(write(tmp_path, MINIMAL.replace(old, new, 1)))

    assert where(issues) == [expected], issues
    assert fragment in issues[0].message


def test_capabilities_are_ids_and_all_is_reserved(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "        mqtt: {topic: t/m1}",
        "        capabilities: [laser, all, Laser, laser]\n        mqtt: {topic: t/m1}",
    )
    issues = issues_of(write(tmp_path, text))

    assert where(issues) == [
        ("zones[0].machines[0].capabilities[1]", 9),
        ("zones[0].machines[0].capabilities[2]", 9),
    ]
    assert "reserved" in issues[0].message


def test_duplicate_zone_ids(tmp_path: Path) -> None:
    extra = """\
  - id: z1
    machines:
      - {id: m3, owner: acme, mqtt: {topic: t/m3}, state: {signal: s}}
"""
    issues = issues_of(write(tmp_path, MINIMAL + extra))
    assert where(issues) == [("zones[1].id", 15)]
    assert "duplicate zone id 'z1': also zones[0]" in issues[0].message


def test_machine_with_both_sources(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "        mqtt: {topic: t/m1}",
        "        mqtt: {topic: t/m1}\n"
        "        opcua: {endpoint: 'opc.tcp://h:4840', nodes: {state: 'i=1'}}",
    )
    issues = issues_of(write(tmp_path, text))
    assert where(issues) == [("zones[0].machines[0]", 7)]
    assert "both mqtt: and opcua:" in issues[0].message


def test_mqtt_machine_without_a_broker(tmp_path: Path) -> None:
    text = MINIMAL.replace("mqtt:\n  url: mqtt://127.0.0.1:1883\n", "")
    issues = issues_of(write(tmp_path, text))
    assert where(issues) == [
        ("zones[0].machines[0].mqtt", 7),
        ("zones[0].machines[1].mqtt", 11),
    ]
    assert all("broker section" in i.message for i in issues)


def test_a_signal_name_line_protocol_cannot_write_is_refused(tmp_path: Path) -> None:
    """A name ending in a backslash would make every telemetry line of its machine fail."""
    text = MINIMAL.replace("state: {signal: state}", "state: {signal: 'state\\'}").replace(
        "        mqtt: {topic: t/m2}",
        "        opcua: {endpoint: 'opc.tcp://h:4840', nodes: {power_w: 'ns=2;s=P', 'x\\': 'n'}}",
    )
    issues = issues_of(write(tmp_path, text))
    assert sorted(where(issues)) == [
        ("zones[0].machines[0].state.signal", 10),
        (f"zones[0].machines[1].opcua.nodes[{'x' + chr(92)!r}]", 13),
    ]
    assert all("must not end with a backslash" in i.message for i in issues)


def test_opcua_state_signal_must_be_a_node(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "        mqtt: {topic: t/m1}",
        "        opcua: {endpoint: 'opc.tcp://h:4840', nodes: {power_w: 'ns=2;s=P'}}",
    )
    issues = issues_of(write(tmp_path, text))
    assert where(issues) == [("zones[0].machines[0].state.signal", 10)]
    assert "'state' is not one of opcua.nodes (power_w)" in issues[0].message


def test_opcua_optional_fields(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "        mqtt: {topic: t/m1}",
        textwrap.indent(
            textwrap.dedent("""\
            opcua:
              endpoint: opc.tcp://h:4840
              nodes: {state: "ns=2;s=S"}
              security_policy: Basic256Sha256
              security_mode: Sign
              certificate_file: cert.der
              private_key_file: key.pem
              publishing_interval_ms: 500
              sampling_interval_ms: 100"""),
            "        ",
        ),
    )
    issues = issues_of(write(tmp_path, text))
    assert where(issues) == [
        ("zones[0].machines[0].opcua.certificate_file", 14),
        ("zones[0].machines[0].opcua.private_key_file", 15),
    ]
    config = load_config(write(tmp_path, text), check_files=False)
    opcua = config.zones[0].machines[0].opcua
    assert opcua is not None
    assert opcua.private_key_file == tmp_path / "key.pem"
    assert opcua.publishing_interval_ms == 500


@pytest.mark.parametrize(
    ("old", "new", "path", "line"),
    [
        ("site: test-site", "site: test-site\nsiet: x", "siet", 2),
        (
            "  url: mqtt://127.0.0.1:1883",
            "  url: mqtt://127.0.0.1:1883\n  pasword_file: x",
            "mqtt.pasword_file",
            4,
        ),
        ("  - id: z1", "  - id: z1\n    name: Z", "zones[0].name", 6),
        (
            "        owner: acme\n        mqtt: {topic: t/m1}",
            "        owner: acme\n        mqtt: {topic: t/m1, retain: true}",
            "zones[0].machines[0].mqtt.retain",
            9,
        ),
        (
            "{signal: state}",
            "{signal: state, hysteresis: 2}",
            "zones[0].machines[0].state.hysteresis",
            10,
        ),
        ("site: test-site", "site: test-site\ndefaults: {debounce: 1}", "defaults.debounce", 2),
        ("site: test-site", "site: test-site\nlog: {level: info, colour: true}", "log.colour", 2),
    ],
)
def test_unknown_keys_anywhere_are_errors(
    tmp_path: Path, old: str, new: str, path: str, line: int
) -> None:
    issues = issues_of(write(tmp_path, MINIMAL.replace(old, new, 1)))

    assert where(issues) == [(path, line)]
    assert issues[0].message.startswith(f"unknown key {path.rsplit('.', 1)[-1]!r}")


def test_unknown_key_suggests_or_lists(tmp_path: Path) -> None:
    text = MINIMAL.replace("site: test-site", "site: test-site\ndefaults: {debounce: 1, foo: 2}")
    messages = [i.message for i in issues_of(write(tmp_path, text))]
    assert messages[0] == "unknown key 'debounce': did you mean 'debounce_s'?"
    assert messages[1].startswith("unknown key 'foo': allowed here: debounce_s, stale_after_s")


def test_all_mistakes_at_once_in_file_order(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace("site: test-site", "site: Test")
        .replace("      - id: m2", "      - id: m1")
        .replace("{signal: state}", "{signal: state, map: {X: nope}}")
        .replace("running_above: 100, idle_below: 50", "running_above: 1, idle_below: 5")
    )
    issues = issues_of(write(tmp_path, text))
    assert [i.line for i in issues] == [1, 10, 11, 14]


def test_duplicate_yaml_keys_are_errors(tmp_path: Path) -> None:
    text = MINIMAL.replace("        owner: acme\n", "        owner: acme\n        owner: beta\n", 1)
    issues = issues_of(write(tmp_path, text))
    assert where(issues) == [("zones[0].machines[0].owner", 9)]
    assert issues[0].message == "duplicate key 'owner' (first at line 8)"


def test_error_string_lists_one_issue_per_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL.replace("site: test-site", "site: Bad").replace("{topic: t/m2}", "{topic: t/m1}"),
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).splitlines() == [
        f"{path}:1 site: 'Bad' is not a valid id: use lowercase letters, digits, '.', '_' and "
        "'-', starting with a letter or a digit (ids become tag values and MQTT topic levels)",
        f"{path}:13 zones[0].machines[1].mqtt.topic: topic 't/m1' is already the topic of m1 "
        "(zones[0].machines[0]): one topic per machine",
    ]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("site: x\nzones: [\n", 3, "YAML syntax"),
        ("site: x\n  zones: 1\n", 2, "YAML syntax"),
        ("a: 1\n---\nb: 2\n", 2, "YAML syntax"),
        ("", None, "the file is empty"),
        ("- 1\n- 2\n", 1, "the file is a list"),
        ("site: x\nzones: [{a: !!python/object:os.system x}]\n", 2, "YAML syntax"),
        ("site: x\n\x1f\n", 2, "character U+001F is not allowed"),
    ],
)
def test_yaml_problems_are_one_issue_with_a_line(
    tmp_path: Path, text: str, line: int | None, fragment: str
) -> None:
    issues = issues_of(write(tmp_path, text))
    assert len(issues) == 1
    assert issues[0].line == line
    assert fragment in issues[0].message


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    missing = issues_of(tmp_path / "nope.yaml")
    assert missing[0].message == "cannot read the file: No such file or directory"
    assert issues_of(tmp_path)[0].message.startswith("cannot read the file")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"site: x\n\xff\xfe\n")
    assert where(issues_of(binary)) == [("", 2)]


def test_missing_file_error_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert str(caught.value) == (
        f"{tmp_path / 'nope.yaml'} cannot read the file: No such file or directory"
    )


# --------------------------------------------------------------------------- secrets


def test_inline_influx_token_is_refused_with_guidance(tmp_path: Path) -> None:
    text = MINIMAL + "influx: {url: 'http://h:8086', org: o, bucket: b, token: s3cret}\n"
    issues = issues_of(write(tmp_path, text))
    assert where(issues) == [("influx.token", 15)]
    assert issues[0].message == (
        "secrets are not accepted inline: put the token in a file and set token_file, "
        f"or set {INFLUX_TOKEN_ENV}"
    )
    assert "s3cret" not in str(issues)


def test_inline_mqtt_password_is_refused_with_guidance(tmp_path: Path) -> None:
    text = MINIMAL.replace("  url: mqtt://127.0.0.1:1883", "  url: mqtt://h\n  password: s3cret")
    issues = issues_of(write(tmp_path, text))
    assert where(issues) == [("mqtt.password", 4)]
    assert "put the password in a file and set password_file" in issues[0].message
    assert "s3cret" not in str(issues)


def test_inline_opcua_password_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "        mqtt: {topic: t/m1}",
        "        opcua: {endpoint: 'opc.tcp://h', nodes: {state: 'i=1'}, username: u,"
        " password: s3cret}",
    )
    issues = issues_of(write(tmp_path, text))
    assert where(issues) == [("zones[0].machines[0].opcua.password", 9)]
    assert "password_file" in issues[0].message


def test_missing_secret_file_is_an_issue_with_its_path(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "  url: mqtt://127.0.0.1:1883",
        "  url: mqtt://127.0.0.1:1883\n  username: gw\n  password_file: secrets/mqtt",
    )
    issues = issues_of(write(tmp_path, text))
    assert where(issues) == [("mqtt.password_file", 5)]
    assert issues[0].message == f"file not found: {tmp_path / 'secrets' / 'mqtt'}"

    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mqtt").write_text("pw\n")
    config = load_config(tmp_path / "pilotline.yaml")
    assert config.mqtt is not None
    assert config.mqtt.password() == "pw"


def test_influx_token_from_file_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    from_file = InfluxConfig(url="http://h:8086", org="o", bucket="b", token_file=token_file)
    from_env = InfluxConfig(url="http://h:8086", org="o", bucket="b")

    assert from_file.token({INFLUX_TOKEN_ENV: "from-env"}) == "from-file"
    assert from_env.token({INFLUX_TOKEN_ENV: "from-env"}) == "from-env"
    assert from_env.token({}) is None
    monkeypatch.setenv(INFLUX_TOKEN_ENV, "process-env")
    assert from_env.token() == "process-env"
    assert "from-file" not in repr(from_file)


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://host:8086/api/v2/write", "http://host:8086"),
        ("http://host:8086/api/v2/write?org=o&bucket=b", "http://host:8086"),
        ("https://proxy.example/influx/api/v2", "https://proxy.example/influx"),
        ("http://host:8086/write?db=pilotline", "http://host:8086"),
    ],
)
def test_influx_url_with_an_api_path_is_refused_with_the_base_url(
    tmp_path: Path, url: str, base: str
) -> None:
    # The client adds /api/v2/write itself: such a url was answered 404, retried forever.
    text = MINIMAL + f"influx: {{url: '{url}', org: o, bucket: b}}\n"
    issues = issues_of(write(tmp_path, text), check_files=False)
    assert where(issues) == [("influx.url", 15)]
    assert f"is not the server's base URL: give {base} " in issues[0].message
    # The url it gives is taken, a reverse proxy's prefix (/influx) included.
    assert InfluxConfig(url=base, org="o", bucket="b").url == base


# --------------------------------------------------------------------------- conversion


def test_plant_spec_overrides_and_milliseconds(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace(
            "        state: {signal: state}",
            "        state: {signal: state}\n        debounce_s: 2.5\n        min_idle_s: 0",
        )
        + "defaults: {debounce_s: 5, stale_after_s: 30, min_idle_s: 600, publish_interval_s: 15}\n"
    )
    spec = load_config(write(tmp_path, text)).plant_spec()

    m1, m2 = spec.machines
    assert spec.publish_interval_ms == 15_000
    assert (m1.id, m1.zone, m1.owner) == ("m1", "z1", "acme")
    assert (m1.debounce_ms, m1.stale_after_ms, m1.min_idle_ms, m1.publish_interval_ms) == (
        2500,
        30_000,
        0,
        15_000,
    )
    assert (m2.debounce_ms, m2.stale_after_ms, m2.min_idle_ms) == (5000, 30_000, 600_000)
    assert m2.state == ThresholdState("power_w", running_above=100.0, idle_below=50.0)


def test_plant_spec_defaults(tmp_path: Path) -> None:
    spec = load_config(write(tmp_path, MINIMAL)).plant_spec()
    m1 = spec.machines[0]
    assert (m1.debounce_ms, m1.stale_after_ms, m1.min_idle_ms, m1.publish_interval_ms) == (
        20_000,
        60_000,
        900_000,
        60_000,
    )
    assert spec.publish_interval_ms == 60_000
    assert isinstance(m1.state, MappedState)
    assert dict(m1.state.mapping) == dict(DEFAULT_STATE_MAP)


def test_state_map_is_laid_over_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DESIGN_EXAMPLE), check_files=False)
    rule = config.plant_spec().machines[0].state

    assert isinstance(rule, MappedState)
    assert rule.signal == "state"
    assert rule.mapping["Fault"] is State.DOWN  # the machine's own entry
    assert rule.mapping["OutOfService"] is State.MAINTENANCE  # overrides the default (down)
    assert DEFAULT_STATE_MAP["OutOfService"] is State.DOWN
    assert rule.mapping["Held"] is State.RUNNING  # a default the machine did not touch
    assert set(rule.mapping) == set(DEFAULT_STATE_MAP) | {"Fault"}


def test_numeric_map_keys_become_text(tmp_path: Path) -> None:
    text = MINIMAL.replace("{signal: state}", "{signal: packml, map: {6: running, 4: idle}}")
    rule = load_config(write(tmp_path, text)).plant_spec().machines[0].state
    assert isinstance(rule, MappedState)
    assert (rule.mapping["6"], rule.mapping["4"]) == (State.RUNNING, State.IDLE)


def test_site_checks_also_guard_configurations_built_in_code() -> None:
    data = yaml.safe_load(MINIMAL.replace("{topic: t/m2}", "{topic: t/m1}"))
    with pytest.raises(ValidationError, match="already the topic of m1"):
        SiteConfig.model_validate(data)
    assert SiteConfig.model_validate(yaml.safe_load(MINIMAL)).site == "test-site"


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(ValidationError):
        config.site = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("api", "ok"),
    [
        ("127.0.0.1:8080", True),
        ("0.0.0.0:80", True),
        ("gateway.local:8080", True),
        ("'[::1]:8080'", True),
        ("8080", False),
        ("127.0.0.1:0", False),
        ("127.0.0.1:http", False),
        ("999.1.1.1:80", False),
        ("::1:8080", False),
        ("':8080'", False),
    ],
)
def test_api_address(tmp_path: Path, api: str, ok: bool) -> None:
    path = write(tmp_path, MINIMAL + f"api: {api}\n")
    if ok:
        load_config(path)
    else:
        assert where(issues_of(path)) == [("api", 15)]


# --------------------------------------------------------------------------- robustness

_KEYS = [
    "site",
    "mqtt",
    "url",
    "zones",
    "id",
    "machines",
    "owner",
    "state",
    "signal",
    "map",
    "running_above",
    "idle_below",
    "opcua",
    "nodes",
    "topic",
    "defaults",
    "debounce_s",
    "influx",
    "token",
    "api",
    "capabilities",
    "x",
]
_yaml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["mqtt://h", "opc.tcp://h", "i=1", "running", "a-b", "t/1"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(_KEYS), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(alphabet=st.characters(exclude_categories=["Cs"]))
    | _yaml_values.map(lambda v: yaml.safe_dump(v, allow_unicode=True))
)
def test_load_config_only_ever_raises_config_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        error = exc
    else:
        return
    assert error.issues
    assert str(error)


def test_machines_sharing_an_opcua_endpoint_must_share_its_settings(tmp_path: Path) -> None:
    text = """\
site: s
zones:
  - id: z
    machines:
      - id: a
        owner: o
        opcua: {endpoint: "opc.tcp://h:4840", nodes: {state: "ns=2;s=A"}}
        state: {signal: state}
      - id: b
        owner: o
        opcua: {endpoint: "opc.tcp://h:4840", nodes: {state: "ns=2;s=B"},
                security_policy: Basic256Sha256, security_mode: Sign,
                certificate_file: c.der, private_key_file: k.pem}
        state: {signal: state}
"""
    issues = issues_of(write(tmp_path, text))
    paths = {issue.path for issue in issues}
    assert "zones[0].machines[1].opcua.security_policy" in paths
    assert "zones[0].machines[1].opcua.security_mode" in paths
    assert all("share its connection" in i.message for i in issues if "security" in i.path)


def test_offering_policies_reach_the_core(tmp_path: Path) -> None:
    text = """\
site: s
timezone: Europe/Paris
owners:
  acme:
    offering:
      weekly: [{days: [weekdays], from: 18:00, to: "06:00"}]
      blackouts: [{from: "2026-12-24T00:00:00", to: "2026-12-27T00:00:00"}]
      min_idle_s: 1800
      min_window_s: 600
zones:
  - id: z
    machines:
      - id: a
        owner: acme
        opcua: {endpoint: "opc.tcp://h:4840", nodes: {state: "ns=2;s=A"}}
        state: {signal: state}
      - id: b
        owner: acme
        opcua: {endpoint: "opc.tcp://h:4840", nodes: {state: "ns=2;s=B"}}
        state: {signal: state}
        offering: {weekly: [{days: [daily], from: "00:00", to: "24:00"}]}
        min_idle_s: 60
"""
    spec_a, spec_b = load_config(write(tmp_path, text)).plant_spec().machines
    assert spec_a.min_idle_ms == 1_800_000  # the owner's offering
    assert spec_b.min_idle_ms == 60_000  # the machine's own setting wins
    # unquoted 18:00 is a base-60 number in YAML 1.1; it still means 18:00
    assert [(s.start.hour, s.end.hour if s.end else 24) for s in spec_a.policy.weekly] == [(18, 6)]
    assert str(spec_a.policy.tz) == "Europe/Paris"
    assert len(spec_a.policy.blackouts) == 1
    assert spec_a.policy.min_window_ms == 600_000
    assert spec_b.policy.weekly[0].days == frozenset(range(7))


def test_offering_mistakes_have_paths(tmp_path: Path) -> None:
    text = """\
site: s
timezone: Mars/Olympus
owners:
  acme:
    offering:
      weekly: [{days: [someday], from: "25:00", to: "06:00"}]
      blackouts: [{from: "2026-12-27T00:00:00", to: "2026-12-24T00:00:00"}]
zones:
  - id: z
    machines:
      - id: a
        owner: acme
        opcua: {endpoint: "opc.tcp://h:4840", nodes: {state: "ns=2;s=A"}}
        state: {signal: state}
"""
    paths = {issue.path for issue in issues_of(write(tmp_path, text))}
    assert {
        "timezone",
        "owners.acme.offering.weekly[0].days[0]",
        "owners.acme.offering.weekly[0].from",
        "owners.acme.offering.blackouts[0]",
    } <= paths
