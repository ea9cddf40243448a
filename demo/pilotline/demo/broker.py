"""Start a private Mosquitto on a free loopback port (demo, tests, benchmarks).

The configuration raises ``max_queued_messages``: Mosquitto's default of 1000 silently drops
QoS 1 messages queued for a persistent-session subscriber that is offline or behind, which
would turn a gateway restart into data loss.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

MOSQUITTO_CONF = """\
user {user}
listener {port} 127.0.0.1
allow_anonymous true
persistence {persistence}
persistence_location {datadir}/
autosave_interval 1
max_queued_messages {max_queued}
max_inflight_messages 0
max_packet_size 1048576
log_dest file {datadir}/mosquitto.log
log_type error
log_type warning
log_type notice
"""


class BrokerUnavailableError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_mosquitto() -> str | None:
    candidates = (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    return None


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise BrokerUnavailableError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class ServerProcess:
    """A server in a child process, for the demo, tests and benchmarks: ``stop()`` (SIGTERM,
    or SIGKILL with ``kill=True``) and ``start()`` again to restart it on the same port and
    data, ``close()`` to stop it and remove a temporary data directory it made."""

    proc: subprocess.Popen[bytes] | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    stop_timeout_s: float = 10.0

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MosquittoBroker(ServerProcess):
    """A Mosquitto process; ``stop()``/``start()`` again to simulate a broker restart.

    With ``persistence=True`` queued QoS 1 messages and sessions survive a restart, as on a
    production broker.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        persistence: bool = True,
        max_queued: int = 1_000_000,
        datadir: Path | None = None,
    ) -> None:
        exe = find_mosquitto()
        if exe is None:
            raise BrokerUnavailableError(
                "mosquitto not found: install it (Debian: apt-get install -y mosquitto) "
                "or point the configuration's mqtt.url at a reachable broker"
            )
        self.exe = exe
        self.port = port or free_port()
        self._tmp = None if datadir else tempfile.TemporaryDirectory(prefix="pilotline-mosq-")
        self.datadir = datadir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.conf = self.datadir / "mosquitto.conf"
        self.conf.write_text(
            MOSQUITTO_CONF.format(
                port=self.port,
                persistence="true" if persistence else "false",
                datadir=self.datadir,
                max_queued=max_queued,
                # Started as root, mosquitto drops to the `mosquitto` user and could then not
                # write its own data directory; stay the user who started it.
                user=getpass.getuser(),
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port)
        except BrokerUnavailableError:
            self.stop()
            log = self.datadir / "mosquitto.log"
            raise BrokerUnavailableError(
                f"mosquitto did not start: {log.read_text()[-500:] if log.exists() else ''}"
            ) from None
        return self
