"""``pilotline run`` under ``Type=notify``: what systemd hears on its notification socket.

A unix datagram socket of the test stands for systemd's (``$NOTIFY_SOCKET``), with a short
watchdog (``$WATCHDOG_USEC``): the real console script says ``READY=1`` once its API
answers, ``WATCHDOG=1`` while its loops run, and ``STOPPING=1`` on SIGTERM. The shipped unit
file passes ``systemd-analyze verify`` (scripts/setup installs systemd for the tests).
"""

from __future__ import annotations

import os
import shutil
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

pytestmark = pytest.mark.integration
needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
UNIT = Path(__file__).resolve().parents[2] / "deploy/systemd/pilotline.service"

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


@needs_mosquitto
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


def verify(unit_text: str, folder: Path) -> list[str]:
    """``systemd-analyze verify`` of ``unit_text`` as ``pilotline.service``: what it says
    about the unit. ``ExecStart=`` must name an executable that exists, so the unit's
    /opt/pilotline/bin/pilotline becomes this environment's console script."""
    assert SYSTEMD_ANALYZE is not None
    folder.mkdir()
    unit = folder / "pilotline.service"
    unit.write_text(unit_text.replace("/opt/pilotline/bin/pilotline", pilotline_command()[0]))
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    said = [line for line in (done.stdout + done.stderr).splitlines() if "pilotline" in line]
    assert done.returncode == 0 or said, done
    return said


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert verify(text, tmp_path / "shipped") == []
    # the check sees what it should: a misspelt key and a bad value are reported
    broken = text.replace("WatchdogSec=30s", "WatchdogSec=half a minute\nWatchDogSec=30s")
    said = verify(broken, tmp_path / "broken")
    assert any("WatchDogSec" in line for line in said), said
    assert any("half a minute" in line or "Failed to parse" in line for line in said), said
