"""Throughput benchmark: paho publishers -> Mosquitto -> gateway -> victoria-metrics.

Run from the repository root::

    .venv/bin/python benchmarks/throughput.py                # a few minutes
    .venv/bin/python benchmarks/throughput.py --quick        # about 20-30 s, a smoke run

Everything runs on 127.0.0.1 against real peers started here: a private Mosquitto (with
``max_queued_messages`` raised, see ``pilotline.demo.broker``) and a private victoria-metrics
(``tests.peers.VictoriaMetrics``). Every role runs in its own process, so publishers, the
subscriber under test and the gateway never share a GIL:

1. **ceiling**: a bare paho-mqtt 2.x subscriber (MQTT 5, QoS 1, automatic acks, counts and
   drops each message) receives the stream of ``--machines`` machines published as fast as
   possible for ``--seconds``.
2. **throughput**: the same stream goes to the real ``Gateway`` (a child process built the
   way ``pilotline run -c FILE`` builds it, API included, writing to victoria-metrics). The
   sustained rate is the number of samples over the time from the first publish to the
   moment victoria-metrics acknowledged the last telemetry point.
3. **latency**: the publishers send at a fixed rate (``--latency-rate``, default half the
   sustained rate of step 2) with ``ts`` = the publish time; the gateway's writer is wrapped
   so that, when victoria-metrics acknowledges a batch, each telemetry point's
   ``ack time - ts`` goes into a histogram (1 ms resolution below 1 s).

Publishers keep the broker's backlog for the consumer under test below ``--backlog``
messages (they read the consumer's status file), so a fast publisher cannot pile up more
than a few seconds of queue and the run ends shortly after publishing stops. The publish
rate, the time publishers spent held back by that bound and the CPU seconds of every
process are reported so the reader can tell which side limited.

The internal roles (``_publish``, ``_bare``, ``_gateway``) are this same file started with
a JSON spec; they are not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TOPIC = "bench/{zone}/{machine}/telemetry"
ZONE = "bench"
SITE = "bench-site"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- small helpers shared by every role --------------------------------------------------------


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def machine_id(i: int) -> str:
    return f"m-{i:04d}"


def topic_of(i: int) -> str:
    return TOPIC.format(zone=ZONE, machine=machine_id(i))


def write_json(path: Path, data: Any) -> None:
    """Atomically replace ``path`` (readers never see half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def die_with_parent() -> None:
    """Linux: get SIGTERM when the benchmark process dies, however it dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (children not included), from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (user+nice+system+irq+softirq+steal)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def vm_hwm_kib(pid: int) -> int | None:
    """Peak resident set size (VmHWM) of a live process, in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def wait_until(
    condition: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout_s:g} s")
        time.sleep(every_s)


# -- role: publisher ---------------------------------------------------------------------------


def role_publish(spec: dict[str, Any]) -> None:
    """Publish the machines ``spec["machines"]`` round-robin at QoS 1 for ``seconds``.

    Bounded three ways: at most ``window`` messages without PUBACK, at most ``rate`` msg/s
    (0: no limit), and at most ``backlog`` messages ahead of the consumer (whose status file
    says how many it has received; each of ``nproc`` publishers takes its share).
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    die_with_parent()
    machines: list[int] = spec["machines"]
    topics = [topic_of(i) for i in machines]
    seconds: float = spec["seconds"]
    rate: float = spec["rate"]
    window: int = spec["window"]
    backlog: int = spec["backlog"]
    nproc: int = spec["nproc"]
    consumer = Path(spec["consumer_status"]) if spec.get("consumer_status") else None
    received_base: int = spec.get("received_base", 0)
    out = Path(spec["out"])
    last_ts = [int(spec["ts_floor"])] * len(topics)

    acked = 0
    last_ack_ms = 0
    connected = threading.Event()

    def on_connect(*_args: Any) -> None:
        connected.set()

    def on_publish(*_args: Any) -> None:
        nonlocal acked, last_ack_ms
        acked += 1
        last_ack_ms = wall_ms()

    # Driven from this one thread (no loop_start): publish() then writes straight to the
    # socket, and client.loop(0) reads the PUBACKs. paho's network thread would cost a
    # socketpair wake-up and GIL hand-overs per message, several times slower.
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=spec["client_id"],
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect("127.0.0.1", spec["port"], keepalive=60)
    deadline = time.monotonic() + 10
    while not connected.is_set():
        if time.monotonic() > deadline:
            raise SystemExit("publisher: no CONNACK within 10 s")
        client.loop(0.05)

    published = 0
    throttled_s = 0.0
    received = 0
    next_status_read = 0.0
    first_ms = wall_ms()
    start = time.monotonic()
    end = start + seconds
    n = len(topics)
    k = 0
    power = 800.0
    while (now := time.monotonic()) < end:
        client.loop(0)  # PUBACKs in, pending bytes out
        allowed = window - (published - acked)
        if rate > 0:
            allowed = min(allowed, int((now - start) * rate) + 1 - published)
        if consumer is not None and backlog > 0:
            if now >= next_status_read:
                status = read_json(consumer)
                if status is not None:
                    received = int(status.get("received", 0)) - received_base
                next_status_read = now + 0.02
            ahead = backlog // nproc - (published - received // nproc)
            if ahead <= 0:
                throttled_s += 0.002
                client.loop(0.002)
                continue
            allowed = min(allowed, ahead)
        if allowed <= 0:
            client.loop(0.0005 if rate <= 0 else min(0.005, 1 / rate))
            continue
        for _ in range(min(allowed, 256)):
            ts = wall_ms()
            if ts <= last_ts[k]:
                ts = last_ts[k] + 1  # unique per machine: victoria-metrics dedups by ms
            last_ts[k] = ts
            power = 790.0 + (published % 97) / 4
            payload = f'{{"ts": {ts}, "power_w": {power}, "state": "Executing"}}'
            client.publish(topics[k], payload, qos=1)
            published += 1
            k = k + 1 if k + 1 < n else 0
    publish_end_ms = wall_ms()
    deadline = time.monotonic() + 60
    while acked < published and time.monotonic() < deadline:
        client.loop(0.01)
    client.disconnect()
    usage = os.times()
    write_json(
        out,
        {
            "published": published,
            "acked": acked,
            "first_ms": first_ms,
            "publish_end_ms": publish_end_ms,
            "last_ack_ms": last_ack_ms,
            "throttled_s": throttled_s,
            "cpu_s": usage.user + usage.system,
            "max_ts": max(last_ts),
        },
    )


# -- role: bare subscriber ---------------------------------------------------------------------


def role_bare(spec: dict[str, Any]) -> None:
    """A paho subscriber that only counts: the ceiling of one Python MQTT client."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    die_with_parent()
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


# -- role: gateway -----------------------------------------------------------------------------


def latency_bucket(ms: int) -> int:
    """1 ms buckets below 1 s, 10 ms below 10 s, 100 ms above: a bounded histogram."""
    if ms < 1_000:
        return ms
    if ms < 10_000:
        return ms - ms % 10
    return ms - ms % 100


class RecordingWriter:
    """Wraps the real InfluxDB writer; on each acknowledged batch, records per telemetry
    point ``ack time - ts`` under the current phase (set by the benchmark)."""

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
    die_with_parent()
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
    from pilotline.gateway.influx import InfluxClientWriter
    from pilotline.gateway.logs import configure_logging
    from pilotline.gateway.service import Gateway

    config = load_config(Path(spec["config"]))
    configure_logging(config.log.format, config.log.level)
    assert config.influx is not None
    writer = RecordingWriter(
        InfluxClientWriter(
            config.influx.url,
            config.influx.org,
            config.influx.bucket,
            config.influx.token(),
            timeout_s=config.influx.timeout_s,
        )
    )
    gateway = Gateway(config, writer=writer)
    status = Path(spec["status"])
    control = Path(spec["control"])
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(gateway.run(api=True))
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)

    def snapshot() -> dict[str, Any]:
        health = gateway.mqtt.health() if gateway.mqtt is not None else None
        drainer = gateway.drainer
        return {
            "phase": writer.phase,
            "received": sum(gateway.metrics.samples.values()),
            "rejected": sum(gateway.metrics.rejected.values()),
            "telemetry_acked": writer.acked,
            "last_ack_ms": writer.last_ack_ms,
            "outbox_depth": gateway.store.outbox_depth(),
            "points_written": drainer.stats().written if drainer is not None else 0,
            "commits": gateway.metrics.commits,
            "write_batches": drainer.stats().batches if drainer is not None else 0,
            "subscribed": bool(health and health.connected and health.subscribed),
        }

    async def report() -> None:
        while True:
            wanted = read_json(control)
            if wanted is not None and wanted.get("phase") != writer.phase:
                with writer.lock:
                    writer.phase = wanted["phase"]
            write_json(status, snapshot())
            await asyncio.sleep(0.05)

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


