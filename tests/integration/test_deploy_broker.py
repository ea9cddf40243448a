"""The stack's Mosquitto is closed as it ships: a real Mosquitto runs
deploy/mosquitto/mosquitto.conf with the accounts and ACL that deploy/mosquitto/setup.sh and
add-machine.sh make (tests/shipped_broker.py; only ports and paths adapted).

- a client without an account is refused, on either listener;
- a machine's account publishing on another machine's topic is not delivered to the gateway;
- a client asking for the gateway's client id with another account cannot take the gateway's
  session: the gateway stays connected and keeps the plant's telemetry to itself;
- the machine -> gateway path works with the accounts the scripts made, and only with them;
- compose's health check passes on it (it checks that the broker answers and is closed).

The configuration shipped before (anonymous, one listener) fails each of these.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from tests.peers import serving
from tests.shipped_broker import SHIPPED, Accounts, ShippedBroker, make_accounts

from pilotline.demo.broker import BrokerUnavailableError

pytestmark = pytest.mark.integration

LASER = "pilot/photonics/laser-01/telemetry"
CAMERA = "pilot/photonics/cam-02/telemetry"
GATEWAY_ID = "pilotline-marseille"  # deploy/pilotline.yaml's mqtt.client_id


class Client:
    """A paho MQTT 5 client, connected once (no reconnection): what the broker answered,
    whether it was disconnected since, and the messages it received."""

    def __init__(
        self,
        port: int,
        client_id: str,
        account: tuple[str, str] | None = None,
        *,
        persistent: bool = False,
    ) -> None:
        self.answer: ReasonCode | None = None
        self.disconnects: list[str] = []
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._connack = threading.Event()
        self._granted: list[ReasonCode] = []
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        if account is not None:
            self.client.username_pw_set(*account)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, msg: self.messages.put(
            (msg.topic, bytes(msg.payload))
        )
        self.client.on_subscribe = self._on_subscribe
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600 if persistent else 0
        self.client.connect("127.0.0.1", port, 30, clean_start=not persistent, properties=props)
        self.client.loop_start()
        assert self._connack.wait(5), "no CONNACK"

    def _on_connect(self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.answer = reason
        self._connack.set()

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode,
                       _p: Any) -> None:
        if self._connack.is_set() and self.accepted:
            self.disconnects.append(str(reason))

    def _on_subscribe(self, _c: paho.Client, _u: Any, _mid: int, codes: list[ReasonCode],
                      _p: Any) -> None:
        self._granted = codes
        self._subscribed.set()

    @property
    def accepted(self) -> bool:
        return self.answer is not None and not self.answer.is_failure

    def subscribe(self, *topics: str) -> list[int]:
        """Subscribe at QoS 1; the SUBACK's reason codes (1: granted at QoS 1)."""
        self.client.subscribe([(topic, 1) for topic in topics])
        assert self._subscribed.wait(5), "no SUBACK"
        return [code.value for code in self._granted]

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def received(self, timeout_s: float = 5.0) -> tuple[str, bytes] | None:
        try:
            return self.messages.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def accounts(tmp_path: Path) -> Accounts:
    try:
        return make_accounts(tmp_path, {"laser-01": [LASER], "cam-02": [CAMERA]})
    except BrokerUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def shipped(accounts: Accounts, tmp_path: Path) -> Iterator[ShippedBroker]:
    with serving(lambda: ShippedBroker(accounts, tmp_path / "data")) as broker:
        yield broker


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Clients a test opens, closed afterwards."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


@pytest.fixture
def gateway(shipped: ShippedBroker, accounts: Accounts, clients: list[Client]) -> Client:
    """The gateway's session as pilotline holds it: its account on its listener, its client
    id, persistent, subscribed to both machines' topics (granted at QoS 1)."""
    gw = Client(shipped.gateway_port, GATEWAY_ID, accounts.gateway, persistent=True)
    clients.append(gw)
    assert gw.accepted
    assert gw.subscribe(LASER, CAMERA) == [1, 1]
    return gw


def test_a_client_without_an_account_is_refused(
    shipped: ShippedBroker, clients: list[Client]
) -> None:
    for port in (shipped.machines_port, shipped.gateway_port):
        anonymous = Client(port, "")
        clients.append(anonymous)
        assert not anonymous.accepted, f"port {port} let an anonymous client in"
        assert anonymous.answer is not None
        assert anonymous.answer.getName() == "Not authorized"


def test_a_machine_cannot_publish_on_another_machines_topic(
    shipped: ShippedBroker, accounts: Accounts, gateway: Client, clients: list[Client]
) -> None:
    laser = Client(shipped.machines_port, "laser-01", ("laser-01", accounts.machines["laser-01"]))
    clients.append(laser)
    assert laser.accepted

    laser.publish(CAMERA, b'{"power_w": 5}')  # "idle": the camera's time would be sold
    laser.publish(LASER, b'{"power_w": 812.5}')  # then its own, in the same order

    # QoS 1 from one publisher arrives in order: had the forged one been let through, it
    # would come first.
    assert gateway.received() == (LASER, b'{"power_w": 812.5}')
    assert gateway.received(0.5) is None


