"""Encrypted transports against real servers, with a CA and certificates made for the test.

MQTT: a Mosquitto TLS listener that requires a client certificate from the test CA *and* a
username and password; the collector connects with the right certificate, and is refused
with a certificate from another CA, without one, and when it does not trust the broker.
InfluxDB: victoria-metrics serving HTTPS (``-tls``) with a certificate of the test CA; the
writer with ``ca_file`` writes, without it the write fails on verification.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.peers import find_victoria_metrics, free_port
from tests.tls import Authority, Issued

from pilotline.collectors.mqtt.collector import MqttCollector
from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.demo.broker import MosquittoBroker, find_mosquitto
from pilotline.gateway.sinks.influx.writer import InfluxClientWriter, WriteError

pytestmark = [
    pytest.mark.integration,
    # A TLS handshake that fails inside paho's connect() leaves paho's half-made SSL socket
    # to the garbage collector (it never reaches on_socket_open, so the collector cannot
    # close it): a ResourceWarning per refused attempt, not a leak.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

PASSWORD = "tls-test-password-5d1f"


@pytest.fixture(autouse=True)
def _collect_half_made_sockets() -> Iterator[None]:
    """Collect paho's abandoned SSL sockets here, where their warning is expected, rather
    than let a later test's garbage collection report them."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued | Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority(folder, "ca")
    rogue = Authority(folder / "rogue", "rogue-ca")
    return {
        "ca": ca.path,
        "rogue_ca": rogue.path,
        "server": ca.issue("server", server=True),
        "client": ca.issue("gateway", server=False),
        "rogue_client": rogue.issue("intruder", server=False),
    }


