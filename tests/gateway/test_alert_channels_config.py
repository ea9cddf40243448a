"""The alert channels of ``alerts:``: webhooks, e-mail and MQTT, their shared keys (``name``
unique across kinds, ``min_severity``, ``zones`` routing) and every mistake with its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilotline.gateway.config import (
    AlertMqttConfig,
    ConfigError,
    EmailConfig,
    WebhookConfig,
    load_config,
)
from pilotline.rules.dispatch import Route

SITE = """\
site: unit-site
{mqtt}
store: {store}
zones:
  - id: photonics
    machines:
      - id: laser-01
        owner: acme
        opcua: {{endpoint: "opc.tcp://127.0.0.1:4840", nodes: {{state: "ns=2;s=S"}}}}
        state: {{signal: state}}
  - id: imaging
    machines:
      - id: cam-02
        owner: acme
        opcua: {{endpoint: "opc.tcp://127.0.0.1:4840", nodes: {{state: "ns=2;s=T"}}}}
        state: {{signal: state}}
alerts:
"""
BROKER = 'mqtt: {url: "mqtt://127.0.0.1:1883", username: gw, password_file: mqtt.pw}'


def write(tmp_path: Path, alerts: str, *, broker: bool = True) -> Path:
    (tmp_path / "smtp.pw").write_text("s3cret\n")
    (tmp_path / "mqtt.pw").write_text("m\n")
    (tmp_path / "ca.pem").write_text("not read at load\n")
    path = tmp_path / "site.yaml"
    text = SITE.format(mqtt=BROKER if broker else "", store=tmp_path / "gw.db") + alerts
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, alerts: str, *, broker: bool = True) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, alerts, broker=broker))
    return [f"{i.path}: {i.message}" for i in caught.value.issues]


ALL_KINDS = """\
  webhooks:
    - {name: chat, url: "https://hooks.example.com/x", format: slack, zones: [photonics]}
  email:
    - name: oncall
      host: smtp.example.com
      username: pilotline
      password_file: smtp.pw
      ca_file: ca.pem
      from: "Pilotline <alerts@example.com>"
      to: [ops@example.com, "Night Shift <night@example.com>"]
      min_severity: critical
    - name: plain
      host: 127.0.0.1
      port: 2525
      starttls: false
      from: alerts@example.com
      to: [ops@example.com]
    - {name: smtps, host: smtp.example.com, tls: true, from: a@example.com, to: [b@example.com]}
  mqtt:
    - {name: panel, min_severity: warning, zones: [imaging, photonics]}
    - {name: andon, topic_prefix: factory/andon, timeout_s: 3}