CONFIG = """\
site: {site}
mqtt:
  url: {mqtt_url}
  client_id: pilotline-bench-gateway
influx:
  url: {influx_url}
  org: pilot
  bucket: pilotline
store: {store}
api: 127.0.0.1:{api_port}
log:
  level: info
  format: json
defaults:
  debounce_s: 20
  stale_after_s: 60
  min_idle_s: 900
  publish_interval_s: 60
zones:
  - id: {zone}
    machines:
{machines}"""

MACHINE = """\
      - id: {id}
        owner: owner-{owner}
        capabilities: [laser-cutting]
        mqtt: {{topic: {topic}}}
        state: {{signal: state}}
"""


@dataclass
class Children:
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, role: str, spec: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), role, json.dumps(spec)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int | None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc, 10.0)


@dataclass
class PhaseResult:
    name: str
    published: int
    publish_rate: float
    throttled_pct: float
    received_rate: float
    seconds: float
    cpu: dict[str, float]
    publish_cpu_s: float
    system_busy_s: float

    @property
    def foreign_cpu_pct(self) -> float:
        """CPU used by processes outside this benchmark, in % of one core."""
        ours = sum(self.cpu.values()) + self.publish_cpu_s
        return max(0.0, (self.system_busy_s - ours) / self.seconds * 100)


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.work = workdir
        self.children = Children()
        self.ts_floor = 0
        self.peer_pids: dict[str, int] = {}
        self.phase_no = 0
        self.port = 0

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
        cpu0 = self.cpu_snapshot(pids)
        busy0 = system_busy_s()
        started = time.monotonic()
        procs = [
            self.children.start(
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
                },
                self.work / "publishers.log",
            )
            for p in range(nproc)
        ]
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
            received_rate=total / span,
            seconds=span,
            cpu={k: cpu1[k] - cpu0[k] for k in cpu1},
            publish_cpu_s=sum(r["cpu_s"] for r in results),
            system_busy_s=busy1 - busy0,
        )

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> int:
        from tests.peers import VictoriaMetrics

        from pilotline.demo.broker import MosquittoBroker, free_port

        broker = MosquittoBroker(datadir=self.work / "mosquitto")
        (self.work / "vm").mkdir(exist_ok=True)
        vm = VictoriaMetrics(datadir=self.work / "vm")
        try:
            broker.start()
            vm.start()
            assert broker.proc is not None
            assert vm.proc is not None
            self.port = broker.port
            peers = {"mosquitto": broker.proc.pid, "victoria-metrics": vm.proc.pid}
            self.say(
                f"mosquitto on :{broker.port}, victoria-metrics on :{vm.port}; workdir {self.work}"
            )
            ceiling = self.ceiling(peers)
            api_port = free_port()
            return self.pipeline(ceiling, peers, broker.url, vm, api_port)
        finally:
            self.children.stop_all()
            vm.stop()
            broker.stop()

    def ceiling(self, peers: dict[str, int]) -> PhaseResult:
        args = self.args
        status = self.work / "bare.json"
        self.say(f"ceiling: bare paho subscriber, {args.machines} topics, QoS 1")
        sub = self.children.start(
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

        def done(total: int) -> tuple[bool, int]:
            s = read_json(status) or {}
            return int(s.get("received", 0)) >= total, int(s.get("last_ms", 0))

        result = self.publish_phase(
            "ceiling",
            status,
            seconds=args.seconds,
            rate=args.rate,
            done=done,
            pids=peers | {"subscriber": sub.pid},
        )
        self.children.stop(sub)
        self.say(
            f"ceiling: {result.received_rate:,.0f} msg/s received "
            f"(publishers {result.publish_rate:,.0f} msg/s)"
        )
        return result

    def pipeline(
        self,
        ceiling: PhaseResult,
        peers: dict[str, int],
        mqtt_url: str,
        vm: Any,
        api_port: int,
    ) -> int:
        args = self.args
        cfg = self.work / "site.yaml"
        cfg.write_text(
            CONFIG.format(
                site=SITE,
                mqtt_url=mqtt_url,
                influx_url=vm.url,
                store=self.work / "gateway.db",
                api_port=api_port,
                zone=ZONE,
                machines="".join(
                    MACHINE.format(id=machine_id(i), owner=i % 7, topic=topic_of(i))
                    for i in range(args.machines)
                ),
            )
        )
        status = self.work / "gateway-status.json"
        control = self.work / "gateway-control.json"
        hist_path = self.work / "gateway-latency.json"
        write_json(control, {"phase": "warmup"})
        self.say(f"gateway: starting (config {cfg}, log {self.work / 'gateway.log'})")
        gw = self.children.start(
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

        def acked_after(base: int) -> Callable[[int], tuple[bool, int]]:
            def done(total: int) -> tuple[bool, int]:
                s = read_json(status) or {}
                if gw.poll() is not None:
                    raise RuntimeError(f"gateway died; see {self.work}/gateway.log")
                ok = int(s.get("telemetry_acked", 0)) - base >= total
                return ok, int(s.get("last_ack_ms", 0))

            return done

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
        set_phase("throughput")
        base = int((read_json(status) or {}).get("telemetry_acked", 0))
        self.say(f"throughput: {args.machines} machines, publishing for {args.seconds:g} s")
        through = self.publish_phase(
            "throughput",
            status,
            seconds=args.seconds,
            rate=args.rate,
            done=acked_after(base),
            pids=pids,
        )
        self.say(
            f"throughput: {through.received_rate:,.0f} samples/s sustained to the store "
            f"(publishers {through.publish_rate:,.0f} msg/s)"
        )
        lat_rate = args.latency_rate or max(float(args.machines), 0.5 * through.received_rate)
        set_phase("latency")
        base = int((read_json(status) or {}).get("telemetry_acked", 0))
        lat_seconds = args.latency_seconds or max(5.0, args.seconds / 2)
        self.say(f"latency: fixed rate {lat_rate:,.0f} msg/s for {lat_seconds:g} s")
        latency = self.publish_phase(
            "latency",
            status,
            seconds=lat_seconds,
            rate=lat_rate,
            done=acked_after(base),
            pids=pids,
            backlog=0,
        )
        set_phase("after")
        hwm = vm_hwm_kib(gw.pid)
        final = read_json(status) or {}
        rc = self.children.stop(gw, 30)
        hist = read_json(hist_path) or {}
        expected = warm.published + through.published + latency.published
        stored = self.stored_points(vm, expected)
        self.report(
            ceiling=ceiling,
            through=through,
            latency=latency,
            lat_rate=lat_rate,
            hist=hist,
            hwm_kib=hwm,
            final=final,
            expected=expected,
            stored=stored,
            gateway_rc=rc,
        )
        return 0 if stored == expected else 1

    def stored_points(self, vm: Any, expected: int) -> int:
        """Telemetry points victoria-metrics returns; polled a while, because points it
        acknowledged a moment ago can take a few seconds to become visible to export."""
        deadline = time.monotonic() + 20
        while True:
            stored = sum(len(s["values"]) for s in vm.export('{__name__="telemetry_power_w"}'))
            if stored >= expected or time.monotonic() > deadline:
                return stored
            time.sleep(0.5)

    # -- the report ------------------------------------------------------------------------

    def report(
        self,
        *,
        ceiling: PhaseResult,
        through: PhaseResult,
        latency: PhaseResult,
        lat_rate: float,
        hist: dict[str, list[list[int]]],
        hwm_kib: int | None,
        final: dict[str, Any],
        expected: int,
        stored: int,
        gateway_rc: int | None,
    ) -> None:
        args = self.args

        def pct(phase: str, q: float) -> float | None:
            buckets = hist.get(phase) or []
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

        def ms(v: float | None) -> str:
            return "n/a" if v is None else f"{v:,.0f} ms"

        def cpu(r: PhaseResult, name: str) -> str:
            return f"{r.cpu.get(name, 0.0) / r.seconds * 100:.0f}%"

        ratio = through.received_rate / ceiling.received_rate
        rows = [
            ("machines / publisher processes", f"{args.machines} / {args.publishers}", ""),
            (
                "ceiling: bare paho subscriber",
                f"{ceiling.received_rate:,.0f} msg/s",
                f"publishers {ceiling.publish_rate:,.0f} msg/s, held back "
                f"{ceiling.throttled_pct:.0f}% of the time",
            ),
            (
                "pipeline: sustained to the store",
                f"{through.received_rate:,.0f} samples/s",
                f"{through.published:,} samples in {through.seconds:.1f} s; publishers "
                f"{through.publish_rate:,.0f} msg/s, held back {through.throttled_pct:.0f}%",
            ),
            ("pipeline / ceiling", f"{ratio:.2f}", ""),
            (
                "latency, publish -> store ack",
                f"p50 {ms(pct('latency', 0.5))}",
                f"p99 {ms(pct('latency', 0.99))}, max {ms(pct('latency', 1.0))} "
                f"at {lat_rate:,.0f} msg/s ({latency.published:,} samples)",
            ),
            (
                "latency at saturation",
                f"p50 {ms(pct('throughput', 0.5))}",
                f"p99 {ms(pct('throughput', 0.99))} (backlog bound {args.backlog:,} msgs)",
            ),
            (
                "gateway peak RSS (VmHWM)",
                "n/a" if hwm_kib is None else f"{hwm_kib / 1024:,.0f} MiB",
                "",
            ),
            (
                "CPU during ceiling",
                f"subscriber {cpu(ceiling, 'subscriber')}",
                f"mosquitto {cpu(ceiling, 'mosquitto')}, publishers "
                f"{ceiling.publish_cpu_s / ceiling.seconds * 100:.0f}% (of one core)",
            ),
            (
                "CPU during throughput",
                f"gateway {cpu(through, 'gateway')}",
                f"mosquitto {cpu(through, 'mosquitto')}, victoria-metrics "
                f"{cpu(through, 'victoria-metrics')}, publishers "
                f"{through.publish_cpu_s / through.seconds * 100:.0f}%",
            ),
            (
                "CPU during latency",
                f"gateway {cpu(latency, 'gateway')}",
                f"at {lat_rate:,.0f} msg/s",
            ),
            (
                "CPU of other processes",
                f"{ceiling.foreign_cpu_pct:.0f}% / {through.foreign_cpu_pct:.0f}% / "
                f"{latency.foreign_cpu_pct:.0f}%",
                "during ceiling / throughput / latency, % of one core (should be ~0)",
            ),
            (
                "telemetry points in victoria-metrics",
                f"{stored:,}",
                f"expected {expected:,}: {'OK' if stored == expected else 'MISMATCH'}",
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
                f"{final.get('points_written', 0) / max(1, final.get('write_batches', 0)):.1f} "
                "points per write (whole run)",
            ),
            (
                "rejected samples",
                str(final.get("rejected", "?")),
                f"gateway exit code {gateway_rc}",
            ),
        ]
        width = max(len(r[0]) for r in rows)
        value_w = max(len(r[1]) for r in rows)
        print()
        print(
            f"pilotline throughput, {dt.date.today()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}"
        )
        print("-" * (width + value_w + 40))
        for label, value, note in rows:
            print(f"{label:<{width}}  {value:>{value_w}}  {note}")
        print("-" * (width + value_w + 40))
        if args.profile:
            print(f"gateway profile: {self.work / 'gateway.prof'} (python -m pstats, or snakeviz)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--machines", type=int, default=200, help="MQTT machines (default 200)")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="total publish rate in msg/s for the ceiling and throughput steps (default: "
        "as fast as possible)",
    )
    p.add_argument("--seconds", type=float, default=30.0, help="publishing time per step")
    p.add_argument("--quick", action="store_true", help="a ~25 s smoke run")
    p.add_argument("--publishers", type=int, default=1, help="publisher processes (default 1)")
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
        "--latency-rate",
        type=float,
        default=0.0,
        help="msg/s of the latency step (default: half the sustained pipeline rate)",
    )
    p.add_argument("--latency-seconds", type=float, default=0.0, help="default: seconds / 2")
    p.add_argument("--profile", action="store_true", help="cProfile the gateway process")
    p.add_argument("--workdir", type=Path, default=None, help="keep logs and data here")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds = 6.0
        args.latency_seconds = args.latency_seconds or 4.0
    if args.machines < 1 or args.publishers < 1 or args.seconds <= 0:
        p.error("--machines, --publishers and --seconds must be positive")
    return args


ROLES: dict[str, Callable[[dict[str, Any]], None]] = {
    "_publish": role_publish,
    "_bare": role_bare,
    "_gateway": role_gateway,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ROLES:
        ROLES[argv[0]](json.loads(argv[1]))
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
