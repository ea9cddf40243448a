"""Soak: the demo plant at 10x its normal rate, for minutes, into victoria-metrics.

Run from the repository root::

    .venv/bin/python benchmarks/soak.py                     # 10 minutes
    .venv/bin/python benchmarks/soak.py --minutes 1         # a smoke run

Real peers in separate processes, on 127.0.0.1: a private Mosquitto (``max_queued_messages``
raised, ``pilotline.demo.broker``), a private victoria-metrics (``tests.peers``), the gateway
as ``pilotline run -c FILE`` (a subprocess, the embedded store plus the InfluxDB sink), and a
publisher (this file, ``--role publish``) driving ``pilotline.demo.plant.Plant``: ``--machines``
machines (the demo has 10), each publishing one payload every ``--interval`` seconds (the
demo: 1 s) at QoS 1. Defaults: 100 machines every 0.1 s, 1,000 messages/s, i.e. 10x the
demo's machines at 10x its rate; ``--machines 10`` is the plain 10x rate.

Every 30 s it prints the publish and gateway rates, the gateway's resident memory (VmRSS of
the process, sampled each second), the outbox depth and the points written (from /metrics,
with an operator token made by ``pilotline token create``). At the end it waits for the
outbox to drain, then checks that victoria-metrics holds every telemetry point published,
per machine (``telemetry_power_w``: every payload carries ``power_w``). Exit status 1 on any
loss or duplicate.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # the shared _launch.py, also when imported as benchmarks.X
    sys.path.append(HERE)

from _launch import (  # noqa: E402
    cpu_seconds,
    metrics,
    operator_token,
    pilotline_command,
    read_json,
    running,
    vm_rss_kib,
    wait_until,
    wall_ms,
    write_json,
)

REPORT_EVERY_S = 30.0


# -- role: publisher ---------------------------------------------------------------------------


def role_publish(spec: dict[str, Any]) -> None:
    """Publish the plant's payloads every ``interval`` s for ``seconds``; count per machine."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from pilotline.demo.plant import Plant

    plant = Plant(machines=spec["machines"], seed=11, dropouts=spec["dropouts"])
    by_topic = {m.topic: m.id for m in plant.machines}
    status = Path(spec["status"])
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="soak-publisher", protocol=mqtt.MQTTv311
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    acked = 0

    def on_publish(*_args: Any) -> None:
        nonlocal acked
        acked += 1

    client.on_publish = on_publish
    client.connect("127.0.0.1", spec["port"], keepalive=60)
    client.loop_start()
    interval: float = spec["interval"]
    seconds: float = spec["seconds"]
    counts: dict[str, int] = {}
    published = 0
    last_ts: dict[str, int] = {}
    start = time.monotonic()
    tick = 0
    stop = False

    def on_term(*_args: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    next_status = 0.0
    while not stop and (now := time.monotonic()) - start < seconds:
        ts = wall_ms()
        for topic, payload in plant.payloads(ts):
            machine = by_topic[topic]
            if last_ts.get(machine) == ts:  # one point per machine and millisecond
                continue
            last_ts[machine] = ts
            client.publish(topic, payload, qos=1)
            counts[machine] = counts.get(machine, 0) + 1
            published += 1
        if now >= next_status:
            write_json(status, {"published": published, "acked": acked, "done": False})
            next_status = now + 0.5
        tick = max(tick + 1, int((time.monotonic() - start) / interval) + 1)
        time.sleep(max(0.0, start + tick * interval - time.monotonic()))
    deadline = time.monotonic() + 60
    while acked < published and time.monotonic() < deadline:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
    write_json(status, {"published": published, "acked": acked, "done": True, "by_machine": counts})


# -- the benchmark -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between payloads")
    parser.add_argument("--dropouts", action="store_true", help="let machines go offline")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "publish":
        role_publish(json.loads(args.spec))
        return 0

    from tests.peers import VictoriaMetrics

    from pilotline.demo.broker import MosquittoBroker, free_port
    from pilotline.demo.plant import Plant
    from pilotline.demo.site import demo_site_yaml

    seconds = args.minutes * 60
    rate = args.machines / args.interval
    print(
        f"soak: {args.machines} machines every {args.interval:g} s ({rate:,.0f} msg/s) for"
        f" {args.minutes:g} min; Mosquitto -> pilotline run -> victoria-metrics",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory(prefix="pilotline-soak-") as tmp,
        MosquittoBroker() as broker,
        VictoriaMetrics() as vm,
    ):
        work = Path(tmp)
        api = f"127.0.0.1:{free_port()}"
        plant = Plant(machines=args.machines, seed=11, dropouts=args.dropouts)
        config = work / "site.yaml"
        config.write_text(
            demo_site_yaml(
                plant, mqtt_url=broker.url, store=work / "pilotline.db", api=api, influx_url=vm.url
            )
            + "log: {format: json, level: info}\n"
        )
        headers = operator_token(config, "soak")
        gateway_log = work / "gateway.log"
        with (
            gateway_log.open("wb") as log_out,
            running(
                [*pilotline_command(), "run", "-c", str(config)],
                stdout=log_out,
                stderr=subprocess.STDOUT,
            ) as gateway,
        ):

            def subscribed() -> bool:
                request = urllib.request.Request(f"http://{api}/health", headers=headers)
                with urllib.request.urlopen(request, timeout=5) as resp:
                    return bool(json.loads(resp.read())["mqtt"]["connected"])

            wait_until(subscribed, 60, "gateway connected", 0.2, tolerate=(Exception,))
            time.sleep(1.0)  # the SUBACK
            status = work / "publisher.json"
            spec = {
                "port": broker.port,
                "machines": args.machines,
                "interval": args.interval,
                "seconds": seconds,
                "dropouts": args.dropouts,
                "status": str(status),
            }
            publisher = subprocess.Popen(
                [sys.executable, __file__, "--role", "publish", "--spec", json.dumps(spec)]
            )
            started = time.monotonic()
            rows: list[dict[str, Any]] = []
            rss_curve: list[int] = []
            cpu_start = cpu_seconds(gateway.pid) or 0.0  # start-up excluded from the mean
            last = {
                "t": 0.0,
                "published": 0,
                "samples": 0.0,
                "cpu": cpu_seconds(gateway.pid) or 0.0,
            }
            next_report = REPORT_EVERY_S
            print(
                f"{'t_s':>6} {'published':>10} {'pub/s':>7} {'gw samples':>10} {'gw/s':>7}"
                f" {'written':>10} {'outbox':>7} {'RSS MiB':>8} {'peak MiB':>8} {'gw CPU%':>7}",
                flush=True,
            )
            while True:
                time.sleep(1.0)
                t = time.monotonic() - started
                rss = vm_rss_kib(gateway.pid)
                if rss is None or gateway.poll() is not None:
                    print(gateway_log.read_text()[-3000:])
                    raise SystemExit("the gateway died")
                rss_curve.append(rss)
                done = publisher.poll() is not None
                if t >= next_report or done:
                    next_report += REPORT_EVERY_S
                    pub = read_json(status) or {}
                    m = metrics(api, headers)
                    row = {
                        "t_s": round(t),
                        "published": int(pub.get("published", 0)),
                        "samples": m.get("pilotline_samples_total", 0.0),
                        "written": m.get("pilotline_points_written_total", 0.0),
                        "outbox": m.get("pilotline_outbox_depth", 0.0),
                        "rss_mib": rss / 1024,
                        "peak_mib": max(rss_curve) / 1024,
                        "cpu": cpu_seconds(gateway.pid) or 0.0,
                    }
                    dt = max(t - last["t"], 1e-9)
                    row["pub_rate"] = (row["published"] - last["published"]) / dt
                    row["gw_rate"] = (row["samples"] - last["samples"]) / dt
                    row["cpu_pct"] = 100 * (row["cpu"] - last["cpu"]) / dt
                    last = {
                        "t": t,
                        "published": row["published"],
                        "samples": row["samples"],
                        "cpu": row["cpu"],
                    }
                    rows.append(row)
                    print(
                        f"{row['t_s']:>6} {row['published']:>10,} {row['pub_rate']:>7,.0f}"
                        f" {row['samples']:>10,.0f} {row['gw_rate']:>7,.0f}"
                        f" {row['written']:>10,.0f} {row['outbox']:>7,.0f}"
                        f" {row['rss_mib']:>8.1f} {row['peak_mib']:>8.1f} {row['cpu_pct']:>7.0f}",
                        flush=True,
                    )
                if done:
                    break
            pub = read_json(status) or {}
            published = int(pub["published"])
            by_machine: dict[str, int] = pub["by_machine"]

            def settled() -> bool:
                m = metrics(api, headers)
                return (
                    m.get("pilotline_samples_total", 0) >= published
                    and m.get("pilotline_outbox_depth", 1) == 0
                )

            settle_start = time.monotonic()
            wait_until(
                settled, 300, "gateway caught up and outbox drained", 0.2, tolerate=(Exception,)
            )
            settle_s = time.monotonic() - settle_start
            final = metrics(api, headers)
            rss_end = vm_rss_kib(gateway.pid) or 0
        # The gateway is stopped (SIGTERM, flushes); read back what the store holds.
        stored: dict[str, int] = {}
        for series in vm.export('{__name__="telemetry_power_w"}'):
            machine = series["metric"].get("machine", "?")
            stored[machine] = stored.get(machine, 0) + len(series["timestamps"])
        missing = {m: n - stored.get(m, 0) for m, n in by_machine.items() if stored.get(m, 0) < n}
        extra = {
            m: stored[m] - by_machine.get(m, 0) for m in stored if stored[m] > by_machine.get(m, 0)
        }
        total_stored = sum(stored.values())

    n = len(rss_curve)
    thirds = [rss_curve[i * n // 3 : (i + 1) * n // 3] or [0] for i in range(3)]
    print()
    print("| figure | value |")
    print("|---|---|")
    acked = pub.get("acked", 0)
    print(
        f"| duration | {args.minutes:g} min, {args.machines} machines every {args.interval:g} s |"
    )
    print(f"| published (QoS 1) | {published:,} ({acked:,} acked by Mosquitto) |")
    print(f"| publish rate, mean | {published / seconds:,.0f} msg/s |")
    print(f"| gateway samples counted | {final.get('pilotline_samples_total', 0):,.0f} |")
    written = final.get("pilotline_points_written_total", 0)
    print(f"| points written (all measurements) | {written:,.0f} |")
    cpu_total = rows[-1]["cpu"] - cpu_start if rows else 0.0
    print(f"| gateway CPU, mean | {100 * cpu_total / max(seconds, 1):.0f}% of a core |")
    print(f"| store commits | {final.get('pilotline_store_commits_total', 0):,.0f} |")
    print(f"| telemetry points in victoria-metrics | {total_stored:,} |")
    print(f"| lost / extra | {sum(missing.values()):,} / {sum(extra.values()):,} |")
    print(f"| max outbox depth seen (30 s reports) | {max(r['outbox'] for r in rows):,.0f} |")
    print(f"| drained after publishing stopped | {settle_s:.1f} s |")
    print(
        f"| gateway RSS: first / last third max, peak, end | {max(thirds[0]) / 1024:.1f} /"
        f" {max(thirds[2]) / 1024:.1f} MiB, {max(rss_curve) / 1024:.1f} MiB,"
        f" {rss_end / 1024:.1f} MiB |"
    )
    if missing or extra:
        some_missing = dict(list(missing.items())[:10])
        some_extra = dict(list(extra.items())[:10])
        print(f"LOSS: missing {some_missing} extra {some_extra}")
        return 1
    print("OK: victoria-metrics holds every telemetry point published, once.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
