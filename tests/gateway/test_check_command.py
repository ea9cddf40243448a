"""``pilotline check --no-files``: the structure of a configuration checked on a machine that
does not have its secret files yet; the files are listed as not checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.sites import machine_config, site_yaml

from pilotline.gateway.cli import main

SECURE_OPCUA = {
    "endpoint": "opc.tcp://10.1.0.22:4840",
    "nodes": {"state": "ns=3;i=6001"},
    "security_policy": "Basic256Sha256",
    "security_mode": "SignAndEncrypt",
    "certificate_file": "/etc/pilotline/pki/gateway.der",
    "private_key_file": "secrets/opcua-key.pem",
}


def production_site(tmp_path: Path, **keys: object) -> Path:
    """A site whose broker password, InfluxDB token and OPC UA key are files this machine
    does not have."""
    text = site_yaml(
        {"z": [machine_config("m1"), machine_config("o1", opcua=SECURE_OPCUA)]},
        mqtt={"url": "mqtt://127.0.0.1:1", "username": "gw", "password_file": "/run/secrets/mqtt"},
        influx={"url": "http://127.0.0.1:1", "org": "o", "bucket": "b",
                "token_file": "secrets/influx"},
        **keys,
    )
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_files_checks_the_structure_and_lists_the_files_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = production_site(tmp_path)
    assert main(["check", "-c", str(site)]) == 1
    err = capsys.readouterr().err
    assert "4 problem(s)" in err
    assert "mqtt.password_file: file not found: /run/secrets/mqtt" in err

    assert main(["check", "-c", str(site), "--no-files"]) == 0
    out = capsys.readouterr().out
    assert "site unit: 1 zone, 2 machines" in out
    not_checked = out[out.index("not checked (--no-files)"):].splitlines()
    assert not_checked == [
        "not checked (--no-files): 4 file(s) the gateway will read",
        "    mqtt.password_file: /run/secrets/mqtt",
        f"    influx.token_file: {tmp_path / 'secrets' / 'influx'}",
        "    zones[0].machines[1].opcua.certificate_file: /etc/pilotline/pki/gateway.der",
        "    zones[0].machines[1].opcua.private_key_file: "
        f"{tmp_path / 'secrets' / 'opcua-key.pem'}",
    ]


def test_no_files_still_refuses_a_wrong_structure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = production_site(tmp_path, log={"level": "loud"})
    assert main(["check", "-c", str(path), "--no-files"]) == 1
    err = capsys.readouterr().err
    assert "1 problem(s)" in err
    assert "log.level: Input should be" in err
    assert "file not found" not in err
