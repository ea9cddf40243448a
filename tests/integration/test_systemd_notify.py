"""``pilotline run`` under ``Type=notify``: what systemd hears on its notification socket.

A unix datagram socket of the test stands for systemd's (``$NOTIFY_SOCKET``), with a short
watchdog (``$WATCHDOG_USEC``): the real console script says ``READY=1`` once its API
answers, ``WATCHDOG=1`` while its loops run, and ``STOPPING=1`` on SIGTERM. The unit file
itself is checked by ``systemd-analyze verify`` in tests/gateway/test_deploy_files.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.process import pilotline_command
from tests.sites import live_site, pilot_laser

from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

WATCHDOG_USEC = 300_000


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """systemd's side: a bound datagram socket and its path (short: 107 bytes at most)."""
    folder = Path(tempfile.mkdtemp(prefix="pl-sd-"))
    path = folder / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield sock, str(path)
    sock.close()
    path.unlink(missing_ok=True)
    folder.rmdir()


def receive(sock: socket.socket, wanted: str, timeout_s: float) -> list[str]:
    """Messages until one has the line ``wanted`` (that one included)."""
    got: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            pytest.fail(f"no {wanted} within {timeout_s} s; heard {got}")
        got.append(message)
        if wanted in message.splitlines():
            return got


def test_ready_watchdog_and_stopping_reach_systemd(
    tmp_path: Path, broker: MosquittoBroker, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    port = free_port()
    config = tmp_path / "site.yaml"
    config.write_text(
        live_site(
            {"photonics": [pilot_laser()]},
            site="notify-site",
            mqtt_url=broker.url,
            client_id=f"gw-notify-{port}",
            port=port,
            store=tmp_path / "gw.db",
            log={"level": "info", "format": "json"},
            defaults={"debounce_s": 0, "stale_after_s": 120, "min_idle_s": 600,
                      "publish_interval_s": 30, "offering": {}},
        )
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": path,
           "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    env.pop("WATCHDOG_PID", None)
    with (tmp_path / "gateway.stderr").open("wb") as err:
        proc = subprocess.Popen(
            [*pilotline_command(), "run", "-c", str(config)],
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            env=env,
        )
    try:
        heard = receive(sock, "READY=1", timeout_s=30)
        ready = heard[-1].splitlines()
        assert ready[0] == "READY=1"
        assert ready[1].startswith("STATUS=running: 1 machines")
        # ready means the API answers (the socket was bound before, uvicorn now serves)
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code in (200, 503)

        # the watchdog keeps being fed while the loops run
        started = time.monotonic()
        pings = 0
        while pings < 3:
            receive(sock, "WATCHDOG=1", timeout_s=5)
            pings += 1
        assert time.monotonic() - started < 5

        proc.send_signal(signal.SIGTERM)
        stopping = receive(sock, "STOPPING=1", timeout_s=10)
        assert all(m == "WATCHDOG=1" for m in stopping[:-1]), stopping
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert "Traceback" not in (tmp_path / "gateway.stderr").read_text()
