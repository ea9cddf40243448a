"""The Sparkplug host against an independent peer: an edge node run by Eclipse Tahu's
JavaScript client (tests/integration/sparkplug_node), through a real Mosquitto. Births,
data (a negative Int16 back as negative), a gap in seq answered with one rebirth request
that the node obeys, a device death and the node's death marking its machines offline at the
host's receive time; the primary host's retained STATE."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest
from tests.sparkplug_edge import (
    D,
    Edge,
    G,
    N,
    edges_fixture,  # noqa: F401 (the fixture `edges`)
    start_edge,
)
from tests.waiting import wait_for

from pilotline.collectors.mqtt.collector import Quarantined
from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.collectors.sparkplug.collector import SparkplugCollector
from pilotline.collectors.sparkplug.config import SparkplugHost
from pilotline.collectors.sparkplug.host import Binding
from pilotline.demo.broker import MosquittoBroker
from pilotline.rules.sample import Sample

pytestmark = pytest.mark.integration

BINDINGS = [
    Binding("laser-01", G, N, None,
            {"state": "Status/State", "power_w": "Power", "temp_c": "Temperature"}),
    Binding("press-07", G, N, D, {"state": "State", "count": "Count"}),
]
OFFLINE = {"laser-01": ("state", "NotAvailable"), "press-07": ("state", "NotAvailable")}


def values(samples: list[Sample], machine: str, signal: str) -> list[object]:
    return [s.values[signal] for s in samples if s.machine == machine and signal in s.values]


async def test_a_tahu_edge_node_through_mosquitto(
    broker: MosquittoBroker, edges: list[Edge]
) -> None:
    samples: list[Sample] = []
    rejected: list[Quarantined] = []
    collector = SparkplugCollector(
        MqttBrokerConfig(url=broker.url, reconnect_max_s=1),
        SparkplugHost(mode="primary", host_id="pilotline-test", reorder_s=0.5, heartbeat_s=1),
        BINDINGS,
        samples.append,
        rejected.append,
        client_id="sparkplug-test",
        offline_values=OFFLINE,
    )
    task = asyncio.create_task(collector.run())
    try:
        await wait_for(lambda: collector.connected)
        # the primary host's retained STATE, in Sparkplug 3.0's JSON
        out = await asyncio.to_thread(
            subprocess.run,
            ["mosquitto_sub", "-p", str(broker.port), "-t", "spBv1.0/STATE/pilotline-test",
             "-C", "1", "-W", "5"],
            capture_output=True, text=True, check=True,
        )
        state = json.loads(out.stdout)
        assert state["online"] is True
        assert isinstance(state["timestamp"], int)

        edge = await start_edge(broker, edges)
        await wait_for(lambda: "born 1" in edge.lines)
        await wait_for(lambda: values(samples, "press-07", "state") == ["Idle"])
        assert values(samples, "laser-01", "state") == ["Idle"]
        assert values(samples, "laser-01", "temp_c") == [-12.0]  # Int16, negative

        await edge.send("ndata", metrics=[
            {"alias": 1, "type": "String", "value": "Executing"},
            {"alias": 2, "type": "Double", "value": 812.5},
        ])
        await edge.send("ddata", metrics=[{"alias": 11, "type": "Int32", "value": -7}])
        await wait_for(lambda: values(samples, "press-07", "count") == [0.0, -7.0])
        assert values(samples, "laser-01", "state") == ["Idle", "Executing"]
        assert values(samples, "laser-01", "power_w") == [0.0, 812.5]

        # a message the host never sees: the gap waits reorder_s, then one rebirth request,
        # which the node answers with new births
        await edge.send("skip")
        await edge.send("ndata", metrics=[{"alias": 2, "type": "Double", "value": 100.0}])
        await wait_for(lambda: "reborn 2" in edge.lines)
        assert collector.host.rebirths == {"seq_gap": 1}
        assert collector.host.counts.get("seq_gap") == 1
        await wait_for(lambda: values(samples, "laser-01", "state")[-1] == "Executing")
        assert 100.0 in values(samples, "laser-01", "power_w")
        # after the rebirth the stream is in sequence again
        await edge.send("ndata", metrics=[{"alias": 2, "type": "Double", "value": 5.0}])
        await wait_for(lambda: values(samples, "laser-01", "power_w")[-1] == 5.0)
        assert collector.host.counts.get("seq_gap") == 1

        # heartbeats keep the quiet machines alive (report by exception)
        n = len(samples)
        await wait_for(lambda: any(not s.values for s in samples[n:]), timeout_s=5)

        # the device dies, then the node: offline at the host's receive time
        before = int(time.time() * 1000)
        await edge.send("ddeath")
        await wait_for(lambda: values(samples, "press-07", "state")[-1] == "NotAvailable")
        await edge.send("stop")
        await wait_for(lambda: values(samples, "laser-01", "state")[-1] == "NotAvailable")
        after = int(time.time() * 1000)
        offline = [s for s in samples if s.values.get("state") == "NotAvailable"]
        assert [s.machine for s in offline] == ["press-07", "laser-01"]
        assert all(before <= s.ts_ms <= after for s in offline)
        assert not collector.host.node_state(G, N)[0]
        assert rejected == []
        health = collector.health_report(after)
        assert health["healthy"]
        assert health["rebirths_requested"] == {"seq_gap": 1}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
