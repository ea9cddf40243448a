"""Real servers the integration tests talk to, started on free loopback ports.

``VictoriaMetrics`` accepts InfluxDB line protocol on ``/api/v2/write`` and reads back with
``/api/v1/export``. A field ``f`` of measurement ``m`` becomes the series ``m_f``, tags
become labels, and string fields are not kept. ``-dedup.minScrapeInterval=1ms`` makes a
point written twice (same series, same millisecond) count once, as in InfluxDB.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pilotline.demo.broker import BrokerUnavailableError, ServerProcess, free_port

VICTORIA_METRICS = "/usr/bin/victoria-metrics"


class PeerUnavailableError(RuntimeError):
    pass


__all__ = [
    "DemoServer", "InfluxDB1", "PeerUnavailableError", "VictoriaMetrics", "free_port", "serving"
]

S = TypeVar("S", bound=ServerProcess)


@contextlib.contextmanager
def serving(make: Callable[[], S]) -> Iterator[S]:
    """The server ``make()`` returns, started, and closed afterwards; the test is skipped
    where the server is not installed or does not start."""
    try:
        server = make().start()
    except (BrokerUnavailableError, PeerUnavailableError) as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.close()


def _answers(proc: subprocess.Popen[bytes], url: str, status: int, timeout_s: float) -> bool:
    """Whether ``url`` answers ``status`` within ``timeout_s``, while ``proc`` runs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=1) as resp,
        ):
            if resp.status == status:
                return True
        time.sleep(0.05)
    return False


def find_victoria_metrics() -> str | None:
    for candidate in (shutil.which("victoria-metrics"), VICTORIA_METRICS):
        if candidate and Path(candidate).exists():
            return candidate
    return None


class VictoriaMetrics(ServerProcess):
    """A victoria-metrics process; ``stop()`` then ``start()`` restarts it on the same port
    and data directory (data written before a clean stop, or flushed, survives)."""

    def __init__(self, port: int | None = None, datadir: Path | None = None) -> None:
        exe = find_victoria_metrics()
        if exe is None:
            raise PeerUnavailableError(
                "victoria-metrics not found (Debian: apt-get install -y victoria-metrics)"
            )
        self.exe = exe
        self.port = port or free_port()
        self._tmp = None if datadir else tempfile.TemporaryDirectory(prefix="pilotline-vm-")
        self.datadir = datadir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = self.datadir / "victoria-metrics.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> VictoriaMetrics:
        if self.proc is not None:
            return self
        with self._log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    self.exe,
                    f"-httpListenAddr=127.0.0.1:{self.port}",
                    f"-storageDataPath={self.datadir / 'data'}",
                    "-retentionPeriod=100y",
                    "-search.disableCache",
                    "-dedup.minScrapeInterval=1ms",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if _answers(self.proc, f"{self.url}/health", 200, timeout_s):
            return self
        self.stop(kill=True)
        tail = self._log.read_text()[-800:]
        raise PeerUnavailableError(f"victoria-metrics did not start: {tail}")

    stop_timeout_s = 15.0

    def force_flush(self) -> None:
        """Make recently written points visible to export (and durable on disk)."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10) as resp:
            resp.read()

    def persist(self) -> None:
        """Put everything acknowledged so far on disk, so that a kill loses nothing.

        victoria-metrics 1.79 keeps recent points in memory for a few seconds and a SIGKILL
        loses them (a clean ``stop()`` does not); creating a snapshot flushes them to disk.
        """
        with urllib.request.urlopen(f"{self.url}/snapshot/create", timeout=10) as resp:
            name = json.loads(resp.read())["snapshot"]
        query = urllib.parse.urlencode({"snapshot": name})
        with urllib.request.urlopen(f"{self.url}/snapshot/delete?{query}", timeout=10) as resp:
            resp.read()

    def write(self, lines: list[str]) -> None:
        """Write line protocol directly (for checking the peer itself)."""
        request = urllib.request.Request(
            f"{self.url}/api/v2/write", data="\n".join(lines).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()

    def export(self, match: str) -> list[dict[str, Any]]:
        """Series matching ``match`` (a series selector such as ``{__name__=~"telemetry_.*"}``)
        as export's JSON lines: ``{"metric": {...}, "values": [...], "timestamps": [...]}``."""
        self.force_flush()
        query = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=10) as resp:
            body = resp.read().decode()
        return [json.loads(text) for text in body.splitlines() if text.strip()]



