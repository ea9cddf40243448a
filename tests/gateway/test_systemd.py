"""The systemd notifications, received on a real unix datagram socket standing for systemd's."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from pilotline.gateway.service.systemd import SystemdNotifier


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and its path (short: a unix socket path has 107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="pl-sd-"))
    path = folder / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield sock, str(path)
    sock.close()
    path.unlink(missing_ok=True)
    folder.rmdir()


def pending(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock``."""
    got = []
    sock.setblocking(False)
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except BlockingIOError:
        return got
    finally:
        sock.settimeout(2)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ready_stopping_and_watchdog_at_half_the_interval(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    clock = Clock()
    notifier = SystemdNotifier(path, watchdog_s=2.0, monotonic=clock)
    notifier.ready("running: 2 machines")
    assert sock.recv(4096) == b"READY=1\nSTATUS=running: 2 machines"
    for step in (0.0, 0.5, 0.99, 1.0, 1.5, 2.0):  # turns of the loop, at these offsets
        clock.now = 100.0 + step
        notifier.alive()
    assert pending(sock) == ["WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1"]  # at 0, 1 and 2 s
    notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    notifier.close()


def test_the_environment_decides(notify_socket: tuple[socket.socket, str]) -> None:
    _, path = notify_socket
    mine = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    made = [
        SystemdNotifier.from_environment(mine),
        # a watchdog meant for another process (our parent, before a fork) is not ours
        SystemdNotifier.from_environment({**mine, "WATCHDOG_PID": "1"}),
        SystemdNotifier.from_environment({**mine, "WATCHDOG_USEC": "0"}),
    ]
    assert [(n.enabled, n.watchdog_s) for n in made] == [(True, 30.0), (True, None), (True, None)]
    for notifier in made:
        notifier.close()
    # not under systemd (or Type=exec): nothing is told, nothing fails
    absent = SystemdNotifier.from_environment({"WATCHDOG_USEC": "30000000"})
    assert not absent.enabled
    assert absent.watchdog_s is None
    absent.ready()
    absent.alive()
    absent.stopping()


def test_an_abstract_socket() -> None:
    name = f"pilotline-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": f"@{name}"})
        notifier.ready()
        assert sock.recv(4096) == b"READY=1"
        notifier.close()


def test_a_socket_that_is_gone_is_said_once_and_stops_nothing(tmp_path: Path) -> None:
    notifier = SystemdNotifier(str(tmp_path / "gone"), watchdog_s=0.001)
    with capture_logs() as logs:
        notifier.ready()
        notifier.alive()
        notifier.stopping()
    assert [e["event"] for e in logs] == ["systemd.notify_failed"]
    notifier.close()
