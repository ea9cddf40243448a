"""Throughput benchmark: paho publishers -> Mosquitto -> gateway -> victoria-metrics.

Run from the repository root::

    .venv/bin/python benchmarks/throughput.py                # about 3.5 minutes
    .venv/bin/python benchmarks/throughput.py --quick        # about 1 minute, a smoke run
    .venv/bin/python benchmarks/throughput.py --steps cpu    # one step only (see --steps)

Everything runs on 127.0.0.1 against real peers started here: a private Mosquitto (with
``max_queued_messages`` raised, see ``pilotline.demo.broker``) and a private victoria-metrics
(``tests.peers.VictoriaMetrics``). Every role runs in its own process, so publishers, the
subscriber under test and the gateway never share a GIL. The steps (``--steps``):

1. ``paho``: ceiling of one Python client. A bare paho-mqtt 2.x subscriber (MQTT 5, QoS 1,
   automatic acks, ``loop_forever``, counts and drops each message) receives the stream of
   ``--machines`` machines published as fast as possible for ``--seconds``.
2. ``csub``: ceiling of a C client. ``mosquitto_sub`` (libmosquitto, MQTT 5, QoS 1, the same
   topics) prints one byte per message into a pipe that a small counter process reads.
3. ``throughput``: the same stream goes to the real ``Gateway`` (a child process built the
   way ``pilotline run -c FILE`` builds it, API included, writing to victoria-metrics). The
   sustained rate is the number of samples over the time from the first publish to the
   moment victoria-metrics acknowledged the last telemetry point.
4. ``latency``: the publishers send at fixed rates (``--latency-at``, fractions of the
   sustained rate of step 3: 10%, 50% and 90% by default) with ``ts`` = the publish time; the
   gateway's writer is wrapped so that, when victoria-metrics acknowledges a batch, each
   telemetry point's ``ack time - ts`` goes into a histogram (1 ms resolution below 1 s).
5. ``cpu``: the gateway idles for ``--idle-seconds`` (its CPU then is the floor), then takes
   ``--cpu-rate`` samples/s (default 2,000: 200 machines at 10 Hz) for ``--cpu-seconds``;
   CPU microseconds per sample = the gateway's CPU time (``/proc/PID/stat``) / samples.

Publishers keep the broker's backlog for the consumer under test below ``--backlog``
messages (they read the consumer's status file), so a fast publisher cannot pile up more
than a few seconds of queue and the run ends shortly after publishing stops. The publish
rate, the time publishers spent held back by that bound and the CPU seconds of every
process are reported so the reader can tell which side limited. At the end,
victoria-metrics must hold exactly the telemetry points published (exit code 1 otherwise).

The internal roles (``_bare``, ``_csub``, ``_gateway``) are this same file started with
a JSON spec; the publisher role is ``_load.py``. They are not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # the shared _launch.py, also when imported as benchmarks.X
    sys.path.append(HERE)

from _launch import (  # noqa: E402
    Children,
    cpu_seconds,
    die_with_parent,
    dispatch_role,
    machine_line,
    print_summary,
    read_json,
    system_busy_s,
    vm_hwm_kib,
    wait_until,
    wall_ms,
    write_json,
)
from _load import SCRIPT as LOAD_SCRIPT  # noqa: E402
from _load import site_yaml, topic_of  # noqa: E402

STEPS = ("paho", "csub", "throughput", "latency", "cpu")
GATEWAY_STEPS = ("throughput", "latency", "cpu")
TARGET_SAMPLES_S = 40_000
TARGET_US_PER_SAMPLE = 25.0
TARGET_P99_MS = 1_000.0


# -- role: bare paho subscriber ----------------------------------------------------------------


def role_bare(spec: dict[str, Any]) -> None:
    """A paho subscriber that only counts: the ceiling of one Python MQTT client."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    status = Path(spec["status"])
    topics = [(topic_of(i), 1) for i in range(spec["machines"])]
    state = {"received": 0, "first_ms": 0, "last_ms": 0, "subscribed": False}

    def on_connect(client: mqtt.Client, *_args: Any) -> None:
        client.subscribe(topics)

    def on_subscribe(*_args: Any) -> None:
        state["subscribed"] = True

    def on_message(*_args: Any) -> None:
        now = wall_ms()
        if not state["received"]:
            state["first_ms"] = now
        state["received"] += 1
        state["last_ms"] = now

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=spec["client_id"],
        protocol=mqtt.MQTTv5,
    )
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message

    def report() -> None:
        while True:
            write_json(status, state)
            time.sleep(0.05)

    threading.Thread(target=report, daemon=True).start()
    client.connect("127.0.0.1", spec["port"], keepalive=60, clean_start=True)
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.loop_forever()
    write_json(status, state)


# -- role: mosquitto_sub (C) subscriber --------------------------------------------------------


def mosquitto_sub_path() -> str | None:
    return shutil.which("mosquitto_sub") or (
        "/usr/bin/mosquitto_sub" if Path("/usr/bin/mosquitto_sub").exists() else None
    )


