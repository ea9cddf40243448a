"""The store's one exception."""

from __future__ import annotations

from pathlib import Path


class StoreError(RuntimeError):
    """The store file cannot be used (made by a newer pilotline, or not a pilotline store)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