@pytest.fixture(scope="module")
def tls_broker(
    pki: dict[str, Issued | Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MosquittoBroker]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    folder = tmp_path_factory.mktemp("mosq")
    passwords = folder / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "gateway", PASSWORD],
        check=True, capture_output=True,
    )
    server = pki["server"]
    assert isinstance(server, Issued)
    broker = MosquittoBroker(persistence=False, datadir=folder)
    # One listener: what follows its line applies to it. Client certificate AND password.
    broker.conf.write_text(
        broker.conf.read_text().replace("allow_anonymous true\n", "allow_anonymous false\n")
        + f"password_file {passwords}\n"
        f"cafile {pki['ca']}\ncertfile {server.cert}\nkeyfile {server.key}\n"
        "require_certificate true\ntls_version tlsv1.2\n"
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


async def connect(config: MqttBrokerConfig, timeout_s: float = 6.0) -> tuple[bool, str | None]:
    """Run the collector until it is connected and subscribed, or the time is up."""
    collector = MqttCollector(
        config, {"pilot/tls/m-01": "m-01"}, lambda *_: None, lambda *_: None,
        client_id=f"tls-test-{time.monotonic_ns()}",
    )
    task = asyncio.create_task(collector.run())
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            health = collector.health()
            if health.connected and health.subscribed:
                return True, None
            await asyncio.sleep(0.05)
        return False, collector.health().last_error
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def broker_config(
    broker: MosquittoBroker, tmp_path: Path, *, ca: Path, client: Issued | None,
    password: str = PASSWORD,
) -> MqttBrokerConfig:
    secret = tmp_path / "mqtt-password"
    secret.write_text(password + "\n")
    return MqttBrokerConfig(
        url=f"mqtts://127.0.0.1:{broker.port}",
        username="gateway",
        password_file=secret,
        ca_file=ca,
        cert_file=client.cert if client else None,
        key_file=client.key if client else None,
        reconnect_max_s=0.5,
    )


async def test_mqtt_over_tls_with_client_certificate_and_password(
    tls_broker: MosquittoBroker, pki: dict[str, Issued | Path], tmp_path: Path
) -> None:
    ca, client = pki["ca"], pki["client"]
    assert isinstance(ca, Path)
    assert isinstance(client, Issued)
    connected, error = await connect(broker_config(tls_broker, tmp_path, ca=ca, client=client))
    assert connected, error


async def test_a_certificate_from_another_ca_is_refused(
    tls_broker: MosquittoBroker, pki: dict[str, Issued | Path], tmp_path: Path
) -> None:
    ca, rogue = pki["ca"], pki["rogue_client"]
    assert isinstance(ca, Path)
    assert isinstance(rogue, Issued)
    connected, error = await connect(broker_config(tls_broker, tmp_path, ca=ca, client=rogue))
    assert not connected
    assert error is not None


async def test_no_client_certificate_is_refused(
    tls_broker: MosquittoBroker, pki: dict[str, Issued | Path], tmp_path: Path
) -> None:
    ca = pki["ca"]
    assert isinstance(ca, Path)
    connected, _ = await connect(broker_config(tls_broker, tmp_path, ca=ca, client=None))
    assert not connected


async def test_a_broker_the_gateway_does_not_trust_is_refused(
    tls_broker: MosquittoBroker, pki: dict[str, Issued | Path], tmp_path: Path
) -> None:
    rogue_ca, client = pki["rogue_ca"], pki["client"]
    assert isinstance(rogue_ca, Path)
    assert isinstance(client, Issued)
    config = broker_config(tls_broker, tmp_path, ca=rogue_ca, client=client)
    connected, error = await connect(config)
    assert not connected
    assert error is not None
    assert "certificate verify failed" in error


async def test_a_wrong_password_is_refused_and_not_reported(
    tls_broker: MosquittoBroker, pki: dict[str, Issued | Path], tmp_path: Path
) -> None:
    ca, client = pki["ca"], pki["client"]
    assert isinstance(ca, Path)
    assert isinstance(client, Issued)
    wrong = "not-the-password-93c2"
    config = broker_config(tls_broker, tmp_path, ca=ca, client=client, password=wrong)
    connected, error = await connect(config)
    assert not connected
    assert error is not None
    assert wrong not in error


# --------------------------------------------------------------------------- InfluxDB over HTTPS


@pytest.fixture
def https_vm(pki: dict[str, Issued | Path], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    exe = find_victoria_metrics()
    if exe is None:
        pytest.skip("victoria-metrics is not installed")
    server, ca = pki["server"], pki["ca"]
    assert isinstance(server, Issued)
    assert isinstance(ca, Path)
    port = free_port()
    proc = subprocess.Popen(
        [exe, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={tmp_path / 'vm'}",
         "-retentionPeriod=100y", "-search.disableCache", "-search.latencyOffset=0s",
         "-tls", f"-tlsCertFile={server.cert}", f"-tlsKeyFile={server.key}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(ca))
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", context=context, timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("victoria-metrics did not start with TLS")
                time.sleep(0.1)
        yield url, ca
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_influx_writes_over_https_with_the_ca_file(https_vm: tuple[str, Path]) -> None:
    url, ca = https_vm
    writer = InfluxClientWriter(url, "pilot", "pilotline", "secret-token", ca_file=str(ca))
    try:
        writer.write(["telemetry,site=s,zone=z,machine=m power_w=1.5 1795737600000000000"])
    finally:
        writer.close()
    context = ssl.create_default_context(cafile=str(ca))
    query = urllib.parse.urlencode({"match[]": "telemetry_power_w"})
    deadline = time.monotonic() + 10
    while True:
        urllib.request.urlopen(f"{url}/internal/force_flush", context=context, timeout=5).close()
        with urllib.request.urlopen(f"{url}/api/v1/export?{query}", context=context) as resp:
            rows = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rows
    assert rows[0]["values"] == [1.5]


def test_influx_over_https_without_the_ca_is_refused(https_vm: tuple[str, Path]) -> None:
    url, _ = https_vm
    writer = InfluxClientWriter(url, "pilot", "pilotline", "secret-token", timeout_s=5)
    try:
        with pytest.raises(WriteError) as refused:
            writer.write(["telemetry,site=s,zone=z,machine=m power_w=1.5 1795737600000000000"])
    finally:
        writer.close()
    assert refused.value.retryable  # an operator's mistake to fix: the outbox keeps the data
    assert "CERTIFICATE_VERIFY_FAILED" in refused.value.message or "certificate" in (
        refused.value.message.lower()
    )
    assert "secret-token" not in refused.value.message
