"""The real ``pilotline`` console script, run as a subprocess against real peers.

What a facility operator meets first: ``check`` says what is wrong with a configuration
(path and line, all at once), ``run`` refuses a broken one before touching the network,
runs against a real Mosquitto with JSON logs, an API and a quarantine for bad input, and
stops cleanly on SIGTERM/SIGINT; ``demo`` brings up a simulated pilot line in one command.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.auth import cli_bearer
from tests.process import pilotline_command, until
from tests.sites import live_site, pilot_camera, pilot_laser

from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port
from pilotline.demo.publisher import publish_timeline

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
STOP_TIMEOUT_S = 10.0





def pilotline(
    *args: str, cwd: Path = ROOT, timeout_s: float = 30.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pilotline_command(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        check=False,
    )




# --------------------------------------------------------------------------- check


def test_check_good_config_names_every_machine() -> None:
    result = pilotline("check", "-c", "deploy/pilotline-mqtt.yaml")
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load((DEPLOY / "pilotline-mqtt.yaml").read_text())
    machines = [m["id"] for zone in doc["zones"] for m in zone["machines"]]
    assert len(machines) == 4
    assert f"site {doc['site']}" in result.stdout
    for machine in machines:
        assert re.search(rf"\b{re.escape(machine)} \[mqtt: ", result.stdout), (
            machine,
            result.stdout,
        )
    for zone in doc["zones"]:
        assert f"{zone['id']}: " in result.stdout


def broken_issue_lines() -> dict[str, int]:
    """The five mistakes of deploy/broken.yaml: path -> line of its ``# N.`` comment."""
    text = (DEPLOY / "broken.yaml").read_text().splitlines()

    def line_of(marker: str) -> int:
        hits = [i + 1 for i, line in enumerate(text) if marker in line and not line.startswith("#")]
        assert len(hits) == 1, (marker, hits)
        return hits[0]

    return {
        "mqtt.password": line_of("# 1."),
        "defaults.debounce": line_of("# 2."),
        "zones[0].machines[0].state": line_of("# 3."),
        "zones[0].machines[1].mqtt.topic": line_of("# 4."),
        "zones[0].machines[1].state.map.Fault": line_of("# 5."),
    }


def assert_reports_broken(stderr: str, shown_path: str) -> None:
    for path, line in broken_issue_lines().items():
        pattern = rf"^{re.escape(shown_path)}:{line} {re.escape(path)}: \S"
        assert re.search(pattern, stderr, re.MULTILINE), (pattern, stderr)
    assert "hunter2" not in stderr  # the inline secret is refused, never echoed


def test_check_broken_config_lists_every_issue_with_file_line_and_path() -> None:
    result = pilotline("check", "-c", "deploy/broken.yaml")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "deploy/broken.yaml: 5 problem(s)" in result.stderr
    assert_reports_broken(result.stderr, "deploy/broken.yaml")


