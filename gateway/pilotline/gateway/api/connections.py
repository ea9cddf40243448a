"""Which connections the API keeps: a request within a deadline, a share per client, a total.

uvicorn (checked against 0.55 with its h11 protocol) arms no timer before a connection's
first request, nor once a request has started to arrive: a client that connects and sends
nothing, or half a header, holds its connection for as long as it likes, and with
``limit_concurrency`` every such connection counts, so 256 of them made every route, /health
included, answer 503. Here:

- a connection must deliver its whole request (head and body) within ``request_timeout_s``
  of connecting, or of its first byte after a kept-alive pause; trickling bytes does not
  extend it; between requests uvicorn's own ``keep_alive_s`` closes an idle connection;
- one peer address holds at most ``max_connections_per_client`` connections (a trusted
  proxy carries many clients: it has no share, only the total); one more is closed at once;
- at most ``max_connections`` in all: a new connection closes the oldest one still waiting
  for its request (or idle between requests), so held connections from many addresses make
  room for a client that sends its request at once; if none is waiting, the new one is
  closed.

``ConnectionGuard`` is the bookkeeping (no sockets, no clock); ``GuardedH11Protocol`` is
uvicorn's h11 protocol reporting to it and closing what it says. Closures are counted in
``pilotline_api_connections_closed_total{reason}`` and logged as ``api.connection_closed``
at most once a minute per reason, with the count since.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol

import h11
import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ConnectionGuard", "ConnectionLimits", "GuardedH11Protocol", "guarded_protocol"]

log = structlog.get_logger("pilotline.gateway.api")

LOG_EVERY_S: Final = 60.0

# The reasons a connection is closed by the guard (the metric's label values).
PER_CLIENT: Final = "per_client"
EVICTED: Final = "evicted"
FULL: Final = "full"
REQUEST_TIMEOUT: Final = "request_timeout"


@dataclass(frozen=True)
class ConnectionLimits:
    request_timeout_s: float
    max_connections: int
    max_per_client: int
    shares: Callable[[str], bool] = lambda _peer: True
    """Whether a peer address is held to ``max_per_client`` (a trusted proxy is not)."""


class Closable(Protocol):
    def evict(self) -> None: ...


class ConnectionGuard:
    """The open connections, by peer and by how long each has waited for a request."""

    def __init__(self, limits: ConnectionLimits, closed: Counter[str]) -> None:
        self.limits = limits
        self.closed = closed  # by reason; shared with the gateway's Metrics
        self._peer: dict[Closable, str] = {}
        self._per_peer: Counter[str] = Counter()
        self._waiting: dict[Closable, None] = {}  # insertion order: the oldest first

    def __len__(self) -> int:
        return len(self._peer)

    def opened(self, conn: Closable, peer: str) -> str | None:
        """Register a new connection; the reason to close it at once, or None to keep it
        (having evicted the oldest waiting one when the total is reached)."""
        if self.limits.shares(peer) and self._per_peer[peer] >= self.limits.max_per_client:
            return self._count(PER_CLIENT)
        if len(self._peer) >= self.limits.max_connections:
            if not self._waiting:
                return self._count(FULL)
            oldest = next(iter(self._waiting))
            self.gone(oldest)
            self._count(EVICTED)
            oldest.evict()
        self._peer[conn] = peer
        self._per_peer[peer] += 1
        self._waiting[conn] = None
        return None

    def waiting(self, conn: Closable) -> None:
        """``conn`` awaits (the rest of) a request: it may be evicted, oldest first."""
        if conn in self._peer and conn not in self._waiting:
            self._waiting[conn] = None

    def busy(self, conn: Closable) -> None:
        """``conn`` has its request: it is being answered."""
        self._waiting.pop(conn, None)

    def timed_out(self) -> None:
        self._count(REQUEST_TIMEOUT)

    def gone(self, conn: Closable) -> None:
        """``conn`` is closed (idempotent)."""
        self._waiting.pop(conn, None)
        peer = self._peer.pop(conn, None)
        if peer is not None:
            self._per_peer[peer] -= 1
            if not self._per_peer[peer]:
                del self._per_peer[peer]

    def _count(self, reason: str) -> str:
        self.closed[reason] += 1
        return reason


class _Throttle:
    """One log line per reason at most every ``LOG_EVERY_S``, with the count since."""

    def __init__(self) -> None:
        self._next: dict[str, float] = {}
        self._since: Counter[str] = Counter()

    def note(self, now: float, reason: str, peer: str, open_now: int) -> None:
        self._since[reason] += 1
        if now < self._next.get(reason, 0.0):
            return
        self._next[reason] = now + LOG_EVERY_S
        log.warning(
            "api.connection_closed",
            reason=reason,
            client=peer,
            count=self._since.pop(reason),
            open=open_now,
        )


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol under a ``ConnectionGuard`` (bound by ``guarded_protocol``)."""

    guard: ClassVar[ConnectionGuard]
    throttle: ClassVar[_Throttle]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._peer = ""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer = self.client[0] if self.client else ""
        refused = self.guard.opened(self, self._peer)
        if refused is not None:
            self._note(refused)
            self.transport.close()
            return
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.gone(self)
        super().connection_lost(exc)

    def evict(self) -> None:
        self._note(EVICTED)
        self._close()

    def _watch(self) -> None:
        """After each step of uvicorn's: is a request still awaited, and since when."""
        if self.transport.is_closing():
            return
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self.guard.waiting(self)
            # Between requests uvicorn's keep-alive timer runs; the first byte of the next
            # request stops it, and from then on the request deadline does.
            if self.timeout_keep_alive_task is None and self._deadline is None:
                self._deadline = self.loop.call_later(
                    self.guard.limits.request_timeout_s, self._timed_out
                )
        else:
            self._disarm()
            self.guard.busy(self)

    def _timed_out(self) -> None:
        self._deadline = None
        self.guard.timed_out()
        self._note(REQUEST_TIMEOUT)
        self._close()

    def _close(self) -> None:
        self._disarm()
        self.guard.gone(self)
        if not self.transport.is_closing():
            self.transport.close()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _note(self, reason: str) -> None:
        self.throttle.note(self.loop.time(), reason, self._peer, len(self.guard))


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn builds each connection with, bound to ``guard``."""

    class Bound(GuardedH11Protocol):
        pass

    Bound.guard = guard
    Bound.throttle = _Throttle()
    return Bound
