"""Published back on the stack's broker as it ships (deploy/mosquitto/, tests/shipped_broker.py):
``setup.sh`` with ``PUBLISH_BACK_PREFIX`` lets the gateway's account write the namespace
(without it, the ACL refuses), and no machine's account may forge a machine's published-back
state there."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.peers import serving
from tests.shipped_broker import SHIPPED, Accounts, ShippedBroker, make_accounts
from tests.waiting import wait_for

from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.demo.broker import BrokerUnavailableError
from pilotline.gateway.service.publish_back_mqtt import retained_publisher
from pilotline.gateway.service.retained import RetainedPublisher

pytestmark = pytest.mark.integration

LASER = "pilot/photonics/laser-01/telemetry"
STATE = "uns/unit/photonics/laser-01/state"
PAYLOAD = b'{"state":"idle","since":null,"ts":"2026-11-27T00:00:00.000+00:00"}'


def accounts_with(tmp_path: Path, prefix: str | None) -> Accounts:
    env = {"PUBLISH_BACK_PREFIX": prefix} if prefix is not None else {}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return make_accounts(tmp_path, {"laser-01": [LASER]})
    except BrokerUnavailableError as exc:
        pytest.skip(str(exc))
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def shipped_uns(tmp_path: Path) -> Iterator[tuple[ShippedBroker, Accounts]]:
    accounts = accounts_with(tmp_path, "uns")
    with serving(lambda: ShippedBroker(accounts, tmp_path / "data")) as broker:
        yield broker, accounts


def publisher(port: int, user: str, password_file: Path, client_id: str) -> RetainedPublisher:
    broker = MqttBrokerConfig(
        url=f"mqtt://127.0.0.1:{port}", username=user, password_file=password_file,
        client_id=client_id, reconnect_max_s=1,
    )
    return retained_publisher(broker, "unit")


async def outcome(pub: RetainedPublisher) -> tuple[int, int]:
    """Publish the state once; (acked, refused) once the broker answered."""
    pub.start()
    try:
        await wait_for(lambda: pub.connected, timeout_s=10)
        pub.publish(STATE, PAYLOAD)
        await wait_for(lambda: pub.acked + pub.refused >= 1, timeout_s=10)
        return pub.acked, pub.refused
    finally:
        pub.stop()


async def test_the_gateway_writes_the_namespace_and_a_machine_cannot_forge_it(
    shipped_uns: tuple[ShippedBroker, Accounts], tmp_path: Path
) -> None:
    # without the prefix, the shipped ACL keeps refusing the gateway there
    closed = accounts_with(tmp_path / "closed", None)
    assert "uns" not in (closed.auth / "acl").read_text()
    with serving(lambda: ShippedBroker(closed, tmp_path / "closed" / "data")) as other:
        gateway = publisher(other.gateway_port, "gateway", closed.gateway_password_file, "gw")
        assert await outcome(gateway) == (0, 1)  # the PUBACK says not authorized

    broker, accounts = shipped_uns
    gateway = publisher(broker.gateway_port, "gateway", accounts.gateway_password_file, "gw")
    assert await outcome(gateway) == (1, 0)
    # a reader with an account (as README says: its own "topic read uns/#") gets it retained
    (accounts.auth / "acl").write_text(
        (accounts.auth / "acl").read_text() + "\nuser laser-01\ntopic read uns/#\n"
    )
    secret = tmp_path / "laser.pw"
    secret.write_text(accounts.machines["laser-01"])
    secret.chmod(0o600)
    broker.stop()
    broker.start()  # Mosquitto reads the ACL at start
    forger = publisher(broker.machines_port, "laser-01", secret, "laser-01")
    assert await outcome(forger) == (0, 1)  # not authorized: the broker drops it

    gateway = publisher(broker.gateway_port, "gateway", accounts.gateway_password_file, "gw")
    assert await outcome(gateway) == (1, 0)
    read = await asyncio.create_subprocess_exec(
        "mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.machines_port),
        "-u", "laser-01", "-P", accounts.machines["laser-01"], "-i", "laser-01",
        "-t", "uns/#", "-F", "%r %t %p", "-C", "1", "-W", "5",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await read.communicate()
    assert read.returncode == 0, err.decode()
    assert out.decode().strip() == f"1 {STATE} {PAYLOAD.decode()}"  # the gateway's, retained


def test_setup_refuses_a_prefix_that_would_open_the_acl(tmp_path: Path) -> None:
    for prefix in ("uns/#", "+", "/uns", "$SYS"):
        env = {**os.environ, "SECRETS_DIR": str(tmp_path / "s"), "AUTH_DIR": str(tmp_path / "a"),
               "PUBLISH_BACK_PREFIX": prefix}
        done = subprocess.run([SHIPPED / "setup.sh"], env=env, capture_output=True, text=True,
                              check=False)
        assert done.returncode == 2, prefix
        assert "a plain topic prefix" in done.stderr
        assert not (tmp_path / "a" / "acl").exists()
