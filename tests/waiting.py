"""Waiting on the event loop for what a task does (polling a child process from the test's
thread is ``tests.process.until``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from tests.fakes import Clock

from pilotline.demo.publisher import publish_timeline


class Runner(Protocol):
    def run(self) -> Coroutine[Any, Any, None]: ...


async def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def run_until(runner: Runner, condition: Callable[[], bool], settle_s: float = 0.5) -> None:
    """``runner.run()`` as a task until ``condition`` holds and ``settle_s`` more (to show
    that nothing more comes), then cancelled."""
    task = asyncio.create_task(runner.run())
    try:
        await wait_for(condition)
        await asyncio.sleep(settle_s)  # nothing more comes
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def publish_on_time(
    url: str, messages: Sequence[tuple[str, bytes]], clock: Clock, received: Callable[[], int]
) -> None:
    """Publish ``messages`` (JSON payloads with ``ts``) second by second, the test's clock set
    to each group's stamp before it goes out and each group received before the next: a
    scripted minute as a live source sends it, without waiting a real minute. (Published at
    once, the stamps would be up to a minute ahead of the gateway's clock and refused as
    ``future``.)"""
    groups: dict[int, list[tuple[str, bytes]]] = {}
    for topic, payload in messages:
        groups.setdefault(json.loads(payload)["ts"], []).append((topic, payload))
    for ts, group in sorted(groups.items()):
        clock.ms = ts
        expected = received() + len(group)
        await asyncio.to_thread(publish_timeline, url, group)
        await wait_for(lambda expected=expected: received() >= expected)  # type: ignore[misc]