class DemoServer(ServerProcess):
    """``python -m pilotline.demo.opcua_server`` in a subprocess; restartable on its port.
    Closing it kills it, as a crash would."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> DemoServer:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pilotline.demo.opcua_server",
                "--port",
                str(self.port),
                "--interval",
                "0.2",
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        os.set_blocking(self.proc.stdout.fileno(), False)
        buffer = b""
        while time.monotonic() < deadline:
            chunk = self.proc.stdout.read() or b""
            buffer += chunk
            if b"READY" in buffer:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"demo OPC UA server did not start: {buffer!r}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def close(self) -> None:
        self.kill()


INFLUXD = "/usr/bin/influxd"


class InfluxDB1(ServerProcess):
    """An InfluxDB 1.x (Debian's ``influxdb``) on free loopback ports, to run InfluxQL.

    The dashboards' queries are InfluxQL, which InfluxDB 1.8, 2.x (v1 compatibility) and 3.x
    answer; 1.x is the one Debian packages. ``write()`` takes line protocol in nanoseconds,
    ``query()`` returns the ``results`` of ``/query`` and raises on any error in them.
    """

    def __init__(self, database: str = "pilotline") -> None:
        exe = shutil.which("influxd") or (INFLUXD if Path(INFLUXD).exists() else None)
        if exe is None:
            raise PeerUnavailableError("influxd not found (Debian: apt-get install -y influxdb)")
        self.exe = exe
        self.database = database
        self.port = free_port()
        self.rpc_port = free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="pilotline-influx1-")
        self.datadir = Path(self._tmp.name)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = self.datadir / "influxd.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        d = self.datadir
        path = d / "influxdb.conf"
        path.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{d / "meta"}"\n'
            f'[data]\n  dir = "{d / "data"}"\n  wal-dir = "{d / "wal"}"\n'
            "  query-log-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n"
            "[continuous_queries]\n  enabled = false\n"
        )
        return path

    def start(self, timeout_s: float = 20.0) -> InfluxDB1:
        config = self._config()
        with self._log.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.exe, "-config", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        if _answers(self.proc, f"{self.url}/ping", 204, timeout_s):
            self.query(f'CREATE DATABASE "{self.database}"', method="POST")
            return self
        self.close()
        raise PeerUnavailableError(f"influxd did not start: {self._log.read_text()[-800:]}")

    def write(self, lines: list[str]) -> None:
        query = urllib.parse.urlencode({"db": self.database, "precision": "ns"})
        request = urllib.request.Request(
            f"{self.url}/write?{query}", data="\n".join(lines).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()

    def query(self, q: str, *, method: str = "GET") -> list[dict[str, Any]]:
        """The ``results`` of one or more InfluxQL statements; an error in any raises."""
        params = urllib.parse.urlencode({"db": self.database, "q": q, "epoch": "ms"})
        if method == "POST":
            request = urllib.request.Request(f"{self.url}/query", data=params.encode())
        else:
            request = urllib.request.Request(f"{self.url}/query?{params}")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"InfluxQL refused ({exc.code}): {exc.read()!r}\n{q}") from None
        if "error" in body:
            raise RuntimeError(f"InfluxQL error: {body['error']}\n{q}")
        results: list[dict[str, Any]] = body.get("results", [])
        for result in results:
            if "error" in result:
                raise RuntimeError(f"InfluxQL error: {result['error']}\n{q}")
        return results

    stop_timeout_s = 15.0
