"""Fixtures shared by the test folders: the real servers the integration tests talk to (one
per test, each on a free loopback port) and a store in the test's own folder.

A file that needs a server set up otherwise (no persistence, a module-wide one, TLS) says
so with its own fixture of the same name.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.peers import VictoriaMetrics, serving

from pilotline.demo.broker import MosquittoBroker
from pilotline.gateway.store import Store


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """A Mosquitto with persistence (queued QoS 1 messages and sessions survive a restart):
    ``stop()``, ``stop(kill=True)`` and ``start()`` again restart it on the same port."""
    with serving(MosquittoBroker) as b:
        yield b


@pytest.fixture
def vm() -> Iterator[VictoriaMetrics]:
    """A victoria-metrics taking InfluxDB line protocol; restartable like the broker."""
    with serving(VictoriaMetrics) as v:
        yield v


@pytest.fixture
def passwd() -> Iterator[Path]:
    """A Mosquitto password file with user ``gw``, password ``s3cret``.

    mosquitto started as root drops to its own user: the file must be readable by it, so it
    cannot live in a 0700 temporary directory.
    """
    shared = Path(tempfile.mkdtemp(prefix="pilotline-mqtt-passwd-"))
    try:
        shared.chmod(0o755)
        path = shared / "passwd"
        subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "gw", "s3cret"], check=True)
        path.chmod(0o644)
        yield path
    finally:
        shutil.rmtree(shared)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """An empty store in the test's folder (``var/store.db``), closed afterwards."""
    with Store(tmp_path / "var" / "store.db") as opened:
        yield opened
