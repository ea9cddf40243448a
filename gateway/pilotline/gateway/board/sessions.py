"""Board sessions: who signed in, until when, and the CSRF token of their forms.

Kept in memory: a restart signs everyone out (they sign in again with their token), and no
session secret ever reaches the disk. A session ends at sign-out, after ``ttl_s`` of
inactivity or at the latest ``max_age_s`` after sign-in, and as soon as its API token is
revoked (checked on every request: ``TokenRegistry.active``).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from pilotline.gateway.store.tokens import Principal

__all__ = ["COOKIE", "Session", "Sessions"]

COOKIE: Final = "pilotline_board"
MAX_SESSIONS: Final = 10_000
"""More open sessions than this drops the oldest first: sign-ins cannot fill the memory."""


@dataclass(slots=True)
class Session:
    id: str
    principal: Principal
    csrf: str
    started_s: float
    seen_s: float = field(default=0.0)

    def csrf_ok(self, presented: str | None) -> bool:
        # as bytes: compare_digest refuses a str that is not ASCII
        return presented is not None and hmac.compare_digest(
            presented.encode(), self.csrf.encode()
        )


class Sessions:
    def __init__(
        self,
        *,
        ttl_s: float = 8 * 3600,
        max_age_s: float = 24 * 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_age_s = max_age_s
        self._clock = clock
        self._open: dict[str, Session] = {}

    def open(self, principal: Principal) -> Session:
        now = self._clock()
        if len(self._open) >= MAX_SESSIONS:
            oldest = min(self._open.values(), key=lambda s: s.seen_s)
            del self._open[oldest.id]
        session = Session(
            id=secrets.token_urlsafe(32),
            principal=principal,
            csrf=secrets.token_urlsafe(32),
            started_s=now,
            seen_s=now,
        )
        self._open[session.id] = session
        return session

    def get(self, sid: str | None) -> Session | None:
        """The live session of that id, its inactivity clock reset; None otherwise."""
        if not sid:
            return None
        session = self._open.get(sid)
        if session is None:
            return None
        now = self._clock()
        if now - session.seen_s > self.ttl_s or now - session.started_s > self.max_age_s:
            del self._open[sid]
            return None
        session.seen_s = now
        return session

    def close(self, sid: str | None) -> None:
        if sid:
            self._open.pop(sid, None)

    def __len__(self) -> int:
        return len(self._open)
