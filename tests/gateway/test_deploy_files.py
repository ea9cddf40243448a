"""The deployment files, checked statically: no Docker engine, Grafana or systemd needed.

The compose file and the Dockerfile parse and reference files that exist, the image runs the
installed console script as a non-root user with a health check, Grafana's provisioning
matches the dashboards, the gateway dashboard's metric names exist in a real Gateway's
/metrics, and the systemd unit has its hardening.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tests.sites import machine_config, site_yaml

from pilotline.collectors.mqtt.collector import AckToken, Quarantined
from pilotline.gateway.api.metrics import registry
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.rules import Sample

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
GRAFANA = DEPLOY / "grafana"


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return doc


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            instruction, _, args = stripped.partition(" ")
            out.append((instruction.upper(), args.strip()))
    return out


def test_compose_has_the_stack_and_the_demo_as_a_profile() -> None:
    services = compose()["services"]
    assert {"mosquitto", "influxdb", "grafana", "prometheus", "pilotline", "demo"} <= set(services)
    assert services["demo"]["profiles"] == ["demo"]
    influx = services["influxdb"]["environment"]
    assert influx["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for key in ("ORG", "BUCKET", "ADMIN_TOKEN_FILE", "PASSWORD_FILE"):
        assert f"DOCKER_INFLUXDB_INIT_{key}" in influx
    # the DBRP mapping through which InfluxQL reads the bucket
    dbrp = compose()["configs"]["influx_dbrp"]["content"]
    assert "influx v1 dbrp create" in dbrp
    assert "--rp autogen" in dbrp


def test_compose_references_files_that_exist() -> None:
    doc = compose()
    # the site's own configuration, and the folder ./secrets.sh init makes for InfluxDB's
    # tokens, both documented in the header
    operator_made = {"./site.yaml", "./secrets/influx"}
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            source = re.sub(r"\$\{[A-Z_]+:-([^}]+)\}", r"\1", source)
            if source.startswith(".") and source not in operator_made:
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
        build = service.get("build")
        if build is not None:
            context = (DEPLOY / build["context"]).resolve()
            assert context == ROOT
            assert (context / build["dockerfile"]).is_file()
        for secret in service.get("secrets", []):
            assert secret in doc["secrets"], f"{name}: undeclared secret {secret}"
        for config in service.get("configs", []):
            assert config["source"] in doc["configs"]
    # secrets are files the operator creates, in the folder the header tells them to make
    for secret in doc["secrets"].values():
        assert secret["file"].startswith("./secrets/")


def test_compose_services_wire_up_with_one_another() -> None:
    doc = compose()
    services = doc["services"]
    assert services["pilotline"]["image"] == services["demo"]["image"]
    prometheus = yaml.safe_load(doc["configs"]["prometheus"]["content"])
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = job["static_configs"][0]["targets"]
    assert "pilotline:8080" in targets
    # The API answers only to its own host names by default (api.allowed_hosts): each
    # gateway's container is named as Prometheus calls it.
    for target in targets:
        name = target.rpartition(":")[0]
        assert services[name]["hostname"] == name
    grafana = services["grafana"]["environment"]
    assert grafana["PILOTLINE_INFLUX_URL"] == "http://influxdb:8086"
    assert grafana["PILOTLINE_PROMETHEUS_URL"] == "http://prometheus:9090"
    mounts = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/pilotline.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] in mounts
    home = grafana["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / Path(home).name).is_file()


def test_the_operator_token_stays_with_influxdb_the_others_get_least_privilege() -> None:
    doc = compose()
    services = doc["services"]
    holders = {name for name, s in services.items() if "influx_token" in s.get("secrets", [])}
    assert holders == {"influxdb"}
    # the site's gateway also logs in to the closed broker; the demo has its own, open one
    assert services["pilotline"]["secrets"] == ["influx_write_token", "mqtt_password"]
    assert services["demo"]["secrets"] == ["influx_write_token"]
    assert "influx_read_token" in services["grafana"]["secrets"]
    assert services["grafana"]["depends_on"]["influxdb"] == {"condition": "service_healthy"}
    # InfluxDB's first setup runs deploy/influx-tokens.sh, which writes the files those
    # secrets are, into the folder mounted for it
    script = DEPLOY / "influx-tokens.sh"
    assert doc["configs"]["influx_tokens"]["file"] == "./influx-tokens.sh"
    assert script.stat().st_mode & 0o111  # run-parts runs executable scripts only
    (init,) = [c for c in services["influxdb"]["configs"] if c["source"] == "influx_tokens"]
    assert init["target"].startswith("/docker-entrypoint-initdb.d/")
    mount = next(v for v in services["influxdb"]["volumes"] if v.startswith("./secrets/influx:"))
    tokens_dir = mount.split(":")[1]
    text = script.read_text()
    assert f"dir=${{PILOTLINE_TOKENS_DIR:-{tokens_dir}}}" in text
    for secret, name, flag in (
        ("influx_write_token", "write_token", "--write-bucket"),
        ("influx_read_token", "read_token", "--read-bucket"),
    ):
        assert doc["secrets"][secret]["file"] == f"./secrets/influx/{name}"
        assert re.search(rf"^make_token {name} .* {flag}$", text, re.MULTILINE)
    # the healthcheck asks the final server, not the setup's temporary one
    assert "http://localhost:8086" in services["influxdb"]["healthcheck"]["test"]
    # each token's owner is the user of the image that reads it
    users = [args for ins, args in dockerfile() if ins == "RUN" and "useradd" in args]
    assert "--uid 10001" in users[0]
    assert "write_owner=${PILOTLINE_WRITE_OWNER:-10001:10001}" in text


def test_the_image_runs_the_console_script_as_a_non_root_user() -> None:
    instructions = dockerfile()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoints = [json.loads(args) for ins, args in instructions if ins == "ENTRYPOINT"]
    assert entrypoints == [["pilotline"]]
    assert "pilotline" in scripts
    users = [args for ins, args in instructions if ins == "USER"]
    assert users
    assert users[-1] not in {"root", "0"}
    assert any(ins == "HEALTHCHECK" for ins, _ in instructions)
    cmd = json.loads(next(args for ins, args in instructions if ins == "CMD"))
    assert cmd[:2] == ["run", "-c"]
    # two stages, the second small: only the virtual environment is copied over
    assert sum(ins == "FROM" for ins, _ in instructions) == 2
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for ins, args in instructions:
        if ins == "COPY" and not args.startswith("--from"):
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") not in ignored, f"{source} is in .dockerignore"


# The first lines of each licence's text, by its SPDX id.
LICENSE_TEXTS = {"Apache-2.0": r"\s*Apache License\s+Version 2\.0, January 2004\s"}


def test_the_license_file_is_the_licence_the_package_and_the_image_declare() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared in LICENSE_TEXTS, f"pyproject declares {declared!r}: add its text's start"
    assert re.match(LICENSE_TEXTS[declared], (ROOT / "LICENSE").read_text())
    labels = [args for ins, args in dockerfile() if ins == "LABEL"]
    licences = [m for args in labels for m in re.findall(
        r'org\.opencontainers\.image\.licenses="([^"]*)"', args)]
    assert licences == [declared]
    # the build stage copies it: the wheel's dist-info, hence the image, carries the text
    copied = [shlex.split(args)[:-1] for ins, args in dockerfile() if ins == "COPY"]
    assert any("LICENSE" in sources for sources in copied)


def test_the_shipped_broker_keeps_queued_messages() -> None:
    settings = dict(
        line.split(None, 1)
        for line in (DEPLOY / "mosquitto/mosquitto.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert int(settings["max_queued_messages"]) >= 1_000_000
    assert settings["persistence"] == "true"


def listeners(text: str) -> dict[str, dict[str, str]]:
    """The listener sections of a mosquitto.conf (``per_listener_settings``): port -> its
    settings, up to the next listener or a global setting."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    per_listener = {"allow_anonymous", "password_file", "acl_file", "use_username_as_clientid"}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key == "listener":
            current = sections.setdefault(value.split()[0], {})
        elif current is not None and key in per_listener:
            current[key] = value
        else:
            current = None
    return sections


