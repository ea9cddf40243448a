"""One paho client's connection, its socket driven from the asyncio event loop.

paho tells the collector when the socket opens and closes and when it has something to
write (its ``on_socket_*`` callbacks); a ``Connection`` registers that socket with the loop
(``add_reader``/``add_writer``), calls ``loop_read()``/``loop_write()`` when it is ready and
``loop_misc()`` once a second for keep-alives, as aiomqtt 2.x does. No paho thread.

The blocking part of a connection attempt runs in a worker thread; socket callbacks paho
makes from there are queued (``in_loop``) and replayed in the loop once ``connect()`` has
returned (``connect_returned``), so paho is never used from two threads at once.

Reading is bounded by ``receive_maximum``: with that many QoS 1 messages not yet
acknowledged, the connection stops reading its socket (``pause``) until acknowledgements
free room (``resume``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from paho.mqtt.enums import MQTTErrorCode

from pilotline.collectors.mqtt.reader import BufferedClient

__all__ = ["MISC_INTERVAL_S", "Connection", "close_quietly"]

MISC_INTERVAL_S = 1.0
_MAX_PACKETS_PER_READ = 1000


@dataclass(slots=True, kw_only=True)
class Connection:
    """One paho client, from its connection attempt to its socket closing."""

    client: BufferedClient
    generation: int
    connack: asyncio.Future[str | None]  # None: accepted; else why not
    closed: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop
    receive_maximum: int  # unacked QoS 1 messages at which reading pauses
    on_pause: Callable[[], None]  # counts the pauses (the collector's health)
    loop_thread: int = field(default_factory=threading.get_ident)  # made in the loop's thread
    sock: Any = None
    misc_task: asyncio.Task[None] | None = None
    subscribe_mid: int | None = None
    deferred: list[Callable[[], None]] = field(default_factory=list)
    outstanding: dict[int, int] = field(default_factory=dict)  # mid -> delivery (acks.py)
    in_connect: bool = True  # paho callbacks may come from the connect thread
    paused: bool = False  # reader removed: ``receive_maximum`` messages await their ack

    # -- paho's callbacks, brought into the loop ----------------------------------------------

    def in_loop(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` now, or after ``connect()`` if called from the connect thread."""
        if self.in_connect and threading.get_ident() != self.loop_thread:
            self.deferred.append(callback)
        else:
            callback()

    def connect_returned(self) -> None:
        """paho's ``connect()`` is done: replay the callbacks it made from its thread."""
        self.in_connect = False
        for callback in self.deferred:
            callback()
        self.deferred.clear()

    def attach(self, sock: Any) -> None:
        if self.closed.done() or sock.fileno() < 0:
            return
        self.loop.add_reader(sock, self.readable, sock)
        self.misc_task = self.loop.create_task(
            self._misc_loop(), name=f"mqtt-misc-{self.generation}"
        )

    def add_writer(self, sock: Any) -> None:
        if self.closed.done() or sock.fileno() < 0:
            return
        self.loop.add_writer(sock, self._writable)

    def remove_writer(self, sock: Any) -> None:
        if sock.fileno() >= 0:
            self.loop.remove_writer(sock)

    def socket_closed(self, sock: Any) -> None:
        self._detach(sock)
        self.sock = None
        if not self.connack.done():
            self.connack.set_result("connection closed before CONNACK")
        if not self.closed.done():
            self.closed.set_result(None)

    # -- reading, with backpressure ---------------------------------------------------------

    def readable(self, sock: Any) -> None:
        # One readable event hands the gateway the whole burst the socket holds (bounded),
        # so one group commit covers many messages (measured: benchmarks/README.md); the
        # buffered reader parses it without a syscall per packet.
        if self.sock is not sock or self.paused:
            return  # a read scheduled by resume() after the connection closed or paused again
        limit = self.receive_maximum
        room = limit - len(self.outstanding)
        if room <= 0:
            self._pause(sock)
            return
        client = self.client
        client.loop_read(min(room, _MAX_PACKETS_PER_READ))
        if self.sock is sock and client.buffered_packet():
            # Stopped at a bound with whole packets read off the socket, which will not
            # signal them again: pause (``resume`` reads them) or come back next turn.
            if len(self.outstanding) >= limit:
                self._pause(sock)
            else:
                self.loop.call_soon(self.readable, sock)

    def _pause(self, sock: Any) -> None:
        """Backpressure: ``receive_maximum`` messages are not yet durable, so stop reading
        the socket (TCP then holds the broker, which keeps the messages) until acks free
        room. Keep-alive is safe: acks follow each commit, milliseconds later."""
        if not self.paused and sock.fileno() >= 0:
            self.loop.remove_reader(sock)
            self.paused = True
            self.on_pause()

    def resume(self) -> None:
        self.paused = False
        sock = self.sock
        if sock is None or self.closed.done() or sock.fileno() < 0:
            return
        self.loop.add_reader(sock, self.readable, sock)
        # Bytes paho or TLS already buffered make no readable event: read them now.
        self.loop.call_soon(self.readable, sock)

    def _writable(self) -> None:
        self.client.loop_write()

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            if self.client.loop_misc() == MQTTErrorCode.MQTT_ERR_NO_CONN:
                return

    # -- the end ------------------------------------------------------------------------------

    def disconnect(self) -> None:
        """Send DISCONNECT (the session stays on the broker) and close; used on cancel."""
        if self.sock is not None and not self.closed.done():
            with contextlib.suppress(OSError, ValueError):
                self.client.disconnect()
                self.client.loop_write()  # paho closes the socket once DISCONNECT is out
        self.teardown()

    def teardown(self) -> None:
        """Forget the socket and stop its tasks, whatever state paho is in."""
        if self.sock is not None:
            self._detach(self.sock)
            close_quietly(self.sock)
            self.sock = None
        if not self.connack.done():
            self.connack.set_result("connection closed")
        if not self.closed.done():
            self.closed.set_result(None)

    def _detach(self, sock: Any) -> None:
        if sock.fileno() >= 0:
            self.loop.remove_reader(sock)
            self.loop.remove_writer(sock)
        if self.misc_task is not None:
            self.misc_task.cancel()
            self.misc_task = None


def close_quietly(sock: Any) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
