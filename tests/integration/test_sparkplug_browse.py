"""``pilotline browse mqtt://...``: the Sparkplug machines born on a real Mosquitto by Eclipse
Tahu's JavaScript edge node, printed as a fragment that, pasted into a site file, passes
``pilotline check``; and the browse publishes nothing (read-only)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from tests.peers import free_port
from tests.sparkplug_edge import (
    D,
    Edge,
    G,
    N,
    edges_fixture,  # noqa: F401 (the fixture `edges`)
    start_edge,
)
from tests.waiting import wait_for

from pilotline.collectors.sparkplug.payload import encode_rebirth
from pilotline.collectors.sparkplug.topic import node_topic
from pilotline.demo.broker import MosquittoBroker

pytestmark = pytest.mark.integration

PILOTLINE = str(Path(sys.executable).parent / "pilotline")


async def test_browse_prints_the_born_machines_as_a_fragment_check_accepts(
    tmp_path: Path, broker: MosquittoBroker, edges: list[Edge]
) -> None:
    seen: list[str] = []  # every topic on the broker but the births: the browse must add none
    watcher = paho.Client(CallbackAPIVersion.VERSION2, client_id="browse-watcher")
    watcher.on_message = lambda _c, _u, m: seen.append(m.topic)
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe("#")
    watcher.loop_start()
    browse = await asyncio.create_subprocess_exec(
        PILOTLINE, "browse", broker.url, "--seconds", "5",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    edge = await start_edge(broker, edges)
    await wait_for(lambda: "born 1" in edge.lines)
    # births are not retained: ask the node to rebirth (as a primary host would) until the
    # browse, whose start-up time is unknown here, has surely heard one
    while browse.returncode is None:
        watcher.publish(node_topic(G, "NCMD", N), encode_rebirth(0))
        try:
            async with asyncio.timeout(1):
                await browse.wait()
        except TimeoutError:
            pass
    out, err = await browse.communicate()
    watcher.loop_stop()
    watcher.disconnect()
    assert browse.returncode == 0, err.decode()
    text = out.decode()
    assert "# Plant1/edge-1: NBIRTH, 3 metric(s)" in text
    assert "#   Temperature: Int16 = -12" in text
    assert "#   State: String = 'Idle'" in text

    machines = yaml.safe_load(text)["machines"]
    assert machines == [
        {"id": "edge-1", "owner": "CHANGE-ME",
         "sparkplug": {"group": G, "node": N, "metrics": {
             "state": "Status/State", "power": "Power", "temperature": "Temperature"}},
         "state": {"signal": "state"}},
        {"id": "edge-1-press-7", "owner": "CHANGE-ME",
         "sparkplug": {"group": G, "node": N, "device": D, "metrics": {
             "state": "State", "count": "Count"}},
         "state": {"signal": "state"}},
    ]
    # only the node's own messages and the test's rebirth requests: nothing from the browse
    assert {t.split("/")[2] for t in seen if t.startswith("spBv1.0/")} <= {
        "NBIRTH", "DBIRTH", "NCMD", "NDEATH"}

    # pasted as it is (comments too) into a site file, with an owner: pilotline check passes
    fragment = text.split("machines:\n", 1)[1].replace("CHANGE-ME", "acme")
    site = tmp_path / "site.yaml"
    site.write_text(
        f"site: browsed\nmqtt:\n  url: {broker.url}\nsparkplug:\n  mode: passive\n"
        f"store: {tmp_path / 'gw.db'}\ndefaults:\n  offering: always\nzones:\n"
        "  - id: hall\n    machines:\n" + textwrap.indent(fragment, "  ")
    )
    check = await asyncio.to_thread(
        subprocess.run, [PILOTLINE, "check", "-c", str(site)], capture_output=True, text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr + site.read_text()
    assert "2 machine" in check.stdout, check.stdout


def test_browse_of_a_broker_that_is_not_there() -> None:
    done = subprocess.run(
        [PILOTLINE, "browse", f"mqtt://127.0.0.1:{free_port()}", "--seconds", "1"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 1
    assert "cannot listen on" in done.stderr