@pytest.mark.parametrize("command", ["check", "run"])
def test_missing_config_file_is_a_clear_error(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    result = pilotline(command, "-c", str(missing), cwd=tmp_path)
    assert result.returncode == 1
    assert f"{missing}" in result.stderr
    assert "cannot read the file" in result.stderr
    assert "No such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_broken_config_before_connecting_anything(tmp_path: Path) -> None:
    # A listening socket stands where the broker would be: any connection attempt would
    # complete its handshake and wait in the accept queue, where we look for it afterwards.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        text = (DEPLOY / "broken.yaml").read_text()
        assert "mqtt://127.0.0.1:1883" in text
        config = tmp_path / "broken.yaml"
        config.write_text(text.replace("mqtt://127.0.0.1:1883", f"mqtt://127.0.0.1:{port}"))

        # The timeout fails a run that hangs instead of refusing; how fast it refuses is
        # not a test's business.
        result = pilotline("run", "-c", "broken.yaml", cwd=tmp_path, timeout_s=20)

        assert result.returncode == 1, result.stderr
        assert "configuration refused, nothing was started" in result.stderr
        assert_reports_broken(result.stderr, "broken.yaml")
        assert "gateway.started" not in result.stderr
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    # nothing was created either: no store, no var/ directory next to the config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.yaml"]


# --------------------------------------------------------------------------- run


LASER = "pilot/photonics/laser-01/telemetry"
CAM = "pilot/imaging/cam-02/telemetry"


class GatewayProcess:
    """``pilotline run -c FILE`` as a child process, stderr (not a tty) kept in a file."""

    def __init__(self, config: Path, workdir: Path, name: str = "gateway") -> None:
        self.stderr_path = workdir / f"{name}.stderr"
        self.stdout_path = workdir / f"{name}.stdout"
        with self.stderr_path.open("wb") as err, self.stdout_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [*pilotline_command(), "run", "-c", str(config)],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def lines(self) -> list[str]:
        return [line for line in self.stderr_path.read_text().splitlines() if line.strip()]

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.lines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    def names(self) -> list[str]:
        return [str(e.get("event")) for e in self.events()]

    def stop(self, signum: int, timeout_s: float = STOP_TIMEOUT_S) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {timeout_s} s after {signal.Signals(signum).name}")
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def describe(self) -> str:
        return "\n".join(self.lines()[-30:])


@pytest.fixture
def site(tmp_path: Path, broker: MosquittoBroker) -> tuple[Path, str]:
    port = free_port()
    config = tmp_path / "site.yaml"
    config.write_text(
        live_site(
            {"photonics": [pilot_laser()], "imaging": [pilot_camera()]},
            site="cli-site",
            mqtt_url=broker.url,
            client_id=f"gw-cli-{port}",
            port=port,
            store=tmp_path / "gw.db",
            log={"level": "info", "format": "auto"},
            defaults={"debounce_s": 0, "stale_after_s": 120, "min_idle_s": 600,
                      "publish_interval_s": 30},
        )
    )
    api = f"http://127.0.0.1:{port}"
    AUTH[api] = cli_bearer(pilotline_command(), config)
    return config, api


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[[Path], GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(config: Path) -> GatewayProcess:
        gateway = GatewayProcess(config, tmp_path, name=f"gateway-{len(started)}")
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.kill()


def wait_healthy(gateway: GatewayProcess, api: str, timeout_s: float = 15.0) -> dict[str, Any]:
    def healthy() -> dict[str, Any] | None:
        if gateway.proc.poll() is not None:
            pytest.fail(f"gateway exited with {gateway.proc.returncode}:\n{gateway.describe()}")
        response = httpx.get(f"{api}/health", timeout=2)
        body: dict[str, Any] = response.json()
        return body if response.status_code == 200 and body["mqtt"]["connected"] else None

    return until(healthy, timeout_s, "a healthy gateway with MQTT connected")


AUTH: dict[str, dict[str, str]] = {}
"""The operator token's headers for each API under test (the API needs a bearer token)."""


def get(api: str, path: str) -> httpx.Response:
    return httpx.get(f"{api}{path}", headers=AUTH.get(api), timeout=2)


def scrape(api: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = get(api, "/metrics").text
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def samples_of(api: str, machine: str) -> float:
    return scrape(api).get(("pilotline_samples_total", (("machine", machine),)), 0.0)


def rejected(api: str, source: str, reason: str) -> float:
    key = ("pilotline_rejected_total", (("reason", reason), ("source", source)))
    return scrape(api).get(key, 0.0)


def machines(api: str) -> dict[str, str]:
    answer = get(api, "/api/machines")
    answer.raise_for_status()  # a refusal is an HTTPError for until(), not a list to read
    return {m["id"]: m["state"] for m in answer.json()}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def payload(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def test_run_serves_quarantines_bad_input_and_stops_on_sigterm(
    site: tuple[Path, str],
    broker: MosquittoBroker,
    start_gateway: Callable[[Path], GatewayProcess],
) -> None:
    config, api = site
    gateway = start_gateway(config)
    health = wait_healthy(gateway, api)
    assert health["healthy"] is True
    assert set(health["mqtt"]["subscriptions"]) == {LASER, CAM}

    names = gateway.names()
    for name in ("gateway.started", "mqtt.connected", "api.listening"):
        assert name in names, (name, gateway.describe())
    started = next(e for e in gateway.events() if e["event"] == "gateway.started")
    assert started["site"] == "cli-site"
    assert started["machines"] == 2
    assert started["influx"] is False

    # good samples: the laser runs, the camera idles
    t0 = now_ms() - 10_000
    good = [
        m
        for i in range(5)
        for m in (
            (LASER, payload(ts=t0 + i * 1000, state="Executing", temperature_c=21.5)),
            (CAM, payload(ts=t0 + i * 1000, power_w=10.0)),
        )
    ]
    assert publish_timeline(broker.url, good, timeout_s=10) == 10
    until(
        lambda: samples_of(api, "laser-01") == 5 and samples_of(api, "cam-02") == 5,
        10,
        "5 samples each",
    )
    until(
        lambda: machines(api) == {"laser-01": "running", "cam-02": "idle"},
        10,
        "states from samples",
    )
    listed = get(api, "/api/machines").json()
    assert {(m["id"], m["zone"], m["owner"]) for m in listed} == {
        ("laser-01", "photonics", "acme-optics"),
        ("cam-02", "imaging", "lumen-group"),
    }

    # bad input, of every kind a machine may send; none of it may stop the service
    t1 = t0 + 10_000
    bad = [
        (LASER, b"{not json"),  # mqtt: malformed_json
        (CAM, payload(ts=1, power_w="NaN")),  # mqtt: bad_timestamp (epoch 1 ms)
        (CAM, payload(ts=t1, power_w=[1, 2])),  # mqtt: wrong_type
        (CAM, b'{"ts": %d, "power_w": NaN}' % t1),  # mqtt: malformed_json (NaN is not JSON)
        (CAM, payload(ts=t1, power_w="NaN")),  # rules: a string where a threshold needs a number
        (LASER, payload(ts=t1, state="Exploding")),  # rules: not in the state map
    ]
    assert publish_timeline(broker.url, bad, timeout_s=10) == len(bad)
    expected = {
        ("mqtt", "malformed_json"): 2,
        ("mqtt", "bad_timestamp"): 1,
        ("mqtt", "wrong_type"): 1,
        ("rules", "wrong_type"): 1,
        ("rules", "unmapped_state"): 1,
    }
    until(
        lambda: all(rejected(api, s, r) == n for (s, r), n in expected.items()),
        10,
        f"pilotline_rejected_total {expected}",
    )

    def quarantined() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = get(api, "/api/quarantine").json()
        return rows if len(rows) >= len(bad) else None

    quarantine = until(quarantined, 10, "six quarantined inputs")
    assert sorted((r["source"], r["reason"]) for r in quarantine) == sorted(
        key for key, n in expected.items() for _ in range(n)
    )
    by_reason = {(r["source"], r["reason"]): r for r in quarantine}
    malformed = [r for r in quarantine if r["reason"] == "malformed_json"]
    assert {r["head"] for r in malformed} >= {"{not json"}
    assert all(r["topic"] == LASER for r in malformed if r["head"] == "{not json")
    assert by_reason[("mqtt", "bad_timestamp")]["machine"] == "cam-02"
    assert by_reason[("rules", "unmapped_state")]["machine"] == "laser-01"

    # the service carries on: later good samples still drive the states
    later = [
        (LASER, payload(ts=t1 + 1000, state="NotExecuting")),
        (CAM, payload(ts=t1 + 1000, power_w=300.0)),
    ]
    assert publish_timeline(broker.url, later, timeout_s=10) == 2
    until(
        lambda: machines(api) == {"laser-01": "idle", "cam-02": "running"},
        10,
        "states after bad input",
    )
    metrics = scrape(api)
    # rules rejections are samples that arrived (counted) and were refused by the core
    assert metrics[("pilotline_samples_total", (("machine", "laser-01"),))] == 7
    assert metrics[("pilotline_samples_total", (("machine", "cam-02"),))] == 7
    assert metrics[("pilotline_collector_connected", (("collector", "mqtt"),))] == 1
    assert httpx.get(f"{api}/health", timeout=2).status_code == 200

    rejected_logs = [e for e in gateway.events() if e["event"] == "mqtt.payload_rejected"]
    # logged once per kind, with a sample of the payload
    assert sorted(e["reason"] for e in rejected_logs) == [
        "bad_timestamp",
        "malformed_json",
        "wrong_type",
    ]

    code, took = gateway.stop(signal.SIGTERM)
    assert code == 0, gateway.describe()
    print(f"SIGTERM: exited 0 in {took:.2f} s")
    names = gateway.names()
    stopping = [e for e in gateway.events() if e["event"] == "gateway.stopping"]
    assert stopping, gateway.describe()
    assert stopping[0]["signal"] == "SIGTERM"
    assert names[-1] == "gateway.stopped", names[-5:]
    # every line on stderr (not a tty) is one JSON object with an event name and a level
    for line in gateway.lines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"event", "level"} <= record.keys(), line
    assert "Traceback" not in gateway.stderr_path.read_text()


def test_run_stops_on_sigint_with_code_130(
    site: tuple[Path, str], start_gateway: Callable[[Path], GatewayProcess]
) -> None:
    config, api = site
    gateway = start_gateway(config)
    wait_healthy(gateway, api)
    code, took = gateway.stop(signal.SIGINT)
    print(f"SIGINT: exited {code} in {took:.2f} s")
    assert code == 130, gateway.describe()
    names = gateway.names()
    assert "gateway.stopping" in names
    assert names[-1] == "gateway.stopped", names[-5:]
    assert "Traceback" not in gateway.stderr_path.read_text()


def test_run_reports_an_api_port_in_use(
    site: tuple[Path, str], start_gateway: Callable[[Path], GatewayProcess]
) -> None:
    """Start-up problems the user must fix exit 1 with a logged reason, not a traceback."""
    config, api = site
    port = int(api.rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen(1)
        gateway = start_gateway(config)
        try:
            code = gateway.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"gateway still running with its API port taken:\n{gateway.describe()}")
    assert code == 1, gateway.describe()
    failed = [e for e in gateway.events() if e["event"] == "gateway.start_failed"]
    assert failed, gateway.describe()
    assert f"127.0.0.1:{port}" in failed[0]["error"]
    assert "Traceback" not in gateway.stderr_path.read_text()


def test_a_second_run_on_the_same_store_refuses_and_a_killed_one_blocks_nothing(
    site: tuple[Path, str], start_gateway: Callable[[Path], GatewayProcess]
) -> None:
    """One gateway per store: a second ``run`` on the same configuration (here with only the
    API port changed, as a manual start beside a systemd unit) exits at once naming the
    store and the first one's pid, before it connects anything; the lock dies with its
    holder, so a SIGKILLed gateway never blocks the next start."""
    config, api = site
    first = start_gateway(config)
    wait_healthy(first, api)
    port = free_port()
    twin = config.with_name("twin.yaml")
    doc = yaml.safe_load(config.read_text())
    doc["api"] = f"127.0.0.1:{port}"
    twin.write_text(yaml.safe_dump(doc, sort_keys=False))
    store = str(doc["store"])

    second = start_gateway(twin)
    started = time.monotonic()
    try:
        code = second.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a second gateway runs on the same store:\n{second.describe()}")
    took = time.monotonic() - started
    print(f"second gateway refused in {took:.2f} s")
    assert code != 0, second.describe()
    refused = [e for e in second.events() if e["event"] == "gateway.store_in_use"]
    assert refused, second.describe()
    assert refused[0]["store"] == store
    assert refused[0]["holder_pid"] == first.proc.pid
    assert store in refused[0]["error"]
    assert f"pid {first.proc.pid}" in refused[0]["error"]
    names = second.names()
    for name in ("gateway.started", "mqtt.connected", "api.listening"):
        assert name not in names, (name, second.describe())
    assert "Traceback" not in second.stderr_path.read_text()
    # the first one never noticed: its broker session was not taken
    assert first.proc.poll() is None
    assert first.names().count("mqtt.connected") == 1, first.describe()

    first.kill()  # SIGKILL: no clean stop, the lock file keeps its pid
    third = start_gateway(twin)
    health = wait_healthy(third, f"http://127.0.0.1:{port}")
    assert health["store"]["path"] == store


# --------------------------------------------------------------------------- demo


# --------------------------------------------------------------------------- demo


def test_demo_runs_a_simulated_line_and_prints_the_final_table(tmp_path: Path) -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    workdir = tmp_path / "demo"
    out_path, err_path = tmp_path / "demo.stdout", tmp_path / "demo.stderr"
    started = time.monotonic()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [
                *pilotline_command(),
                "demo",
                "--duration",
                "25",
                "--no-live",
                "--api",
                f"127.0.0.1:{port}",
                "--workdir",
                "demo",  # relative, as with the default var/demo: resolved from cwd
            ],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    try:

        def running() -> None:
            if proc.poll() is not None:
                pytest.fail(
                    f"demo exited early with {proc.returncode}: {err_path.read_text()[-2000:]}"
                )

        def listed() -> dict[str, str] | None:
            running()
            token = workdir / "operator.token"
            if token.exists():  # always this run's: an earlier test may have had this port
                AUTH[api] = {"Authorization": f"Bearer {token.read_text().strip()}"}
            return machines(api) or None

        def lively() -> dict[str, str] | None:
            running()
            states = machines(api)
            active = [m for m, s in states.items() if s != "offline"]
            return states if len(states) == 10 and len(active) >= 8 else None

        # start-up (broker, simulated OPC UA servers, certificates) is not the gateway's
        # time to a picture: count that from the moment the API answers
        until(listed, 20, "the demo's API")
        api_up = time.monotonic()
        states = until(lively, 15, "10 demo machines, most of them not offline")
        print(
            f"demo: API up after {api_up - started:.1f} s, machines lively "
            f"{time.monotonic() - api_up:.1f} s later: {states}"
        )
        capacity = get(api, "/api/capacity").json()
        assert capacity["machines"] == 10
        assert_board_opens_with_the_printed_tokens(out_path.read_text(), api)

        code = proc.wait(timeout=25 + 20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    elapsed = time.monotonic() - started
    print(f"demo: exited {code} after {elapsed:.1f} s")
    stdout = out_path.read_text()
    assert code == 0, err_path.read_text()[-3000:]
    assert "10 machines" in stdout.splitlines()[0]
    assert re.search(r"pilotline demo: \d+ of 10 machines bookable now", stdout), stdout
    for machine in states:
        assert machine in stdout, (machine, stdout)
    for word in ("zone", "machine", "owner", "state"):
        assert word in stdout
    events = [
        json.loads(line)["event"]
        for line in err_path.read_text().splitlines()
        if line.startswith("{")
    ]
    assert "demo.started" in events
    assert "gateway.stopped" in events
    assert (workdir / "demo.db").exists()
    # the private broker went away with the demo
    broker_port = int(re.search(r"mqtt://127\.0\.0\.1:(\d+)", stdout).group(1))  # type: ignore[union-attr]
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", broker_port), 1),
    ):
        pass


def assert_board_opens_with_the_printed_tokens(stdout: str, api: str) -> None:
    """The demo prints the board's address and a token per role; each signs in there."""
    assert f"pilotline demo: board: {api}/board" in stdout, stdout
    printed = dict(re.findall(r"^  (operator|tenant demo-\w+|owner \w+) +(plt_\S+)", stdout,
                              re.M))
    assert {"operator", "tenant demo-smallco"} <= printed.keys(), stdout
    for who, token in printed.items():
        with httpx.Client(base_url=api, timeout=10) as browser:
            form = browser.get("/board/sign-in")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf is not None
            signed = browser.post("/board/sign-in", data={"token": token, "csrf": csrf.group(1)})
            assert signed.status_code == 303, (who, signed.text)
            view = who.split()[0]
            assert signed.headers["location"] == f"/board/{view}"
            assert browser.get(f"/board/{view}").status_code == 200
