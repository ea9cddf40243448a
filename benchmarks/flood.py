"""Flood: a million MQTT messages as fast as one publisher can send them; the gateway's
resident memory must stay flat (the broker holds the backlog, not the gateway).

Run from the repository root::

    .venv/bin/python benchmarks/flood.py                        # 1,000,000 messages, minutes
    .venv/bin/python benchmarks/flood.py --messages 50000       # the CI size (test_bounds.py)
    .venv/bin/python benchmarks/flood.py --influx               # also through victoria-metrics

Real peers in separate processes on 127.0.0.1: a private Mosquitto whose
``max_queued_messages`` is raised above the flood (its default, 1000, would drop QoS 1
messages for a subscriber that falls behind), the gateway as ``pilotline run -c FILE`` (the
embedded store; ``--influx`` adds a victoria-metrics sink), and a publisher process (this
file, ``--role publish``) that sends ``--messages`` QoS 1 messages round-robin over
``--machines`` topics with no rate limit. The gateway's VmRSS (``/proc/PID/status``) is
sampled every second from the moment the publisher starts until the gateway has counted
every message (``pilotline_samples_total`` in /metrics); the curve, the peak and the
first-third/last-third maxima are printed. Mosquitto's RSS is sampled too: it is where the
backlog lives.

Why the gateway stays flat: it reads a message, stages its sample and acknowledges it only
once committed; MQTT 5 Receive Maximum (``mqtt.receive_maximum``) caps the messages in flight
to it, and a full staged batch (``commit_max_items``) is committed synchronously, so the
event loop stops reading until the commit is done and TCP pushes back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # the shared _launch.py, also when imported as benchmarks.X
    sys.path.append(HERE)

from _launch import (  # noqa: E402
    get_json,
    metrics,
    operator_token,
    pilotline_command,
    running,
    vm_rss_kib,
    wall_ms,
)

TOPIC = "flood/{machine}/telemetry"


def machine_id(i: int) -> str:
    return f"f-{i:03d}"


def metric(api: str, headers: dict[str, str], name: str) -> float:
    """The sum of a metric's samples in /metrics."""
    return metrics(api, headers).get(name, 0.0)


# -- role: publisher ---------------------------------------------------------------------------


