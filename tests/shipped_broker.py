"""The stack's Mosquitto as it ships: deploy/mosquitto/mosquitto.conf run by a real Mosquitto
with the accounts and ACL that deploy/mosquitto/setup.sh and add-machine.sh make.

Only what cannot be the container's is adapted: the listeners move to free loopback ports,
``/mosquitto/auth/`` and ``/mosquitto/data/`` to the test's folder, the log to a file, and
the broker stays the user who started it (the container's own drops root for `mosquitto`).
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pilotline.demo.broker import (
    BrokerUnavailableError,
    ServerProcess,
    find_mosquitto,
    free_port,
    wait_for_port,
)

SHIPPED = Path(__file__).parents[1] / "deploy" / "mosquitto"
MACHINES_LISTENER = 1883
GATEWAY_LISTENER = 1884


@dataclass(frozen=True)
class Accounts:
    """What the shipped scripts made in a folder: ``auth/`` for the broker, the gateway's
    password file, and each machine's password as add-machine.sh printed it."""

    auth: Path
    gateway_password_file: Path
    machines: dict[str, str]

    @property
    def gateway(self) -> tuple[str, str]:
        return "gateway", self.gateway_password_file.read_text().strip()


def make_accounts(folder: Path, machines: Mapping[str, Sequence[str]]) -> Accounts:
    """Run setup.sh, then add-machine.sh for each machine (account -> its topics)."""
    if shutil.which("mosquitto_passwd") is None:
        raise BrokerUnavailableError(
            "mosquitto_passwd not found (Debian: apt-get install mosquitto)"
        )
    env = {**os.environ, "SECRETS_DIR": str(folder / "secrets"), "AUTH_DIR": str(folder / "auth")}
    subprocess.run([SHIPPED / "setup.sh"], env=env, check=True, capture_output=True)
    passwords = {}
    for machine, topics in machines.items():
        made = subprocess.run(
            [SHIPPED / "add-machine.sh", machine, *topics],
            env=env, check=True, capture_output=True, text=True,
        )
        passwords[machine] = made.stdout.strip()
    return Accounts(folder / "auth", folder / "secrets" / "mqtt_password", passwords)


class ShippedBroker(ServerProcess):
    """deploy/mosquitto/mosquitto.conf with ``accounts``; ``machines_port`` is its machines'
    listener, ``gateway_port`` the gateway's (the machines' one where the file has none, as
    the anonymous configuration shipped before had not)."""

    def __init__(self, accounts: Accounts, datadir: Path) -> None:
        exe = find_mosquitto()
        if exe is None:
            raise BrokerUnavailableError("mosquitto not found (Debian: apt-get install mosquitto)")
        self.exe = exe
        self.datadir = datadir
        datadir.mkdir(parents=True, exist_ok=True)
        text = (SHIPPED / "mosquitto.conf").read_text()
        self.machines_port = free_port()
        has_gateway_listener = re.search(rf"^listener {GATEWAY_LISTENER}\b", text, re.M)
        self.gateway_port = free_port() if has_gateway_listener else self.machines_port
        for shipped, port in ((MACHINES_LISTENER, self.machines_port),
                              (GATEWAY_LISTENER, self.gateway_port)):
            text = re.sub(rf"^listener {shipped}\b.*$", f"listener {port} 127.0.0.1", text,
                          flags=re.M)
        text = (
            text.replace("/mosquitto/auth/", f"{accounts.auth}/")
            .replace("/mosquitto/data/", f"{datadir}/")
        )
        text = re.sub(r"^log_dest .*$", f"log_dest file {datadir}/mosquitto.log", text, flags=re.M)
        self.conf = datadir / "mosquitto.conf"
        self.conf.write_text(f"user {getpass.getuser()}\n{text}")

    def start(self) -> Self:
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port(self.machines_port)
            wait_for_port(self.gateway_port)
        except BrokerUnavailableError:
            self.stop()
            log = self.datadir / "mosquitto.log"
            raise BrokerUnavailableError(
                f"mosquitto did not start: {log.read_text()[-500:] if log.exists() else ''}"
            ) from None
        return self
