"""OPC UA collector benchmark: 500 variables on one asyncua server in another process.

Measures (1) the time to connect and subscribe every variable (monitored items created in
batches) and (2) data-change notifications per second handed out as Samples, while the
server rewrites all variables as fast as it can (``--bench-interval-ms 0``).

    .venv/bin/python benchmarks/opcua.py [--variables 500] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pilotline.collectors.opcua.collector import OpcuaCollector
from pilotline.collectors.opcua.config import OpcuaSource
from pilotline.demo.broker import free_port
from pilotline.demo.opcua_server import NAMESPACE
from pilotline.rules.sample import Sample


async def main(variables: int, seconds: float, interval_ms: float) -> None:
    port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
        [
            sys.executable,
            "-m",
            "pilotline.demo.opcua_server",
            "--port",
            str(port),
            "--bench",
            str(variables),
            "--bench-interval-ms",
            str(interval_ms),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    await asyncio.to_thread(proc.stdout.readline)
    per_machine = 100
    machines = {
        f"bench-{m}": OpcuaSource(
            endpoint=endpoint,
            nodes={
                f"v{i:04d}": f"nsu={NAMESPACE};s=bench.v{i:04d}"
                for i in range(m * per_machine, min(variables, (m + 1) * per_machine))
            },
            publishing_interval_ms=100,
            sampling_interval_ms=0,
        )
        for m in range((variables + per_machine - 1) // per_machine)
    }
    count = 0

    def on_sample(sample: Sample) -> None:
        nonlocal count
        if sample.values:
            count += 1

    with tempfile.TemporaryDirectory() as pki:
        collector = OpcuaCollector(endpoint, machines, on_sample, pki_dir=Path(pki))
        started = time.perf_counter()
        task = asyncio.create_task(collector.run())
        while not collector.health().connected:  # noqa: ASYNC110 - polling is the measure
            await asyncio.sleep(0.005)
        subscribed_s = time.perf_counter() - started
        await asyncio.sleep(1.0)  # let the initial values pass
        before, t0 = count, time.perf_counter()
        await asyncio.sleep(seconds)
        rate = (count - before) / (time.perf_counter() - t0)
        health = collector.health()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    proc.terminate()
    proc.wait()
    print(
        f"variables: {variables} ({health.monitored_items} monitored items, "
        f"{len(health.missing_nodes)} missing)"
    )
    print(f"connect + subscribe: {subscribed_s * 1000:.0f} ms")
    print(f"notifications handed out as Samples: {rate:,.0f}/s over {seconds:g} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--variables", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval-ms", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(main(args.variables, args.seconds, args.interval_ms))
