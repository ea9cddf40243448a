"""`pilotline browse` against a real asyncua server in another process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.peers import DemoServer

from pilotline.demo.opcua_server import NAMESPACE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    with DemoServer() as s:
        yield s


def browse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pilotline.gateway.cli", "browse", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_browse_lists_variables_with_node_ids_types_values_and_access(
    server: DemoServer, tmp_path: Path
) -> None:
    done = browse(server.endpoint, "--pki", str(tmp_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    state = next(line for line in lines if "laser-cut-01.MachineryItemState.CurrentState" in line)
    assert state.startswith(f"nsu={NAMESPACE};s=laser-cut-01.MachineryItemState.CurrentState")
    assert "LocalizedText" in state
    assert "Machinery ItemState" in state  # the state machine is recognised
    writable = next(line for line in lines if "s=test.Value" in line)
    assert "Double" in writable
    assert " RW " in writable


def test_browse_prints_a_machines_fragment_to_paste(
    server: DemoServer, tmp_path: Path
) -> None:
    done = browse(server.endpoint, "--yaml", "--pki", str(tmp_path))
    assert done.returncode == 0, done.stderr
    fragment = yaml.safe_load(done.stdout)
    machines = {m["id"]: m for m in fragment["machines"]}
    assert "laser-cut-01" in machines
    laser = machines["laser-cut-01"]
    assert laser["opcua"]["endpoint"] == server.endpoint
    assert all(node.startswith("nsu=") for node in laser["opcua"]["nodes"].values())


def test_browse_an_unreachable_server_says_so(tmp_path: Path) -> None:
    done = browse("opc.tcp://127.0.0.1:1", "--pki", str(tmp_path))
    assert done.returncode == 1
    assert "cannot browse opc.tcp://127.0.0.1:1" in done.stderr
    assert "Traceback" not in done.stderr
