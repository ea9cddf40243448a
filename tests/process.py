"""Shared by the tests that run `pilotline` as a child process and poll it."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

T = TypeVar("T")


def pilotline_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m``."""
    script = Path(sys.executable).parent / "pilotline"
    if script.exists():
        return [str(script)]
    found = shutil.which("pilotline")
    if found:
        return [found]
    return [sys.executable, "-m", "pilotline.gateway.cli"]


def until(condition: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` on timeout.

    HTTP, OS and value errors count as "not yet" (a server still starting)."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
        except (httpx.HTTPError, OSError, ValueError) as exc:
            last_error = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            pytest.fail(
                f"timed out after {timeout_s} s waiting for {what} (last error: {last_error})"
            )
        time.sleep(0.05)
