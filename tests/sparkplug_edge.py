"""An edge node run by Eclipse Tahu's JavaScript Sparkplug client (tests/integration/
sparkplug_node/edge.js), driven one JSON command a line: the Sparkplug tests' peer."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.waiting import wait_for

from pilotline.demo.broker import MosquittoBroker

G, N, D = "Plant1", "edge-1", "press-7"
NODE_DIR = Path(__file__).parent / "integration" / "sparkplug_node"


def _npm_ci() -> None:
    if not (NODE_DIR / "node_modules" / "sparkplug-client").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "npm is needed (scripts/setup --tests installs it)"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)


class Edge:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode().strip())

    async def send(self, op: str, **cmd: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **cmd}) + "\n").encode())
        await self.proc.stdin.drain()
        await wait_for(lambda: f"ok {op}" in self.lines)
        self.lines.remove(f"ok {op}")


@pytest.fixture(name="edges")
async def edges_fixture(broker: MosquittoBroker) -> AsyncIterator[list[Edge]]:
    _npm_ci()
    edges: list[Edge] = []
    yield edges
    for e in edges:
        if e.proc.returncode is None:
            e.proc.kill()
            await e.proc.wait()


async def start_edge(broker: MosquittoBroker, edges: list[Edge]) -> Edge:
    node = shutil.which("node")
    assert node is not None
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / "edge.js"), broker.url, G, N, D,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    edge = Edge(proc)
    edges.append(edge)
    return edge


