"""``api.tls_*``: the keys go together, name files that exist, and files that cannot serve
TLS stop the start with the keys that name them. Through a real server:
tests/integration/test_api_tls.py."""

from __future__ import annotations

import ssl
import textwrap
from pathlib import Path

import pytest
from tests.sites import refused
from tests.tls import Authority

from pilotline.gateway.api.config import ApiConfig
from pilotline.gateway.api.tls import TlsFilesError, server_context
from pilotline.gateway.config import ConfigError, load_config

SITE = """\
site: s
zones:
  - id: z
    machines:
      - id: m
        owner: o
        opcua: {endpoint: "opc.tcp://127.0.0.1:4840", nodes: {state: "ns=2;s=S"}}
        state: {signal: state}
"""


@pytest.mark.parametrize(
    ("api", "says"),
    [
        ("api:\n  tls_cert_file: api.pem\n", "tls_cert_file and tls_key_file go together"),
        ("api:\n  tls_key_file: api.key\n", "tls_cert_file and tls_key_file go together"),
        ("api:\n  tls_client_ca_file: ca.pem\n", "client certificates need the API to speak"),
    ],
)
def test_one_tls_file_without_the_other_is_refused_at_api(
    tmp_path: Path, api: str, says: str
) -> None:
    (issue,) = refused(tmp_path, SITE + api)
    assert (issue.path, issue.line) == ("api", 9)
    assert says in issue.message


def test_a_missing_certificate_is_refused_at_its_key(tmp_path: Path) -> None:
    pki = Authority(tmp_path / "pki").issue("api", server=True)
    path = tmp_path / "pilotline.yaml"
    path.write_text(SITE + textwrap.dedent(f"""\
        api:
          tls_cert_file: missing.pem
          tls_key_file: {pki.key}
        """))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (issue,) = caught.value.issues
    assert issue.path == "api.tls_cert_file"
    assert "file not found" in issue.message
    # a relative path is relative to the configuration file, as every other file is
    (tmp_path / "missing.pem").write_bytes(pki.cert.read_bytes())
    assert load_config(path).api.tls_cert_file == tmp_path / "missing.pem"


def test_no_certificate_no_tls() -> None:
    assert server_context(ApiConfig()) is None
    assert not ApiConfig().tls


def test_the_context_serves_tls_1_2_at_least_and_asks_clients_only_with_a_ca(
    tmp_path: Path,
) -> None:
    ca = Authority(tmp_path)
    issued = ca.issue("api", server=True)
    plain = server_context(ApiConfig(tls_cert_file=issued.cert, tls_key_file=issued.key))
    assert plain is not None
    assert plain.minimum_version == ssl.TLSVersion.TLSv1_2
    assert plain.verify_mode == ssl.CERT_NONE
    mutual = server_context(
        ApiConfig(tls_cert_file=issued.cert, tls_key_file=issued.key, tls_client_ca_file=ca.path)
    )
    assert mutual is not None
    assert mutual.verify_mode == ssl.CERT_REQUIRED


def test_unusable_files_are_refused_naming_their_keys(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    issued = ca.issue("api", server=True)
    other = ca.issue("other", server=True)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        # a key that is not the certificate's
        ({"tls_cert_file": issued.cert, "tls_key_file": other.key}, "api.tls_cert_file"),
        ({"tls_cert_file": garbage, "tls_key_file": issued.key}, "api.tls_cert_file"),
        # the key where the certificate goes
        ({"tls_cert_file": issued.key, "tls_key_file": issued.key}, "api.tls_key_file"),
        (
            {"tls_cert_file": issued.cert, "tls_key_file": issued.key,
             "tls_client_ca_file": garbage},
            "api.tls_client_ca_file",
        ),
        (
            {"tls_cert_file": issued.cert, "tls_key_file": issued.key,
             "tls_client_ca_file": tmp_path / "gone.pem"},
            "file not found",
        ),
    ]
    for files, says in cases:
        with pytest.raises(TlsFilesError) as caught:
            server_context(ApiConfig(**files))
        assert says in str(caught.value), files
        assert "_ssl.c" not in str(caught.value)  # ssl's own wording is not the message