def role_publish(spec: dict[str, Any]) -> None:
    """Publish ``messages`` QoS 1 messages as fast as possible; write a JSON summary."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    machines: int = spec["machines"]
    total: int = spec["messages"]
    topics = [TOPIC.format(machine=machine_id(i)) for i in range(machines)]
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="flood-publisher", protocol=mqtt.MQTTv311
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    acked = 0

    def on_publish(*_args: Any) -> None:
        nonlocal acked
        acked += 1

    client.on_publish = on_publish
    client.connect("127.0.0.1", spec["port"], keepalive=60)
    # One point per machine and millisecond, in order, ending about now (never "future").
    per_machine = total // machines + 1
    base = wall_ms() - per_machine - 1000
    started = time.monotonic()
    published = 0
    while published < total:
        client.loop(0)
        allowed = min(1000 - (published - acked), total - published)
        if allowed <= 0:
            client.loop(0.001)
            continue
        for _ in range(allowed):
            k = published % machines
            ts = base + published // machines
            payload = f'{{"ts": {ts}, "power_w": {800 + published % 97}, "state": "Executing"}}'
            client.publish(topics[k], payload, qos=1)
            published += 1
    publish_s = time.monotonic() - started
    deadline = time.monotonic() + 120
    while acked < published and time.monotonic() < deadline:
        client.loop(0.01)
    client.disconnect()
    Path(spec["out"]).write_text(
        json.dumps({"published": published, "acked": acked, "publish_s": publish_s})
    )


# -- the flood ---------------------------------------------------------------------------------


@dataclass
class FloodResult:
    messages: int
    published: int
    counted: int
    publish_s: float
    total_s: float
    rss_kib: list[int] = field(default_factory=list)
    """Gateway VmRSS, one sample per ``every_s`` from the publisher's start to the last count."""
    broker_rss_kib: list[int] = field(default_factory=list)
    baseline_kib: int = 0
    """Gateway VmRSS just before the flood."""
    every_s: float = 1.0

    @property
    def peak_kib(self) -> int:
        return max(self.rss_kib, default=0)

    def thirds_max_kib(self) -> tuple[int, int, int]:
        n = len(self.rss_kib)
        parts = [self.rss_kib[i * n // 3 : (i + 1) * n // 3] or [0] for i in range(3)]
        return max(parts[0]), max(parts[1]), max(parts[2])


def run_flood(
    messages: int,
    *,
    machines: int = 10,
    influx: bool = False,
    every_s: float = 1.0,
    timeout_s: float = 3600.0,
    progress: bool = False,
) -> FloodResult:
    """Start the peers, flood, sample RSS; returns when the gateway counted every message."""
    from tests.peers import VictoriaMetrics

    from pilotline.demo.broker import MosquittoBroker, free_port

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pilotline-flood-")))
        broker = stack.enter_context(MosquittoBroker(max_queued=messages + 100_000))
        api = f"127.0.0.1:{free_port()}"
        lines = [
            "site: flood",
            f"mqtt: {{url: {broker.url}}}",
            f"store: {work / 'pilotline.db'}",
            f"api: {api}",
            "log: {format: json, level: warning}",
            "defaults: {debounce_s: 1, stale_after_s: 600, min_idle_s: 60, offering: always}",
        ]
        if influx:
            vm = stack.enter_context(VictoriaMetrics())
            lines.append(f"influx: {{url: {vm.url}, org: o, bucket: b}}")
        lines += ["zones:", "  - id: flood", "    machines:"]
        for i in range(machines):
            lines.append(
                f"      - {{id: {machine_id(i)}, owner: o, state: {{signal: state}},"
                f" mqtt: {{topic: {TOPIC.format(machine=machine_id(i))}}}}}"
            )
        config = work / "site.yaml"
        config.write_text("\n".join(lines) + "\n")
        headers = operator_token(config, "flood")
        log_path = work / "gateway.log"
        log_out = stack.enter_context(log_path.open("wb"))
        gateway = stack.enter_context(
            running(
                [*pilotline_command(), "run", "-c", str(config)],
                stdout=log_out,
                stderr=subprocess.STDOUT,
            )
        )

        def failed(what: str) -> RuntimeError:
            return RuntimeError(f"{what}; gateway log: {log_path.read_text()[-2000:]}")

        deadline = time.monotonic() + 60
        while True:
            if gateway.poll() is not None:
                raise failed("the gateway exited")
            with contextlib.suppress(OSError, ValueError, KeyError):
                mqtt = get_json(f"http://{api}/health", headers)["mqtt"]
                if mqtt["connected"]:
                    break
            if time.monotonic() > deadline:
                raise failed("the gateway did not connect within 60 s")
            time.sleep(0.1)
        time.sleep(1.0)  # the SUBACK
        baseline = vm_rss_kib(gateway.pid) or 0
        out = work / "publisher.json"
        spec = {"port": broker.port, "machines": machines, "messages": messages, "out": str(out)}
        started = time.monotonic()
        publisher = stack.enter_context(
            running([sys.executable, __file__, "--role", "publish", "--spec", json.dumps(spec)])
        )
        result = FloodResult(messages, 0, 0, 0.0, 0.0, baseline_kib=baseline, every_s=every_s)
        counted = 0.0
        next_print = 0.0
        while True:
            time.sleep(every_s)
            rss = vm_rss_kib(gateway.pid)
            if rss is None or gateway.poll() is not None:
                raise failed("the gateway died")
            result.rss_kib.append(rss)
            if broker.proc is not None:
                result.broker_rss_kib.append(vm_rss_kib(broker.proc.pid) or 0)
            counted = metric(api, headers, "pilotline_samples_total")
            elapsed = time.monotonic() - started
            if progress and elapsed >= next_print:
                next_print += 10.0
                broker_mib = result.broker_rss_kib[-1] / 1024 if result.broker_rss_kib else 0
                print(
                    f"{elapsed:6.0f} s  counted {counted:>10,.0f}  gateway RSS"
                    f" {rss / 1024:6.1f} MiB  broker RSS {broker_mib:6.1f} MiB",
                    flush=True,
                )
            if counted >= messages and publisher.poll() is not None:
                break
            if elapsed > timeout_s:
                raise failed(f"only {counted:,.0f} of {messages:,} counted after {timeout_s:g} s")
        result.total_s = time.monotonic() - started
        summary = json.loads(out.read_text())
        result.published = int(summary["published"])
        result.publish_s = float(summary["publish_s"])
        result.counted = int(counted)
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--machines", type=int, default=10)
    parser.add_argument("--influx", action="store_true", help="also write to victoria-metrics")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "publish":
        role_publish(json.loads(args.spec))
        return 0
    print(
        f"flood: {args.messages:,} QoS 1 messages over {args.machines} topics, one publisher"
        f" process, no rate limit -> Mosquitto -> pilotline run"
        f"{' -> victoria-metrics' if args.influx else ' (embedded store)'}",
        flush=True,
    )
    r = run_flood(args.messages, machines=args.machines, influx=args.influx, progress=True)
    first, middle, last = r.thirds_max_kib()
    mib = 1024
    curve = " ".join(f"{k / mib:.0f}" for k in r.rss_kib)
    print(f"\ngateway VmRSS each second (MiB): {curve}")
    print(f"broker VmRSS each second (MiB): {' '.join(f'{k / mib:.0f}' for k in r.broker_rss_kib)}")
    print()
    print("| figure | value |")
    print("|---|---|")
    print(f"| messages published / counted by the gateway | {r.published:,} / {r.counted:,} |")
    print(
        f"| publisher done after | {r.publish_s:.1f} s ({r.published / r.publish_s:,.0f} msg/s) |"
    )
    print(f"| gateway counted all after | {r.total_s:.1f} s ({r.counted / r.total_s:,.0f} msg/s) |")
    print(f"| gateway RSS before the flood | {r.baseline_kib / mib:.1f} MiB |")
    print(f"| gateway RSS peak | {r.peak_kib / mib:.1f} MiB |")
    print(
        f"| gateway RSS max, first / middle / last third | {first / mib:.1f} / {middle / mib:.1f}"
        f" / {last / mib:.1f} MiB |"
    )
    print(f"| broker RSS peak (the backlog) | {max(r.broker_rss_kib, default=0) / mib:.1f} MiB |")
    ok = r.counted == r.messages == r.published
    print("OK: every message counted" if ok else "MISMATCH between published and counted")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