def role_csub(spec: dict[str, Any]) -> None:
    """``mosquitto_sub`` at QoS 1 on the same topics, counted through a pipe.

    A first ``mosquitto_sub -c -E`` creates a persistent session and exits once the broker has
    acknowledged every subscription; from then on the broker queues the messages for the
    session, so the counting ``mosquitto_sub -c`` that follows misses none. It prints one byte
    per message (``-F . -N``); this process only counts the bytes it reads (``bytes`` in big
    chunks: a few percent of a core at the C client's rate). At the end a clean connection
    with the same client id ends the session.
    """
    exe = mosquitto_sub_path()
    if exe is None:
        raise SystemExit("mosquitto_sub not found (Debian: apt-get install -y mosquitto-clients)")
    status = Path(spec["status"])
    cmd = [exe, "-h", "127.0.0.1", "-p", str(spec["port"]), "-V", "mqttv5", "-q", "1"]
    cmd += ["-c", "-x", "600", "-i", spec["client_id"]]
    for i in range(spec["machines"]):
        cmd += ["-t", topic_of(i)]
    subprocess.run([*cmd, "-E"], check=True, timeout=60, stdin=subprocess.DEVNULL)
    proc = subprocess.Popen(
        [*cmd, "-F", ".", "-N"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - no other thread yet
    )
    assert proc.stdout is not None
    state = {"received": 0, "first_ms": 0, "last_ms": 0, "subscribed": True, "pid": proc.pid}
    write_json(status, state)

    def report() -> None:
        while True:
            write_json(status, state)
            time.sleep(0.05)

    threading.Thread(target=report, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    fd = proc.stdout.fileno()
    while chunk := os.read(fd, 1 << 16):
        now = wall_ms()
        if not state["received"]:
            state["first_ms"] = now
        state["received"] += len(chunk)
        state["last_ms"] = now
    proc.wait(10)
    write_json(status, state)
    # A clean connection with the same client id ends the persistent session: otherwise the
    # broker would go on queueing every later step's messages for it.
    clean = [exe, "-h", "127.0.0.1", "-p", str(spec["port"]), "-V", "mqttv5"]
    clean += ["-i", spec["client_id"], "-t", "bench/none", "-E"]
    subprocess.run(clean, check=False, timeout=30, stdin=subprocess.DEVNULL)


# -- role: gateway -----------------------------------------------------------------------------


def latency_bucket(ms: int) -> int:
    """1 ms buckets below 1 s, 10 ms below 10 s, 100 ms above: a bounded histogram."""
    if ms < 1_000:
        return ms
    if ms < 10_000:
        return ms - ms % 10
    return ms - ms % 100


class RecordingWriter:
    """Wraps the gateway's own InfluxDB writer; on each acknowledged batch, records per
    telemetry point ``ack time - ts`` under the current phase (set by the benchmark).

    In the ``idle`` and ``cpu`` phases it only counts the telemetry points, so the CPU figure
    carries as little of the benchmark's own work as possible."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.phase = "warmup"
        self.hist: dict[str, Counter[int]] = {}
        self.acked = 0
        self.last_ack_ms = 0
        self.lock = threading.Lock()

    def write(self, lines: Sequence[str]) -> None:
        self.inner.write(lines)
        now = wall_ms()
        if self.phase in ("idle", "cpu"):
            n = sum(1 for line in lines if line.startswith("telemetry,"))
            if n:
                with self.lock:
                    self.acked += n
                    self.last_ack_ms = now
            return
        lat: list[int] = [
            now - int(line[line.rindex(" ") + 1 :]) // 1_000_000
            for line in lines
            if line.startswith("telemetry,")
        ]
        if not lat:
            return
        with self.lock:
            hist = self.hist.setdefault(self.phase, Counter())
            for ms in lat:
                hist[latency_bucket(ms)] += 1
            self.acked += len(lat)
            self.last_ack_ms = now

    def close(self) -> None:
        self.inner.close()


def role_gateway(spec: dict[str, Any]) -> None:
    """The gateway as ``pilotline run -c FILE`` builds it, with a recording writer."""
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            asyncio.run(_gateway_main(spec))
        finally:
            profiler.disable()
            profiler.dump_stats(spec["profile"])
    else:
        asyncio.run(_gateway_main(spec))


async def _gateway_main(spec: dict[str, Any]) -> None:
    from pilotline.gateway.config import load_config
    from pilotline.gateway.logs import configure_logging
    from pilotline.gateway.service import Gateway

    config = load_config(Path(spec["config"]))
    configure_logging(config.log.format, config.log.level)
    gateway = Gateway(config)
    # Wrap whatever writer the gateway built for itself (so the benchmark measures the one
    # `pilotline run` uses); the drainer holds it as ``_writer``.
    drainer = gateway.drainer
    if drainer is None or gateway.writer is None or not hasattr(drainer, "_writer"):
        raise SystemExit("benchmark: the gateway has no outbox drainer with a _writer to wrap")
    writer = RecordingWriter(gateway.writer)
    gateway.writer = writer
    drainer._writer = writer
    status = Path(spec["status"])
    control = Path(spec["control"])
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(gateway.run(api=True))
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)

    subscribed = False

    def snapshot() -> dict[str, Any]:
        nonlocal subscribed
        if not subscribed and gateway.mqtt is not None:  # health() walks every topic
            health = gateway.mqtt.health()
            subscribed = health.connected and health.subscribed
        stats = drainer.stats()
        return {
            "phase": writer.phase,
            "received": sum(gateway.metrics.samples.values()),
            "rejected": sum(gateway.metrics.rejected.values()),
            "telemetry_acked": writer.acked,
            "last_ack_ms": writer.last_ack_ms,
            "points_written": stats.written,
            "commits": gateway.metrics.commits,
            "write_batches": stats.batches,
            "subscribed": subscribed,
        }

    async def report() -> None:
        while True:
            wanted = read_json(control)
            if wanted is not None and wanted.get("phase") != writer.phase:
                with writer.lock:
                    writer.phase = wanted["phase"]
            write_json(status, snapshot())
            # Less often while the gateway's CPU is being measured: the benchmark's own
            # status file then costs the gateway next to nothing.
            await asyncio.sleep(0.25 if writer.phase in ("idle", "cpu") else 0.05)

    reporter = asyncio.create_task(report())
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        reporter.cancel()
        final = snapshot() | {"stopped": True}
        write_json(status, final)
        with writer.lock:
            write_json(
                Path(spec["hist"]),
                {phase: sorted(c.items()) for phase, c in writer.hist.items()},
            )


# -- the benchmark (parent process) ------------------------------------------------------------


@dataclass
class PhaseResult:
    name: str
    published: int
    publish_rate: float
    throttled_pct: float
    """Publishers held back by the backlog bound: the consumer under test was the limit."""
    window_pct: float
    """Publishers waiting for PUBACKs (the window full): the broker was the limit."""
    received_rate: float
    seconds: float
    """First publish to the last message received (or acknowledged by the store)."""
    wall_s: float
    """Between the two CPU snapshots: just before the publishers start, and once done."""
    cpu: dict[str, float]
    publish_cpu_s: float
    system_busy_s: float

    @property
    def foreign_cpu_pct(self) -> float:
        """CPU used by processes outside this benchmark, in % of one core."""
        ours = sum(self.cpu.values()) + self.publish_cpu_s
        return max(0.0, (self.system_busy_s - ours) / self.wall_s * 100)

    def cpu_pct(self, name: str) -> float:
        return self.cpu.get(name, 0.0) / self.wall_s * 100


@dataclass
class LatencyStep:
    label: str
    phase: str
    rate: float
    result: PhaseResult


@dataclass
class CpuStep:
    rate: float
    idle_pct: float
    result: PhaseResult

    @property
    def us_per_sample(self) -> float:
        return self.result.cpu.get("gateway", 0.0) / max(1, self.result.published) * 1e6

    @property
    def core_pct(self) -> float:
        return self.result.cpu_pct("gateway")

    @property
    def marginal_us_per_sample(self) -> float:
        """Net of the idle gateway's CPU over the same time."""
        r = self.result
        busy = r.cpu.get("gateway", 0.0) - self.idle_pct / 100 * r.wall_s
        return max(0.0, busy) / max(1, r.published) * 1e6


@dataclass
class Results:
    paho: PhaseResult | None = None
    csub: PhaseResult | None = None
    through: PhaseResult | None = None
    latency: list[LatencyStep] | None = None
    cpu: CpuStep | None = None
    hist: dict[str, list[list[int]]] | None = None
    hwm_kib: int | None = None
    final: dict[str, Any] | None = None
    expected: int = 0
    stored: int = 0
    gateway_rc: int | None = None


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.work = workdir
        self.children = Children()
        self.ts_floor = 0
        self.phase_no = 0
        self.port = 0
        self.results = Results()

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def cpu_snapshot(self, pids: dict[str, int]) -> dict[str, float]:
        return {name: cpu_seconds(pid) or 0.0 for name, pid in pids.items()}

    def publish_phase(
        self,
        name: str,
        consumer_status: Path,
        *,
        seconds: float,
        rate: float,
        done: Callable[[int], tuple[bool, int]],
        pids: dict[str, int],
        backlog: int | None = None,
    ) -> PhaseResult:
        """Run the publishers; ``done(total)`` says (finished?, last consumer time ms)."""
        args = self.args
        self.phase_no += 1
        nproc = args.publishers
        groups = [list(range(args.machines))[p::nproc] for p in range(nproc)]
        base = read_json(consumer_status) or {}
        received_base = int(base.get("received", 0))
        outs = [self.work / f"pub-{self.phase_no}-{p}.json" for p in range(nproc)]
        go = self.work / f"go-{self.phase_no}"
        procs = [
            self.children.role(
                LOAD_SCRIPT,
                "_publish",
                {
                    "port": self.port,
                    "client_id": f"bench-pub-{self.phase_no}-{p}",
                    "machines": groups[p],
                    "seconds": seconds,
                    "rate": rate / nproc,
                    "window": args.window,
                    "backlog": args.backlog if backlog is None else backlog,
                    "nproc": nproc,
                    "consumer_status": str(consumer_status),
                    "received_base": received_base,
                    "ts_floor": self.ts_floor,
                    "out": str(outs[p]),
                    "go": str(go),
                    "client": args.client,
                },
                self.work / "publishers.log",
            )
            for p in range(nproc)
        ]

        def ready() -> bool:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{name}: a publisher exited (see {self.work}/publishers.log)")
            return all(out.with_suffix(".ready").exists() for out in outs)

        wait_until(ready, 60, f"{name}: publishers connected")
        cpu0 = self.cpu_snapshot(pids)
        busy0 = system_busy_s()
        started = time.monotonic()
        go.touch()
        next_report = started + 1.0
        hard_deadline = started + seconds + 60
        while any(p.poll() is None for p in procs):
            if time.monotonic() > hard_deadline:
                raise TimeoutError(f"{name}: publishers still running after {seconds + 60:g} s")
            if time.monotonic() >= next_report:
                status = read_json(consumer_status) or {}
                got = int(status.get("received", 0)) - received_base
                elapsed = time.monotonic() - started
                self.say(
                    f"{name}: {elapsed:5.1f} s  consumer has {got:>9,} "
                    f"({got / max(elapsed, 1e-9):,.0f}/s so far)"
                )
                next_report += 2.0 if seconds > 15 else 1.0
            time.sleep(0.05)
        results = []
        for p, out in zip(procs, outs, strict=True):
            res = read_json(out)
            if p.returncode != 0 or res is None:
                raise RuntimeError(f"{name}: a publisher failed (see {self.work}/publishers.log)")
            results.append(res)
        total = sum(r["published"] for r in results)
        if any(r["acked"] != r["published"] for r in results):
            self.say(f"{name}: WARNING some PUBACKs missing: {results}")
        self.ts_floor = max(self.ts_floor, *(r["max_ts"] for r in results))
        first_ms = min(r["first_ms"] for r in results)
        pub_end_ms = max(r["last_ack_ms"] for r in results)
        pub_active = max(1e-9, (pub_end_ms - first_ms) / 1000)
        throttled = sum(r["throttled_s"] for r in results) / nproc
        window_wait = sum(r.get("window_s", 0.0) for r in results) / nproc
        self.say(f"{name}: published {total:,}; waiting for the consumer to catch up")
        drain_deadline = time.monotonic() + max(120.0, seconds * 4)
        next_report = time.monotonic() + 2.0
        while True:
            finished, last_ms = done(total)
            if finished:
                break
            if time.monotonic() > drain_deadline:
                raise TimeoutError(f"{name}: the consumer did not catch up; see {self.work}")
            if time.monotonic() >= next_report:
                status = read_json(consumer_status) or {}
                got = int(status.get("received", 0)) - received_base
                self.say(f"{name}: consumer has {got:,} of {total:,}")
                next_report += 2.0
            time.sleep(0.02)
        cpu1 = self.cpu_snapshot(pids)
        busy1 = system_busy_s()
        span = max(1e-9, (last_ms - first_ms) / 1000)
        return PhaseResult(
            name=name,
            published=total,
            publish_rate=total / pub_active,
            throttled_pct=100 * throttled / pub_active,
            window_pct=100 * window_wait / pub_active,
            received_rate=total / span,
            seconds=span,
            wall_s=max(1e-9, time.monotonic() - started),
            cpu={k: cpu1[k] - cpu0[k] for k in cpu1},
            publish_cpu_s=sum(r["cpu_s"] for r in results),
            system_busy_s=busy1 - busy0,
        )

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> int:
        from tests.peers import VictoriaMetrics

        from pilotline.demo.broker import MosquittoBroker

        steps = self.args.steps
        for kept in ("mosquitto", "vm"):  # a kept --workdir: no sessions or points of a last run
            shutil.rmtree(self.work / kept, ignore_errors=True)
        broker = MosquittoBroker(datadir=self.work / "mosquitto")
        vm = None
        try:
            broker.start()
            assert broker.proc is not None
            self.port = broker.port
            peers = {"mosquitto": broker.proc.pid}
            if any(s in steps for s in GATEWAY_STEPS):
                (self.work / "vm").mkdir(exist_ok=True)
                vm = VictoriaMetrics(datadir=self.work / "vm")
                vm.start()
                assert vm.proc is not None
                peers["victoria-metrics"] = vm.proc.pid
            self.say(f"mosquitto on :{broker.port}; steps {', '.join(steps)}; workdir {self.work}")
            if "paho" in steps:
                self.results.paho = self.ceiling_paho(peers)
            if "csub" in steps:
                self.results.csub = self.ceiling_csub(peers)
            ok = True
            if vm is not None:
                ok = self.pipeline(peers, broker.url, vm)
            self.report()
            return 0 if ok else 1
        finally:
            self.children.stop_all()
            if vm is not None:
                vm.stop()
            broker.stop()

    def ceiling_paho(self, peers: dict[str, int]) -> PhaseResult:
        args = self.args
        status = self.work / "bare.json"
        status.unlink(missing_ok=True)  # a kept --workdir holds the last run's
        self.say(f"ceiling: bare paho subscriber, {args.machines} topics, QoS 1")
        sub = self.children.role(
            __file__,
            "_bare",
            {
                "port": self.port,
                "client_id": "bench-bare",
                "machines": args.machines,
                "status": str(status),
            },
            self.work / "bare.log",
        )
        wait_until(lambda: bool((read_json(status) or {}).get("subscribed")), 15, "bare subscriber")
        result = self.publish_phase(
            "ceiling paho",
            status,
            seconds=args.seconds,
            rate=args.rate,
            done=self.received_all(status),
            pids=peers | {"subscriber": sub.pid},
        )
        self.children.stop(sub)
        self.say(
            f"ceiling paho: {result.received_rate:,.0f} msg/s received "
            f"(publishers {result.publish_rate:,.0f} msg/s)"
        )
        return result

    def ceiling_csub(self, peers: dict[str, int]) -> PhaseResult:
        args = self.args
        if mosquitto_sub_path() is None:
            raise RuntimeError("mosquitto_sub not found: apt-get install -y mosquitto-clients")
        status = self.work / "csub.json"
        status.unlink(missing_ok=True)  # a kept --workdir holds the last run's
        self.say(f"ceiling: mosquitto_sub (C), {args.machines} topics, QoS 1")
        counter = self.children.role(
            __file__,
            "_csub",
            {
                "port": self.port,
                "client_id": "bench-csub",
                "machines": args.machines,
                "status": str(status),
            },
            self.work / "csub.log",
        )
        wait_until(lambda: bool((read_json(status) or {}).get("pid")), 30, "mosquitto_sub")
        sub_pid = int(read_json(status)["pid"])
        result = self.publish_phase(
            "ceiling mosquitto_sub",
            status,
            seconds=args.seconds,
            rate=args.rate,
            done=self.received_all(status),
            pids=peers | {"mosquitto_sub": sub_pid, "counter": counter.pid},
        )
        self.children.stop(counter)
        self.say(
            f"ceiling mosquitto_sub: {result.received_rate:,.0f} msg/s received "
            f"(publishers {result.publish_rate:,.0f} msg/s)"
        )
        return result

    @staticmethod
    def received_all(status: Path) -> Callable[[int], tuple[bool, int]]:
        base = int((read_json(status) or {}).get("received", 0))

        def done(total: int) -> tuple[bool, int]:
            s = read_json(status) or {}
            return int(s.get("received", 0)) - base >= total, int(s.get("last_ms", 0))

        return done

    def pipeline(self, peers: dict[str, int], mqtt_url: str, vm: Any) -> bool:
        from pilotline.demo.broker import free_port

        args = self.args
        steps = args.steps
        res = self.results
        cfg = self.work / "site.yaml"
        cfg.write_text(
            site_yaml(
                args.machines,
                mqtt_url=mqtt_url,
                influx_url=vm.url,
                store=self.work / "gateway.db",
                api=f"127.0.0.1:{free_port()}",
            )
        )
        status = self.work / "gateway-status.json"
        status.unlink(missing_ok=True)  # a kept --workdir holds the last run's
        control = self.work / "gateway-control.json"
        hist_path = self.work / "gateway-latency.json"
        write_json(control, {"phase": "warmup"})
        self.say(f"gateway: starting (config {cfg}, log {self.work / 'gateway.log'})")
        gw = self.children.role(
            __file__,
            "_gateway",
            {
                "config": str(cfg),
                "status": str(status),
                "control": str(control),
                "hist": str(hist_path),
                "profile": str(self.work / "gateway.prof") if args.profile else None,
            },
            self.work / "gateway.log",
        )
        wait_until(
            lambda: bool((read_json(status) or {}).get("subscribed")) or gw.poll() is not None,
            60,
            "gateway subscribed",
        )
        if gw.poll() is not None:
            raise RuntimeError(f"gateway exited with {gw.returncode}; see {self.work}/gateway.log")
        pids = peers | {"gateway": gw.pid}

        def set_phase(name: str) -> None:
            write_json(control, {"phase": name})
            wait_until(lambda: (read_json(status) or {}).get("phase") == name, 10, "phase")

        def acked() -> int:
            return int((read_json(status) or {}).get("telemetry_acked", 0))

        def acked_after(base: int) -> Callable[[int], tuple[bool, int]]:
            def done(total: int) -> tuple[bool, int]:
                s = read_json(status) or {}
                if gw.poll() is not None:
                    raise RuntimeError(f"gateway died; see {self.work}/gateway.log")
                ok = int(s.get("telemetry_acked", 0)) - base >= total
                return ok, int(s.get("last_ack_ms", 0))

            return done

        published = 0
        # Warm-up: one sample per machine, so every machine has its state before measuring.
        self.say("gateway: warm-up (one sample per machine)")
        warm = self.publish_phase(
            "warm-up",
            status,
            seconds=1.0,
            rate=float(args.machines),
            done=acked_after(0),
            pids=pids,
        )
        published += warm.published
        if "throughput" in steps:
            set_phase("throughput")
            self.say(f"throughput: {args.machines} machines, publishing for {args.seconds:g} s")
            res.through = self.publish_phase(
                "throughput",
                status,
                seconds=args.seconds,
                rate=args.rate,
                done=acked_after(acked()),
                pids=pids,
            )
            published += res.through.published
            self.say(
                f"throughput: {res.through.received_rate:,.0f} samples/s sustained to the store "
                f"(publishers {res.through.publish_rate:,.0f} msg/s)"
            )
        if "latency" in steps:
            res.latency = []
            for label, rate in self.latency_rates():
                phase = f"latency-{len(res.latency) + 1}"
                set_phase(phase)
                self.say(f"latency at {label}: {rate:,.0f} msg/s for {args.latency_seconds:g} s")
                r = self.publish_phase(
                    f"latency {label}",
                    status,
                    seconds=args.latency_seconds,
                    rate=rate,
                    done=acked_after(acked()),
                    pids=pids,
                    backlog=0,
                )
                published += r.published
                res.latency.append(LatencyStep(label, phase, rate, r))
        if "cpu" in steps:
            set_phase("idle")
            self.say(f"cpu: gateway idle for {args.idle_seconds:g} s")
            c0, t0 = cpu_seconds(gw.pid) or 0.0, time.monotonic()
            time.sleep(args.idle_seconds)
            c1, t1 = cpu_seconds(gw.pid) or 0.0, time.monotonic()
            idle_pct = (c1 - c0) / (t1 - t0) * 100
            set_phase("cpu")
            self.say(f"cpu: {args.cpu_rate:,.0f} samples/s for {args.cpu_seconds:g} s")
            r = self.publish_phase(
                "cpu",
                status,
                seconds=args.cpu_seconds,
                rate=args.cpu_rate,
                done=acked_after(acked()),
                pids=pids,
                backlog=0,
            )
            published += r.published
            res.cpu = CpuStep(args.cpu_rate, idle_pct, r)
            self.say(
                f"cpu: {res.cpu.us_per_sample:,.1f} us per sample, "
                f"{res.cpu.core_pct:.1f}% of one core"
            )
        set_phase("after")
        res.hwm_kib = vm_hwm_kib(gw.pid)
        res.final = read_json(status) or {}
        res.gateway_rc = self.children.stop(gw, 30)
        res.hist = read_json(hist_path) or {}
        res.expected = published
        res.stored = self.stored_points(vm, published)
        return res.stored == res.expected

    def latency_rates(self) -> list[tuple[str, float]]:
        args = self.args
        if args.latency_rates:
            return [(f"{r:,.0f}/s", r) for r in args.latency_rates]
        if self.results.through is None:
            raise RuntimeError("--latency-at needs the throughput step (or give --latency-rates)")
        sustained = self.results.through.received_rate
        return [(f"{f:.0%}", max(1.0, f * sustained)) for f in args.latency_at]

    def stored_points(self, vm: Any, expected: int) -> int:
        """Telemetry points victoria-metrics returns; polled a while, because points it
        acknowledged a moment ago can take a few seconds to become visible to export."""
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError):
                vm.force_flush()
            stored = sum(len(s["values"]) for s in vm.export('{__name__="telemetry_power_w"}'))
            if stored >= expected or time.monotonic() > deadline:
                return stored
            time.sleep(0.5)

    # -- the report ------------------------------------------------------------------------

    def pct(self, phase: str, q: float) -> float | None:
        buckets = (self.results.hist or {}).get(phase) or []
        n = sum(c for _, c in buckets)
        if not n:
            return None
        rank = q * n
        seen = 0
        for value, count in buckets:
            seen += count
            if seen >= rank:
                return float(value)
        return float(buckets[-1][0])

    def report(self) -> None:
        args = self.args
        res = self.results
        rows: list[tuple[str, str, str]] = []
        summary: list[tuple[str, str, str, str]] = []

        def ms(v: float | None) -> str:
            return "n/a" if v is None else f"{v:,.0f} ms"

        rows.append(
            (
                "machines / publisher processes",
                f"{args.machines} / {args.publishers}",
                f"publisher client: {args.client}",
            )
        )
        for label, r, who in (
            ("ceiling: bare paho subscriber", res.paho, "subscriber"),
            ("ceiling: mosquitto_sub (C)", res.csub, "mosquitto_sub"),
        ):
            if r is not None:
                rows.append(
                    (
                        label,
                        f"{r.received_rate:,.0f} msg/s",
                        f"publishers {r.publish_rate:,.0f} msg/s, held back "
                        f"{r.throttled_pct:.0f}% (window full {r.window_pct:.0f}%) of the time; "
                        f"CPU {who} {r.cpu_pct(who):.0f}%"
                        + (f" + counter {r.cpu_pct('counter'):.0f}%" if r is res.csub else "")
                        + f", mosquitto {r.cpu_pct('mosquitto'):.0f}%, publishers "
                        f"{r.publish_cpu_s / r.wall_s * 100:.0f}%",
                    )
                )
        t = res.through
        if t is not None:
            rows.append(
                (
                    "pipeline: sustained to the store",
                    f"{t.received_rate:,.0f} samples/s",
                    f"{t.published:,} samples in {t.seconds:.1f} s; publishers "
                    f"{t.publish_rate:,.0f} msg/s, held back {t.throttled_pct:.0f}% "
                    f"(window full {t.window_pct:.0f}%)",
                )
            )
            ratios = []
            for name, ceiling in (("bare paho", res.paho), ("mosquitto_sub", res.csub)):
                if ceiling is not None:
                    ratio = t.received_rate / ceiling.received_rate
                    ratios.append(f"{ratio:.2f} of {name}")
                    rows.append((f"pipeline / {name}", f"{ratio:.2f}", ""))
            target = t.received_rate / TARGET_SAMPLES_S
            rows.append(
                ("pipeline / target 40,000 samples/s", f"{target:.2f}", "target: at least 1.0")
            )
            summary.append(
                (
                    "end-to-end MQTT QoS 1 -> store ack, sustained",
                    ">= 40,000 samples/s",
                    f"{t.received_rate:,.0f} samples/s",
                    "; ".join(ratios) or "-",
                )
            )
            rows.append(
                (
                    "CPU during throughput",
                    f"gateway {t.cpu_pct('gateway'):.0f}%",
                    f"mosquitto {t.cpu_pct('mosquitto'):.0f}%, victoria-metrics "
                    f"{t.cpu_pct('victoria-metrics'):.0f}%, publishers "
                    f"{t.publish_cpu_s / t.wall_s * 100:.0f}% (of one core)",
                )
            )
        for step in res.latency or []:
            p50, p99, top = (self.pct(step.phase, q) for q in (0.5, 0.99, 1.0))
            verdict = ""
            if step.label == "50%" and p99 is not None:
                verdict = f"; target p99 < 1 s: {'met' if p99 < TARGET_P99_MS else 'MISSED'}"
            rows.append(
                (
                    f"latency at {step.label}, publish -> store ack",
                    f"p50 {ms(p50)}",
                    f"p99 {ms(p99)}, max {ms(top)} at {step.rate:,.0f} msg/s "
                    f"({step.result.published:,} samples; gateway CPU "
                    f"{step.result.cpu_pct('gateway'):.0f}%){verdict}",
                )
            )
            summary.append(
                (
                    f"latency p50 / p99 at {step.label} of sustained ({step.rate:,.0f}/s)"
                    if step.label.endswith("%")
                    else f"latency p50 / p99 at {step.label}",
                    "p99 < 1 s at 50%" if step.label == "50%" else "-",
                    f"{ms(p50)} / {ms(p99)}",
                    "-"
                    if step.label != "50%" or p99 is None
                    else f"{p99 / TARGET_P99_MS:.2f} of target",
                )
            )
        if t is not None:
            rows.append(
                (
                    "latency at saturation",
                    f"p50 {ms(self.pct('throughput', 0.5))}",
                    f"p99 {ms(self.pct('throughput', 0.99))} (backlog bound {args.backlog:,} msgs)",
                )
            )
        c = res.cpu
        if c is not None:
            rows.append(
                (
                    f"CPU per sample at {c.rate:,.0f}/s",
                    f"{c.us_per_sample:,.1f} us",
                    f"{c.core_pct:.1f}% of one core over {c.result.wall_s:.1f} s "
                    f"({c.result.published:,} samples); "
                    f"target 25 us: {c.us_per_sample / TARGET_US_PER_SAMPLE:.2f} of target",
                )
            )
            rows.append(
                (
                    "  of which the idle gateway",
                    f"{c.idle_pct:.1f}%",
                    f"of one core; net of it: {c.marginal_us_per_sample:,.1f} us per sample",
                )
            )
            summary.append(
                (
                    f"gateway CPU per sample at {c.rate:,.0f} samples/s",
                    "< 25 us",
                    f"{c.us_per_sample:,.1f} us ({c.core_pct:.1f}% of a core)",
                    f"{c.us_per_sample / TARGET_US_PER_SAMPLE:.2f} of target",
                )
            )
        if res.hwm_kib is not None:
            rows.append(("gateway peak RSS (VmHWM)", f"{res.hwm_kib / 1024:,.0f} MiB", ""))
        phases = [r for r in (res.paho, res.csub, t) if r is not None]
        phases += [s.result for s in res.latency or []]
        phases += [c.result] if c is not None else []
        if phases:
            rows.append(
                (
                    "CPU of other processes",
                    " / ".join(f"{r.foreign_cpu_pct:.0f}%" for r in phases),
                    f"during {' / '.join(r.name for r in phases)}, % of one core (should be ~0)",
                )
            )
        final = res.final
        if final is not None:
            ok = res.stored == res.expected
            rows += [
                (
                    "telemetry points in victoria-metrics",
                    f"{res.stored:,}",
                    f"expected {res.expected:,}: "
                    + ("OK, nothing lost or duplicated" if ok else "MISMATCH"),
                ),
                (
                    "gateway SQLite commits",
                    f"{final.get('commits', 0):,}",
                    f"{final.get('received', 0) / max(1, final.get('commits', 0)):.1f} samples "
                    "per commit (whole run)",
                ),
                (
                    "gateway HTTP writes",
                    f"{final.get('write_batches', 0):,}",
                    f"{final.get('points_written', 0) / max(1, final.get('write_batches', 0)):.1f}"
                    " points per write (whole run)",
                ),
                (
                    "rejected samples",
                    str(final.get("rejected", "?")),
                    f"gateway exit code {res.gateway_rc}",
                ),
            ]
        width = max(len(r[0]) for r in rows)
        value_w = max(len(r[1]) for r in rows)
        print()
        print(f"pilotline throughput, {dt.date.today()}, {machine_line()}")
        print("-" * (width + value_w + 40))
        for label, value, note in rows:
            print(f"{label:<{width}}  {value:>{value_w}}  {note}")
        print("-" * (width + value_w + 40))
        if args.profile:
            print(f"gateway profile: {self.work / 'gateway.prof'} (python -m pstats, or snakeviz)")
        print_summary(summary, "throughput.py", args.argv, quick=args.quick)


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--machines", type=int, default=200, help="MQTT machines (default 200)")
    p.add_argument(
        "--steps",
        default=",".join(STEPS),
        help=f"comma-separated subset of {','.join(STEPS)} (default: all)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="total publish rate in msg/s for the ceiling and throughput steps (default: "
        "as fast as possible)",
    )
    p.add_argument("--seconds", type=float, default=30.0, help="publishing time per step")
    p.add_argument("--quick", action="store_true", help="a smoke run: a few seconds per step")
    p.add_argument("--publishers", type=int, default=1, help="publisher processes (default 1)")
    p.add_argument(
        "--client",
        choices=("raw", "paho"),
        default="raw",
        help="publisher: MQTT bytes on a socket (raw, default) or paho-mqtt",
    )
    p.add_argument(
        "--window", type=int, default=1000, help="QoS 1 messages in flight per publisher"
    )
    p.add_argument(
        "--backlog",
        type=int,
        default=20_000,
        help="most messages the publishers run ahead of the consumer (broker queue bound)",
    )
    p.add_argument(
        "--latency-at",
        type=floats,
        default=[0.1, 0.5, 0.9],
        help="latency steps as fractions of the sustained rate (default 0.1,0.5,0.9)",
    )
    p.add_argument(
        "--latency-rates",
        type=floats,
        default=[],
        help="latency steps at these msg/s instead (e.g. 1000,5000; no throughput step needed)",
    )
    p.add_argument("--latency-seconds", type=float, default=0.0, help="default: seconds / 2")
    p.add_argument(
        "--cpu-rate", type=float, default=2000.0, help="samples/s of the cpu step (default 2000)"
    )
    p.add_argument("--cpu-seconds", type=float, default=0.0, help="default: --seconds")
    p.add_argument(
        "--idle-seconds", type=float, default=5.0, help="idle gateway before the cpu step"
    )
    p.add_argument("--profile", action="store_true", help="cProfile the gateway process")
    p.add_argument("--workdir", type=Path, default=None, help="keep logs and data here")
    args = p.parse_args(argv)
    args.argv = list(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = set(args.steps) - set(STEPS)
    if unknown:
        p.error(f"unknown steps {sorted(unknown)}; choose from {','.join(STEPS)}")
    if args.quick:
        args.seconds = 5.0
        args.latency_seconds = args.latency_seconds or 3.0
        args.cpu_seconds = args.cpu_seconds or 5.0
        args.idle_seconds = 2.0
    args.latency_seconds = args.latency_seconds or max(5.0, args.seconds / 2)
    args.cpu_seconds = args.cpu_seconds or args.seconds
    if args.machines < 1 or args.publishers < 1 or args.seconds <= 0:
        p.error("--machines, --publishers and --seconds must be positive")
    return args


ROLES: dict[str, Callable[[dict[str, Any]], None]] = {
    "_bare": role_bare,
    "_csub": role_csub,
    "_gateway": role_gateway,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if dispatch_role(argv, ROLES):
        return 0
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pl-bench-")))
        else:
            work = args.workdir.resolve()
            work.mkdir(parents=True, exist_ok=True)
        bench = Bench(args, work)
        try:
            return bench.run()
        except (TimeoutError, RuntimeError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            bench.children.stop_all()


if __name__ == "__main__":
    sys.exit(main())
