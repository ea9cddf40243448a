"""Waiting on the event loop for what a task does (polling a child process from the test's
thread is ``tests.process.until``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol


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
