"""Every event name the code logs is documented in docs/operator-guide.md (operators alert on
them, so a new or renamed one must be written down)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = ("rules", "collectors", "gateway", "demo")
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def logged_events() -> set[str]:
    names: set[str] = set()
    for path in (p for part in CODE for p in (ROOT / part).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and "." in node.args[0].value
                and " " not in node.args[0].value
            ):
                names.add(node.args[0].value)
    return names


def test_every_logged_event_is_documented() -> None:
    names = logged_events()
    assert len(names) > 30  # the scan finds the gateway's log lines at all
    doc = (ROOT / "docs" / "operator-guide.md").read_text()
    assert sorted(n for n in names if f"`{n}`" not in doc) == []