def test_the_compose_broker_is_closed_and_published_on_chosen_addresses() -> None:
    """The behaviour is proved by tests/integration/test_deploy_broker.py; here the wiring:
    no port on every interface, every listener closed, the gateway's password handed over."""
    services = compose()["services"]
    for port in services["mosquitto"]["ports"]:
        default = re.sub(r"\$\{[A-Z_]+:-([^}]+)\}", r"\1", port)
        address, _, _ = default.rpartition(":")[0].rpartition(":")
        assert address == "127.0.0.1", f"{port}: published on every interface by default"
    assert "MQTT_ADDRESS" in services["mosquitto"]["ports"][0]
    text = (DEPLOY / "mosquitto/mosquitto.conf").read_text()
    assert "per_listener_settings true" in text
    sections = listeners(text)
    assert set(sections) == {"1883", "1884"}
    for port, settings in sections.items():
        assert settings["allow_anonymous"] == "false", port
        assert settings["password_file"].startswith("/mosquitto/auth/"), port
        assert settings["acl_file"] == "/mosquitto/auth/acl", port
    assert sections["1883"]["use_username_as_clientid"] == "true"
    assert sections["1883"]["password_file"] != sections["1884"]["password_file"]
    assert "mqtt_password" in services["pilotline"]["secrets"]
    # the demo's anonymous broker is reachable on the stack's network only
    assert "ports" not in services["demo-broker"]
    assert "--mqtt-url=mqtt://demo-broker:1883" in services["demo"]["command"]
    # the broker's accounts never go into a build context nor into git
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {"deploy/secrets", "deploy/mosquitto/auth"} <= set(ignored)
    assert (DEPLOY / "mosquitto/.gitignore").read_text().split() == ["auth/"]


