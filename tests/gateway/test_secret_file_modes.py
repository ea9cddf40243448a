"""``pilotline check`` warns about a secret file that others than its owner may read: a
password, a token, a private key or a webhook URL file of mode 0644 is named with its mode and
the fix (``chmod 600 FILE``). A warning, not a refusal: the gateway works, the exit code is 0.
Real files with real modes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.sites import UNIT_INFLUX, machine_config, site_yaml

from pilotline.gateway.cli import main
from pilotline.gateway.config import ConfigIssue, load_config


def secret(tmp_path: Path, name: str, mode: int) -> Path:
    path = tmp_path / name
    path.write_text("s3cret\n")
    path.chmod(mode)
    return path


def every_secret_site(tmp_path: Path, mode: int) -> Path:
    """A site naming one file of each secret kind, all of ``mode``, and a CA file (not
    secret) readable by all."""
    for name in ("mqtt.pw", "influx.token", "client.key", "hook.url", "opcua.key", "opcua.pw"):
        secret(tmp_path, name, mode)
    for name in ("ca.pem", "client.pem"):
        secret(tmp_path, name, 0o644)
    opcua = {
        "endpoint": "opc.tcp://127.0.0.1:1", "nodes": {"state": "ns=2;s=S"},
        "private_key_file": "opcua.key", "certificate_file": "client.pem",
        "username": "u", "password_file": "opcua.pw",
    }
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml(
        {"z1": [machine_config("m1"), machine_config("m2", opcua=opcua)]},
        mqtt={"url": "mqtts://127.0.0.1:1", "username": "gw", "password_file": "mqtt.pw",
              "ca_file": "ca.pem", "cert_file": "client.pem", "key_file": "client.key"},
        influx={**UNIT_INFLUX, "token_file": "influx.token"},
        store=tmp_path / "gw.db",
        alerts={"webhooks": [{"name": "chat", "url_file": "hook.url"}]},
    ))
    return path


def test_check_warns_about_each_secret_file_readable_by_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = every_secret_site(tmp_path, 0o644)

    assert main(["check", "-c", str(site)]) == 0

    err = capsys.readouterr().err
    warned = {line.split()[2] for line in err.splitlines() if line.startswith("warning: ")}
    assert warned == {
        "mqtt.password_file:", "mqtt.key_file:", "influx.token_file:",
        "zones[0].machines[1].opcua.private_key_file:",
        "zones[0].machines[1].opcua.password_file:", "alerts.webhooks[0].url_file:",
    }
    token = tmp_path / "influx.token"
    assert re.search(
        rf"^warning: {re.escape(str(site))}:\d+ influx.token_file: {re.escape(str(token))} is "
        rf"readable by group and others \(mode 0644\): chmod 600 {re.escape(str(token))}$",
        err, re.MULTILINE,
    )
    assert "ca.pem" not in err  # certificates are public
    assert "client.pem" not in err
    assert "s3cret" not in err

    # the fix given works: owner-only files (0600, 0400) pass silently
    for name in ("mqtt.pw", "client.key", "hook.url", "opcua.key", "opcua.pw"):
        (tmp_path / name).chmod(0o600)
    token.chmod(0o400)
    assert main(["check", "-c", str(site)]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("mode", "readers"), [(0o640, "group"), (0o604, "others"), (0o444, "group and others")]
)
def test_the_warning_says_who_may_read(tmp_path: Path, mode: int, readers: str) -> None:
    site = every_secret_site(tmp_path, 0o600)
    (tmp_path / "mqtt.pw").chmod(mode)
    warnings: list[ConfigIssue] = []

    load_config(site, warnings=warnings)

    (warning,) = warnings
    assert warning.path == "mqtt.password_file"
    assert warning.line is not None
    assert site.read_text().splitlines()[warning.line - 1].strip() == "password_file: mqtt.pw"
    assert warning.message == (
        f"{tmp_path / 'mqtt.pw'} is readable by {readers} (mode {mode:04o}): "
        f"chmod 600 {tmp_path / 'mqtt.pw'}"
    )


def test_the_fix_is_quoted_for_the_shell(tmp_path: Path) -> None:
    folder = tmp_path / "my secrets"
    folder.mkdir()
    secret(folder, "mqtt pw", 0o644)
    site = tmp_path / "site.yaml"
    site.write_text(site_yaml(
        {"z1": [machine_config("m1")]},
        mqtt={"url": "mqtt://127.0.0.1:1", "username": "gw", "password_file": "my secrets/mqtt pw"},
        influx=None, store=tmp_path / "gw.db",
    ))
    warnings: list[ConfigIssue] = []
    load_config(site, warnings=warnings)
    (warning,) = warnings
    assert warning.message.endswith(f"chmod 600 '{folder / 'mqtt pw'}'")