def test_nobody_takes_over_the_gateways_session_with_its_client_id(
    shipped: ShippedBroker, accounts: Accounts, gateway: Client, clients: list[Client]
) -> None:
    camera = ("cam-02", accounts.machines["cam-02"])
    # The machines' listener takes the connection but gives it its account's id: five
    # attempts, as the intruder of the issue reconnected every 0.7 s.
    for _ in range(5):
        intruder = Client(shipped.machines_port, GATEWAY_ID, camera, persistent=True)
        clients.append(intruder)
        time.sleep(0.1)
    # On the gateway's listener a machine's account is not even let in.
    if shipped.gateway_port != shipped.machines_port:
        refused = Client(shipped.gateway_port, GATEWAY_ID, camera, persistent=True)
        clients.append(refused)
        assert not refused.accepted
    # The gateway's alert channel, same account, its own id, connects beside it.
    alerts = Client(shipped.gateway_port, f"{GATEWAY_ID}-alerts-panel", accounts.gateway)
    clients.append(alerts)
    assert alerts.accepted

    laser = Client(shipped.machines_port, "laser-01", ("laser-01", accounts.machines["laser-01"]))
    clients.append(laser)
    laser.publish(LASER, b'{"power_w": 812.5}')

    assert gateway.disconnects == []
    assert gateway.received() == (LASER, b'{"power_w": 812.5}')
    assert all(c.received(0.1) is None for c in clients if c is not gateway)  # no telemetry


def test_the_machine_to_gateway_path_works_with_the_accounts_the_scripts_made(
    shipped: ShippedBroker, accounts: Accounts, gateway: Client, clients: list[Client]
) -> None:
    password = accounts.machines["laser-01"]
    assert len(password) == 32  # printed once by add-machine.sh

    laser = Client(shipped.machines_port, "laser-01", ("laser-01", password))
    clients.append(laser)
    assert laser.accepted
    laser.publish(LASER, b'{"ts": 1, "power_w": 812.5}')
    assert gateway.received() == (LASER, b'{"ts": 1, "power_w": 812.5}')

    # and only with them: a wrong password, or the gateway's account on the machines' side
    for account in (("laser-01", password[::-1]), ("cam-02", password), accounts.gateway):
        wrong = Client(shipped.machines_port, "x", account)
        clients.append(wrong)
        assert not wrong.accepted, f"{account[0]} got in with a wrong password"


def test_the_compose_health_check_passes_on_the_closed_broker(shipped: ShippedBroker) -> None:
    """The compose file's health check, run as a shell runs it (compose's ``$$`` is ``$``),
    against the shipped broker's machines' listener."""
    if shutil.which("mosquitto_sub") is None:
        pytest.skip("mosquitto_sub not found (Debian: apt-get install mosquitto-clients)")
    compose = yaml.safe_load((SHIPPED.parent / "compose.yaml").read_text())
    kind, command = compose["services"]["mosquitto"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    assert "-p 1883 " in command
    command = command.replace("$$", "$").replace(
        "-p 1883 ", f"-h 127.0.0.1 -p {shipped.machines_port} "
    )
    assert subprocess.run(["sh", "-c", command], check=False, timeout=10).returncode == 0
    shipped.stop()
    assert subprocess.run(["sh", "-c", command], check=False, timeout=10).returncode != 0


@pytest.mark.parametrize(
    ("machine", "topic", "why"),
    [
        ("cam-02", LASER, "already laser-01's topic"),  # would let it forge laser-01
        ("cam-02", "pilot/+/telemetry", "one exact topic"),  # would reach every machine
        ("cam-02", "pilot/#", "one exact topic"),
        ("gateway", "pilot/x", "the gateway's account"),
        ("Cam 02", "pilot/x", "an account's name"),
    ],
)
def test_add_machine_refuses_what_would_open_the_acl(
    accounts: Accounts, machine: str, topic: str, why: str
) -> None:
    acl = (accounts.auth / "acl").read_text()
    passwd = (accounts.auth / "machines.passwd").read_text()
    env = {"AUTH_DIR": str(accounts.auth), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    done = subprocess.run(
        [SHIPPED / "add-machine.sh", machine, topic],
        env=env, capture_output=True, text=True, check=False,
    )
    assert done.returncode != 0
    assert why in done.stderr
    assert done.stdout == ""  # no password handed out
    assert (accounts.auth / "acl").read_text() == acl
    assert (accounts.auth / "machines.passwd").read_text() == passwd
