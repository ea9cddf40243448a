"""API tokens for tests: made in the gateway's store, or with the real `pilotline token`."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

from pilotline.gateway.store import Store
from pilotline.gateway.store.tokens import Role

_names = itertools.count(1)


def bearer(store: Store, role: Role = Role.OPERATOR, subject: str | None = None) -> dict[str, str]:
    """Headers with a fresh token of ``role`` (an owner id or company id as ``subject``)."""
    token = store.tokens().create(f"test-{role}-{next(_names)}", role, subject, now_ms=0)
    return {"Authorization": f"Bearer {token}"}


def cli_bearer(command: list[str], config: Path, name: str = "tests") -> dict[str, str]:
    """An operator token made by the console script (``command``) for ``config``'s store."""
    done = subprocess.run(
        [*command, "token", "create", "--role", "operator", "--name", name, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return {"Authorization": f"Bearer {done.stdout.strip()}"}
