"""In JSON mode every line the running gateway writes is a JSON object.

``journalctl -o cat | jq`` stops at the first line that is not JSON. The gateway's own events
are structlog's, but the libraries under it log through the standard library: uvicorn (a
malformed HTTP request), asyncua (a peer that is no OPC UA server), influxdb-client and paho.
The real ``pilotline run`` talks to a real Mosquitto, an OPC UA endpoint that accepts and
hangs up, and an InfluxDB address that refuses; it answers API requests, good and bad, and
stops on SIGTERM. Every line of its stdout and stderr must parse.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.auth import cli_bearer
from tests.process import pilotline_command, until
from tests.sites import live_site, machine_config, pilot_laser

from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port
from pilotline.demo.publisher import publish_timeline

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

LASER = "pilot/photonics/laser-01/telemetry"


@pytest.fixture
def hangs_up() -> Iterator[str]:
    """An endpoint that accepts a TCP connection and closes it: no OPC UA server behind."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    conn.recv(1024)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"opc.tcp://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    listener.close()


def malformed_request(port: int) -> bytes:
    """Bytes that are no HTTP request: uvicorn logs a warning and answers 400."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        return conn.recv(1024)


def test_every_line_in_json_mode_is_json(
    tmp_path: Path, broker: MosquittoBroker, hangs_up: str
) -> None:
    port = free_port()
    config = tmp_path / "site.yaml"
    config.write_text(
        live_site(
            {
                "photonics": [pilot_laser()],
                "assembly": [
                    machine_config(
                        "press-03", "acme-optics",
                        opcua={"endpoint": hangs_up, "nodes": {"state": "ns=2;s=Press.State"}},
                    )
                ],
            },
            site="log-site",
            mqtt_url=broker.url,
            client_id=f"gw-logs-{port}",
            port=port,
            influx_url=f"http://127.0.0.1:{free_port()}",  # nothing listens: refused
            store=tmp_path / "gw.db",
            log={"level": "info", "format": "json"},
            defaults={"debounce_s": 0, "stale_after_s": 120, "min_idle_s": 600,
                      "publish_interval_s": 30, "offering": {}},
        )
    )
    auth = cli_bearer(pilotline_command(), config)
    api = f"http://127.0.0.1:{port}"
    stdout, stderr = tmp_path / "gateway.stdout", tmp_path / "gateway.stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [*pilotline_command(), "run", "-c", str(config)],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        until(
            lambda: httpx.get(f"{api}/health", timeout=2).json()["mqtt"]["connected"],
            20,
            "the gateway connected to the broker",
        )
        now = time.time_ns() // 1_000_000
        samples = [(LASER, json.dumps({"ts": now, "state": "Executing"}).encode()),
                   (LASER, b"{not json")]
        assert publish_timeline(broker.url, samples, timeout_s=10) == 2
        assert httpx.get(f"{api}/api/machines", headers=auth, timeout=2).status_code == 200
        assert httpx.get(f"{api}/metrics", headers=auth, timeout=2).status_code == 200
        assert httpx.get(f"{api}/api/machines", timeout=2).status_code == 401
        assert httpx.get(f"{api}/health", headers={"Host": "evil.example"}, timeout=2
                         ).status_code == 400
        assert malformed_request(port).startswith(b"HTTP/1.1 400")

        # uvicorn has spoken (in whatever form) and asyncua has had two connections to
        # speak about
        until(
            lambda: "uvicorn.error" in (text := stderr.read_text())
            and text.count("opcua.connect_failed") >= 2,
            20,
            "uvicorn's warning and two OPC UA connection attempts",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    records: list[dict[str, Any]] = []
    for path in (stdout, stderr):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError:
                pytest.fail(f"{path.name}:{number} is not JSON: {line!r}")
            assert isinstance(record, dict), (path.name, number, line)
            assert {"event", "level", "timestamp"} <= record.keys(), (path.name, number, line)
            records.append(record)

    names = {r["event"] for r in records}
    for name in ("gateway.started", "api.listening", "mqtt.connected", "opcua.connect_failed",
                 "influx.write_failed", "mqtt.payload_rejected", "api.host_refused",
                 "gateway.stopping", "gateway.stopped"):
        assert name in names, name
    # the libraries' lines are kept, at their own level, under one event name
    library = [r for r in records if r["event"] == "library.log"]
    uvicorn = [r for r in library if r["logger"] == "uvicorn.error"]
    assert [(r["message"], r["level"]) for r in uvicorn] == [
        ("Invalid HTTP request received.", "warning")
    ], library
    asyncua = [r for r in library if r["logger"].startswith("asyncua")]
    assert asyncua, library  # kept, not silenced
    assert {r["level"] for r in asyncua} == {"warning"}, asyncua
