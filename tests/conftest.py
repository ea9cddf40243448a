"""Fixtures shared by the test folders: the real servers the integration tests talk to (one
per test, each on a free loopback port) and a store in the test's own folder.

A file that needs a server set up otherwise (no persistence, a module-wide one, TLS) says
so with its own fixture of the same name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.peers import VictoriaMetrics, serving

from pilotline.demo.broker import MosquittoBroker
from pilotline.gateway.store import Store

# On a developer's machine a test whose peer (mosquitto, victoria-metrics, influxd, atheris) is
# missing is skipped; in CI (`CI=true`, as .ci/run runs) a skip is a failure, so that a
# missing install step can never pass for a green run.
_SKIP_FAILS = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if _SKIP_FAILS and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped in CI, which must run every test: {reason}"


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


@pytest.fixture
async def browser() -> Any:
    """Debian's Chromium driven by Playwright (its own browser download is not reachable
    here): ``apt-get install chromium``, ``pip install playwright``; a page per test."""
    chromium = shutil.which("chromium")
    playwright_api = pytest.importorskip("playwright.async_api")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    async with playwright_api.async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()
