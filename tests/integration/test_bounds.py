"""Bounded memory against real peers: a flood does not grow the gateway, and a slow store
makes the broker hold the stream (MQTT 5 Receive Maximum), not the gateway's memory.

The full-size flood (1,000,000 messages) is ``benchmarks/flood.py``; here it runs at
50,000 so CI stays fast. RSS assertions are deliberately loose: they catch growth per
message (a leak of even 1 KiB per message would add ~50 MiB), not allocator noise.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from benchmarks.flood import run_flood

from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway, ServiceOptions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

MIB = 1024


def test_a_flood_of_50000_messages_is_counted_with_flat_memory() -> None:
    r = run_flood(50_000, machines=10, every_s=0.25, timeout_s=120)
    curve = " ".join(f"{k / MIB:.0f}" for k in r.rss_kib)
    print(f"gateway VmRSS (MiB, every 0.25 s): {curve}")
    assert r.published == r.counted == 50_000
    assert len(r.rss_kib) >= 3
    first, _middle, last = r.thirds_max_kib()
    # Bounded: well under what holding the flood would take, whatever the baseline.
    assert r.peak_kib < r.baseline_kib + 120 * MIB, curve
    # Not growing: the end of the flood is not far above its beginning.
    assert last <= first + max(24 * MIB, first // 5), curve


SITE = """\
site: slow
mqtt: {{url: "{url}", receive_maximum: {receive_maximum}}}
store: {store}
api: 127.0.0.1:{api_port}
defaults: {{debounce_s: 1, stale_after_s: 600, min_idle_s: 60}}
zones:
  - id: z
    machines:
      - {{id: m-1, owner: o, state: {{signal: state}}, mqtt: {{topic: slow/m-1}}}}
"""

PUBLISH = """\
import json, sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, n = int(sys.argv[1]), int(sys.argv[2])
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="slow-pub")
c.max_inflight_messages_set(1000)
c.max_queued_messages_set(0)
c.connect("127.0.0.1", port)
c.loop_start()
base = int(time.time() * 1000) - n - 1000
infos = [c.publish("slow/m-1", json.dumps({"ts": base + i, "state": "Executing"}), qos=1)
         for i in range(n)]
for info in infos:
    info.wait_for_publish(60)
c.disconnect()
c.loop_stop()
"""


async def test_a_slow_store_is_absorbed_by_the_broker_not_by_memory(tmp_path: Path) -> None:
    """Every commit takes 30 ms: the gateway never has more than ``receive_maximum``
    messages unacknowledged nor more than ``commit_max_items`` staged; nothing is lost."""
    receive_maximum, messages = 100, 3_000
    with MosquittoBroker() as broker:
        path = tmp_path / "site.yaml"
        path.write_text(
            SITE.format(
                url=broker.url,
                receive_maximum=receive_maximum,
                store=tmp_path / "g.db",
                api_port=free_port(),
            )
        )
        options = ServiceOptions(commit_max_items=500)
        gateway = Gateway(load_config(path), options=options)
        slow_commit = gateway.store.commit
        unacked_at_commit: list[int] = []  # the peak: acks go out only after a commit

        def commit(**kwargs: object) -> None:
            assert gateway.mqtt is not None
            unacked_at_commit.append(gateway.mqtt.health().unacked)
            time.sleep(0.03)
            slow_commit(**kwargs)  # type: ignore[arg-type]

        gateway.store.commit = commit  # type: ignore[method-assign]
        task = asyncio.create_task(gateway.run(api=False))
        try:
            assert gateway.mqtt is not None
            for _ in range(200):
                if gateway.mqtt.health().subscribed:
                    break
                await asyncio.sleep(0.05)
            assert gateway.mqtt.health().subscribed
            publisher = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PUBLISH, str(broker.port), str(messages)
            )
            max_staged = 0
            deadline = time.monotonic() + 60
            while sum(gateway.metrics.samples.values()) < messages:
                assert time.monotonic() < deadline, gateway.metrics.samples
                max_staged = max(max_staged, len(gateway.staged))
                await asyncio.sleep(0.005)
            assert await asyncio.wait_for(publisher.wait(), 60) == 0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert sum(gateway.metrics.samples.values()) == messages
    # Without the bound the gateway takes whatever the socket holds (~1,000 per read).
    assert 0 < max(unacked_at_commit) <= receive_maximum
    assert gateway.mqtt.health().pauses > 0  # it did stop reading, and resumed
    assert max_staged <= options.commit_max_items
    assert gateway.metrics.acked == messages