"""


def test_every_channel_kind_loads_with_its_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ALL_KINDS))
    alerts = config.alerts
    assert [c.name for c in alerts.channels()] == [
        "chat", "oncall", "plain", "smtps", "panel", "andon"
    ]
    oncall, plain, smtps = alerts.email
    assert (oncall.host, oncall.smtp_port, oncall.starttls, oncall.tls) == (
        "smtp.example.com", 587, True, False
    )
    assert oncall.password() == "s3cret"  # read from the file, newline stripped
    assert oncall.password_file == tmp_path / "smtp.pw"  # resolved beside the file
    assert oncall.ca_file == tmp_path / "ca.pem"
    assert oncall.sender == "Pilotline <alerts@example.com>"
    assert oncall.to == ["ops@example.com", "Night Shift <night@example.com>"]
    assert oncall.timeout_s == 30.0
    assert (plain.smtp_port, plain.encrypted, plain.password()) == (2525, False, None)
    assert (smtps.smtp_port, smtps.tls) == (465, True)
    panel, andon = alerts.mqtt
    assert panel.prefix(config.site) == "pilotline/unit-site/alerts"
    assert andon.prefix(config.site) == "factory/andon"
    assert andon.timeout_s == 3
    assert (panel.private, andon.private) == (False, False)  # owner names left out by default


def test_each_channel_routes_by_severity_and_zone(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ALL_KINDS))
    assert config.alerts.routes() == (
        Route("chat", "info", frozenset({"photonics"})),
        Route("oncall", "critical", None),
        Route("plain", "info", None),
        Route("smtps", "info", None),
        Route("panel", "warning", frozenset({"imaging", "photonics"})),
        Route("andon", "info", None),
    )
    oncall = config.alerts.email[0].route()
    wants = [oncall.matches(s, "photonics") for s in ("info", "warning", "critical")]
    assert wants == [False, False, True]


def test_no_channels_is_fine(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "  rules: []\n"))
    assert config.alerts.channels() == []
    assert config.alerts.routes() == ()


EMAIL = "  email:\n    - {name: m, host: smtp.example.com, from: a@example.com, to: [b@example.com]"


@pytest.mark.parametrize(
    ("alerts", "path", "expected"),
    [
        # names are unique across every kind of channel
        (
            '  webhooks:\n    - {name: ops, url: "http://x/"}\n'
            "  mqtt:\n    - {name: ops}\n",
            "alerts.mqtt[0].name",
            "duplicate channel name 'ops': also alerts.webhooks[0]",
        ),
        (
            EMAIL + "}\n  webhooks:\n    - {name: m, url: 'http://x/'}\n",
            "alerts.email[0].name",
            "duplicate channel name 'm': also alerts.webhooks[0]",
        ),
        # zones must exist, with a hint
        (
            '  webhooks:\n    - {name: a, url: "http://x/", zones: [photonic]}\n',
            "alerts.webhooks[0].zones[0]",
            "no zone 'photonic': did you mean 'photonics'?",
        ),
        (EMAIL + ", zones: [nowhere]}\n", "alerts.email[0].zones[0]", "no zone 'nowhere'"),
        ("  mqtt:\n    - {name: p, zones: [Imaging]}\n", "alerts.mqtt[0].zones[0]", "valid id"),
        # secrets never inline
        (
            EMAIL + ", username: u, password: hunter2}\n",
            "alerts.email[0].password",
            "secrets are not accepted inline: put the password in a file and set password_file",
        ),
        (EMAIL + ", username: u}\n", "alerts.email[0]", "username and password_file go together"),
        (
            EMAIL + ", username: u, password_file: smtp.pw, starttls: false}\n",
            "alerts.email[0]",
            "credentials are only sent over TLS",
        ),
        (EMAIL + ", ca_file: ca.pem, starttls: false}\n", "alerts.email[0]", "ca_file is set"),
        (EMAIL + ", tls: true, starttls: true}\n", "alerts.email[0]", "drop starttls"),
        (EMAIL + ", password_file: missing.pw, username: u}\n",
         "alerts.email[0].password_file", "file not found"),
        # addresses and hosts
        (
            "  email:\n    - {name: m, host: h, from: a@example.com, to: []}\n",
            "alerts.email[0].to",
            "at least 1 item",
        ),
        (
            "  email:\n    - {name: m, host: h, from: nobody, to: [b@example.com]}\n",
            "alerts.email[0].from",
            "'nobody' is not an e-mail address",
        ),
        (
            '  email:\n    - {name: m, host: h, from: a@example.com,'
            ' to: ["b@x.com\\r\\nBcc: c@x.com"]}\n',
            "alerts.email[0].to[0]",
            "is not an e-mail address",
        ),
        (
            "  email:\n    - {name: m, host: 'smtp://h', from: a@example.com,"
            " to: [b@example.com]}\n",
            "alerts.email[0].host",
            "not a host name",
        ),
        (EMAIL + ", port: 0}\n", "alerts.email[0].port", "greater than or equal to 1"),
        (EMAIL + ", sender: x@example.com}\n", "alerts.email[0].sender", "unknown key 'sender'"),
        # MQTT
        ("  mqtt:\n    - {name: p, topic_prefix: 'a/+/b'}\n", "alerts.mqtt[0].topic_prefix",
         "no wildcards"),
        ("  mqtt:\n    - {name: p, topic_prefix: 'a/b/'}\n", "alerts.mqtt[0].topic_prefix",
         "trailing /"),
        ("  mqtt:\n    - {name: p, qos: 2}\n", "alerts.mqtt[0].qos", "unknown key 'qos'"),
        ("  mqtt:\n    - {name: p, min_severity: urgent}\n", "alerts.mqtt[0].min_severity",
         "'info', 'warning' or 'critical'"),
    ],
)
def test_channel_mistakes_are_reported_with_their_path(
    tmp_path: Path, alerts: str, path: str, expected: str
) -> None:
    found = problems(tmp_path, alerts)
    assert any(p.startswith(f"{path}: ") and expected in p for p in found), found


def test_an_mqtt_channel_needs_the_sites_broker(tmp_path: Path) -> None:
    found = problems(tmp_path, "  mqtt:\n    - {name: panel}\n", broker=False)
    assert found == [
        "alerts.mqtt[0]: an MQTT alert channel publishes to the site's mqtt: broker: "
        "add an mqtt: section"
    ]


OWNER_RULE = (
    "  rules:\n"
    "    - {{name: down, state: down, severity: {severity}, zones: [{zone}],"
    " message: '{{machine}} of {{owner}} is down'}}\n"
)


@pytest.mark.parametrize(
    ("rule", "channel", "refused"),
    [
        (OWNER_RULE.format(severity="warning", zone="photonics"), "{name: panel}", True),
        (OWNER_RULE.format(severity="warning", zone="photonics"),
         "{name: panel, private: true}", False),
        (OWNER_RULE.format(severity="info", zone="photonics"),
         "{name: panel, min_severity: critical}", False),  # never reaches it
        (OWNER_RULE.format(severity="critical", zone="photonics"),
         "{name: panel, zones: [imaging]}", False),
        (OWNER_RULE.format(severity="critical", zone="imaging"),
         "{name: panel, zones: [imaging]}", True),
    ],
)
def test_a_message_naming_the_owner_reaches_only_a_private_mqtt_channel(
    tmp_path: Path, rule: str, channel: str, refused: bool
) -> None:
    alerts = f"{rule}  mqtt:\n    - {channel}\n"
    if not refused:
        load_config(write(tmp_path, alerts))
        return
    assert problems(tmp_path, alerts) == [
        "alerts.rules[0].message: names {owner}, and alerts.mqtt[0] ('panel') is not private: "
        "any client of the broker could read it. Leave {owner} out, or set private: true "
        "there once the broker's ACLs restrict its topics"
    ]


def test_every_mistake_is_reported_at_once(tmp_path: Path) -> None:
    alerts = (
        "  webhooks:\n    - {name: a, url: 'http://x/', zones: [nope]}\n"
        "  email:\n    - {name: a, host: h, from: x, to: [b@example.com], password: p}\n"
    )
    found = problems(tmp_path, alerts)
    assert {p.split(":")[0] for p in found} >= {
        "alerts.webhooks[0].zones[0]",
        "alerts.email[0].name",
        "alerts.email[0].from",
        "alerts.email[0].password",
    }


def test_the_password_never_shows_in_the_models_repr_or_dump(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ALL_KINDS))
    oncall = config.alerts.email[0]
    assert "s3cret" not in repr(oncall)
    assert "s3cret" not in str(oncall.model_dump())


def test_channels_built_in_code_are_checked_too() -> None:
    hook = WebhookConfig(name="ops", url="http://127.0.0.1:9/", zones=["z1"])
    assert hook.route() == Route("ops", "info", frozenset({"z1"}))
    mail = EmailConfig.model_validate(
        {"name": "m", "host": "127.0.0.1", "from": "a@example.com", "to": ["b@example.com"]}
    )
    assert (mail.smtp_port, mail.starttls) == (587, True)
    assert AlertMqttConfig(name="p").prefix("s") == "pilotline/s/alerts"
    with pytest.raises(ValueError, match="not an e-mail address"):
        EmailConfig.model_validate(
            {"name": "m", "host": "h", "from": "a@example.com", "to": ["<>"]}
        )
