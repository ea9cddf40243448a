"""Telling systemd how the service is: ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``.

With ``Type=notify`` systemd counts the gateway as started when it says ``READY=1`` (its
collectors' tasks run and the API listens: units ordered after it may use the API), and
with ``WatchdogSec=`` it kills and restarts the gateway when ``WATCHDOG=1`` stops coming.
The rules timer sends it on each turn (``RulesTimer``'s ``alive``), at most twice per
watchdog interval, so an event loop that hangs stops the pings.

The protocol (sd_notify(3)) is one datagram of ``KEY=VALUE`` lines on the unix socket named
by ``$NOTIFY_SOCKET``: a few lines of ``socket``, no dependency. Without that variable (not
under systemd, or under ``Type=exec``) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("pilotline.gateway.systemd")


class SystemdNotifier:
    def __init__(
        self,
        address: str | None,
        watchdog_s: float | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``address``: ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace),
        None for no systemd; ``watchdog_s``: the watchdog interval, None for no watchdog."""
        self.address = address
        self.watchdog_s = watchdog_s if address is not None else None
        self._monotonic = monotonic
        self._last_ping: float | None = None
        self._failed = False
        self._sock: socket.socket | None = None
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)  # a full queue drops a message, never blocks the loop
            # "@name" is an abstract socket: a leading NUL byte on the wire.
            self._target = "\0" + address[1:] if address.startswith("@") else address

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> SystemdNotifier:
        """From ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID`` (a watchdog
        meant for another process, as after a fork, is not ours to feed)."""
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            address = None  # vsock: and other transports of newer systemd: not supported
        watchdog_s = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog_s = int(usec) / 1_000_000
        return cls(address, watchdog_s)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def ready(self, status: str = "") -> None:
        self._send("READY=1", f"STATUS={status}" if status else "")

    def stopping(self, status: str = "") -> None:
        self._send("STOPPING=1", f"STATUS={status}" if status else "")

    def alive(self) -> None:
        """The loops run: ``WATCHDOG=1`` if half the watchdog interval has passed since the
        last one (systemd's advice), else nothing. Cheap enough to call on every turn."""
        if self.watchdog_s is None:
            return
        now = self._monotonic()
        if self._last_ping is not None and now - self._last_ping < self.watchdog_s / 2:
            return
        self._last_ping = now
        self._send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, *fields: str) -> None:
        if self._sock is None:
            return
        message = "\n".join(f for f in fields if f).encode()
        try:
            self._sock.sendto(message, self._target)
        except OSError as exc:
            if not self._failed:  # once: a socket that is gone stays gone
                self._failed = True
                log.warning("systemd.notify_failed", socket=self.address, error=str(exc))
