"""What ``load_config`` raises: every mistake of a file, each with its place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ConfigError", "ConfigIssue", "render_issue"]


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One mistake: where (``zones[0].machines[2].state.map``, 1-based line) and what."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line} " if self.line is not None else ""
        what = f"{self.path}: {self.message}" if self.path else self.message
        return f"{where}{what}"


class ConfigError(Exception):
    """A configuration that cannot be used; ``issues`` lists every mistake found.

    ``str()`` lists them one per line, ``file:line path: message`` (with ``source``, the
    file's name).
    """

    def __init__(self, issues: Sequence[ConfigIssue], source: str | None = None) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        return "\n".join(render_issue(issue, self.source) for issue in self.issues)

    def __str__(self) -> str:
        return self._render()


def render_issue(issue: ConfigIssue, source: str | None) -> str:
    """``file:line path: message`` (``str(issue)`` without a file)."""
    if source is None:
        return str(issue)
    where = f"{source}:{issue.line}" if issue.line is not None else source
    what = f"{issue.path}: {issue.message}" if issue.path else issue.message
    return f"{where} {what}"
