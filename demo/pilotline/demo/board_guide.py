"""What the demo prints to open the capacity board: its address and the demo's tokens.

The board signs a person in with an API token pasted into its sign-in page, so the demo
prints the tokens themselves (they are fresh for each run, and the next run revokes them),
with the file each one is kept in.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["board_guide"]


def board_guide(api: str, tokens: Mapping[str, Path]) -> list[str]:
    """Console lines: the board's address on the API ``api`` (host:port), then one line per
    token holder (``operator``, ``tenant demo-smallco``...) with its token and its file."""
    width = max((len(who) for who in tokens), default=0)
    lines = [f"board: http://{api}/board (sign in with one of these tokens)"]
    for who, path in tokens.items():
        token = path.read_text(encoding="ascii").strip()
        lines.append(f"  {who.ljust(width)}  {token}   ({path})")
    return lines