def unit() -> dict[str, list[str]]:
    """``Key`` -> values of deploy/systemd/pilotline.service (keys may repeat)."""
    values: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd/pilotline.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_the_systemd_unit_is_hardened_and_takes_secrets_as_credentials() -> None:
    u = unit()
    assert u["User"] == ["pilotline"]
    assert u["Restart"] == ["on-failure"]
    assert u["ExecStart"][0].endswith("pilotline run -c /etc/pilotline/pilotline.yaml")
    for key, value in [
        ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"), ("PrivateDevices", "yes"), ("RestrictSUIDSGID", "yes"),
        ("CapabilityBoundingSet", ""),
    ]:
        assert u[key] == [value], key
    assert u["StateDirectory"] == ["pilotline"]
    # systemd hears READY=1, WATCHDOG=1, STOPPING=1 (tests/integration/test_systemd_notify.py)
    assert u["Type"] == ["notify"]
    assert u["NotifyAccess"] == ["main"]
    assert u["WatchdogSec"] == ["30s"]
    # a filtered system call fails with EPERM rather than killing the gateway with SIGSYS
    assert u["SystemCallErrorNumber"] == ["EPERM"]
    assert any(v.startswith("influx_token:") for v in u["LoadCredential"])
    sysusers = (DEPLOY / "systemd/pilotline.sysusers.conf").read_text()
    assert re.search(r"^u pilotline ", sysusers, re.MULTILINE)


def test_grafana_provisions_the_data_sources_the_dashboards_use() -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/pilotline.yaml").read_text())
    uids = {s["uid"]: s["type"] for s in sources["datasources"]}
    influx = next(s for s in sources["datasources"] if s["type"] == "influxdb")
    # the read-only token comes from the compose secret, never inline
    header = influx["secureJsonData"]["httpHeaderValue1"]
    assert header == "Token $__file{/run/secrets/influx_read_token}"
    for path in (GRAFANA / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        # every panel reads ${datasource} (tests/integration/test_dashboards.py), whose
        # default is a provisioned data source of the variable's type
        (source,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
        uid = source["current"]["value"]
        assert uids.get(uid) == source["query"], f"{path.name}: {uid} is not provisioned"
    assert {p.name for p in (GRAFANA / "dashboards").glob("*.json")} == {
        "facility-overview.json", "machine-detail.json", "gateway.json"
    }


@pytest.fixture
def exposed(tmp_path: Path) -> set[str]:
    """Sample names of a real Gateway's /metrics, after a sample and a rejected payload."""
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml({"photonics": [machine_config("laser-01")]}, store=tmp_path / "gw.db")
    )
    gateway = Gateway(load_config(path), writer=MemoryWriter())
    now = gateway.clock_ms()
    gateway.ingest.sample(Sample("laser-01", now, {"state": "NotExecuting"}), AckToken(1, 1, 1))
    gateway.ingest.reject(
        "mqtt",
        Quarantined("t/laser-01", "malformed_json", b"{", now, "laser-01"),
        AckToken(2, 1, 2),
    )
    gateway.commit()
    text = generate_latest(registry(gateway.metrics, gateway.gauges())).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_gateway_dashboard_queries_metrics_the_gateway_exposes(exposed: set[str]) -> None:
    dashboard = json.loads((GRAFANA / "dashboards/gateway.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]
              if v["type"] == "query"]
    names = {n for e in exprs for n in re.findall(r"\bpilotline_\w+", e)}
    assert len(names) >= 10
    missing = names - exposed
    assert not missing, f"the gateway dashboard queries metrics /metrics lacks: {missing}"
