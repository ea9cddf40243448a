"""The soft interlock (issue 15): each machine's permission to be used, sent where its
``interlock:`` says. An access signal for the machine's HMI or controller, never a safety
function: the machine's own safety circuits stay what protects people.

Theory of operation. Every ``interlock.interval_s``, at once when a booking changes (the
store's ``reservation_events`` grow), and at the core's next edge, ``tick`` asks the pure
core (``rules.booking.interlock.signal``) what each machine's signal is now. A signal that
says something new gets the machine's next ``seq``, committed to the store before it goes
out (store/interlock.py: a restart never goes back), then:

- MQTT: ``{"enabled", "reservation", "tenant", "until", "seq"}``, retained, QoS 1, on
  ``<prefix>/interlock/<machine>`` (interlock_mqtt.py: its own connection, every machine's
  latest message published again after each reconnect). At start every machine's current
  signal is published once, changed or not.
- OPC UA: the boolean node written and read back (interlock_opcua.py), one task per
  endpoint. A write that fails, or a readback that differs, is logged
  (``interlock.write_failed``, ``interlock.readback_mismatch``), counted
  (``pilotline_interlock_faults_total``), shown in ``/health`` (the node's state
  ``unknown``, the part unhealthy), raises the alert of an ``interlock: unknown`` rule
  (``alerts.rules``, through the normal alert pipeline: grouping, silences, channels; it
  resolves when the node reads back again) and is tried again every ``interlock.retry_s``.
  ``/health`` reports a node ``enabled`` only when it reads back true.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import structlog

from pilotline.gateway.api.metrics import Metrics
from pilotline.gateway.clock import Clock
from pilotline.gateway.config import SiteConfig
from pilotline.gateway.config.interlock import InterlockSpec
from pilotline.gateway.notify.mqtt.channel import topic_level
from pilotline.gateway.service.interlock_mqtt import interlock_publisher
from pilotline.gateway.service.interlock_opcua import NodeWriter, WriteFailedError
from pilotline.gateway.store import Store
from pilotline.gateway.store.interlock import Sent
from pilotline.gateway.timefmt import iso
from pilotline.rules.booking.interlock import HOLDING, next_change, signal

__all__ = ["Interlock", "interlock_payload", "interlock_topic"]

log = structlog.get_logger("pilotline.gateway.interlock")

POLL_S: Final = 0.25
"""How often the store is asked whether a booking changed, between evaluations."""
AHEAD_MS: Final = 3_600_000
"""Bookings read ahead of the time, so that the core can name its next edge."""


def interlock_topic(prefix: str, machine: str) -> str:
    return f"{prefix}/interlock/{topic_level(machine)}"


def interlock_payload(sent: Sent) -> bytes:
    """The retained message, exactly ``{"enabled", "reservation", "tenant", "until",
    "seq"}`` (``until``: ISO 8601 UTC, null while disabled)."""
    s = sent.signal
    body = {
        "enabled": s.enabled,
        "reservation": s.reservation,
        "tenant": s.tenant,
        "until": iso(s.until_ms),
        "seq": sent.seq,
    }
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class _Node:
    """One machine's OPC UA node: what it should say, and what it was last read to say."""

    machine: str
    writer: NodeWriter
    node: str
    readback: str
    wanted: bool | None = None
    confirmed: bool | None = None  # the value written and read back equal, last time
    read: bool | None = None
    error: str | None = None
    failures: int = 0
    due: float = 0.0  # time.monotonic() of the next attempt

    @property
    def state(self) -> Literal["enabled", "disabled", "unknown"]:
        """``enabled`` only when the node reads back true (never on our word alone)."""
        if self.error is None and self.read is not None and self.read is self.confirmed:
            return "enabled" if self.read else "disabled"
        return "unknown"


@dataclass
class _Endpoint:
    writer: NodeWriter
    nodes: list[_Node] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Interlock:
    def __init__(
        self,
        *,
        config: SiteConfig,
        store: Store,
        metrics: Metrics,
        clock_ms: Clock,
    ) -> None:
        self._store = store
        self._signals = store.interlock_signals()
        self._metrics = metrics
        self._clock_ms = clock_ms
        self._settings = settings = config.interlock
        self.prefix = settings.prefix(config.site)
        self.specs: dict[str, InterlockSpec] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._nodes: dict[str, _Node] = {}
        pki_dir = config.store.parent / "opcua-pki"  # the collectors' (service/collectors.py)
        for _zone, machine in config.machines():
            spec = config.interlock_of(machine.id)
            if spec is None:
                continue
            self.specs[machine.id] = spec
            if spec.node is not None and spec.readback is not None and machine.opcua:
                src = machine.opcua
                endpoint = self._endpoints.get(src.endpoint)
                if endpoint is None:
                    writer = NodeWriter(
                        src.endpoint, src, pki_dir=pki_dir, timeout_s=settings.timeout_s
                    )
                    endpoint = self._endpoints[src.endpoint] = _Endpoint(writer)
                node = _Node(machine.id, endpoint.writer, spec.node, spec.readback)
                endpoint.nodes.append(node)
                self._nodes[machine.id] = node
        wants_mqtt = any(spec.mqtt for spec in self.specs.values())
        self.publisher = (
            interlock_publisher(config.mqtt, config.site)
            if wants_mqtt and config.mqtt is not None
            else None
        )
        self._sent: dict[str, Sent] = {
            m: s for m, s in self._signals.last().items() if m in self.specs
        }
        self._announced: set[str] = set()  # machines whose signal went out in this run

    @property
    def active(self) -> bool:
        """Whether any machine has an interlock (else the gateway starts no task)."""
        return bool(self.specs)

    # -- the core, asked -------------------------------------------------------------------

    def tick(self, now_ms: int | None = None) -> int | None:
        """Evaluate every machine's signal at ``now_ms``; send those that changed (and, the
        first time in this run, every one). Returns the next edge (epoch ms), or None."""
        now = self._clock_ms() if now_ms is None else now_ms
        book = self._store.reservations()
        edge: int | None = None
        for machine, spec in self.specs.items():
            timing = spec.timing
            near = book.list(
                machine=machine,
                from_ms=now - timing.off_delay_ms,
                to_ms=now + timing.lead_ms + AHEAD_MS,
                statuses=HOLDING,
            )
            said = signal(near, now, timing)
            nxt = next_change(near, now, timing)
            if nxt is not None and (edge is None or nxt < edge):
                edge = nxt
            sent = self._sent.get(machine)
            if sent is None or sent.signal != said:
                sent = self._sent[machine] = self._signals.record(machine, said, now)
                self._metrics.interlock_changes[machine] += 1
                log.info(
                    "interlock.changed",
                    machine=machine,
                    enabled=said.enabled,
                    reservation=said.reservation,
                    tenant=said.tenant,
                    until=iso(said.until_ms),
                    seq=sent.seq,
                )
            elif machine in self._announced:
                continue
            self._announced.add(machine)
            self._send(spec, sent)
        return edge

    def _send(self, spec: InterlockSpec, sent: Sent) -> None:
        if spec.mqtt and self.publisher is not None:
            topic = interlock_topic(self.prefix, spec.machine)
            self.publisher.publish(topic, interlock_payload(sent))
        node = self._nodes.get(spec.machine)
        if node is not None and node.wanted is not sent.signal.enabled:
            node.wanted = sent.signal.enabled
            node.due = 0.0
            for endpoint in self._endpoints.values():
                if node in endpoint.nodes:
                    endpoint.wake.set()

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Evaluate and send until cancelled (the MQTT connection and the OPC UA sessions
        closed on the way out)."""
        if self.publisher is not None:
            self.publisher.start()
        try:
            async with asyncio.TaskGroup() as tasks:
                for url, endpoint in self._endpoints.items():
                    tasks.create_task(self._write_loop(endpoint), name=f"interlock-opcua-{url}")
                tasks.create_task(self._evaluate_loop(), name="interlock-evaluate")
        finally:
            if self.publisher is not None:
                self.publisher.stop()
            for endpoint in self._endpoints.values():
                with contextlib.suppress(Exception):
                    await endpoint.writer.close()

    async def _evaluate_loop(self) -> None:
        interval = self._settings.interval_s
        while True:
            now = self._clock_ms()
            edge: int | None = None
            try:
                version = self._signals.bookings_version()
                edge = self.tick(now)
            except sqlite3.Error as exc:  # the file locked longer than the busy timeout
                log.warning("interlock.evaluate_failed", error=str(exc))
                version = -1
            wait = interval if edge is None else min(interval, max(0.0, (edge - now) / 1000))
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(POLL_S, left))
                with contextlib.suppress(sqlite3.Error):
                    if self._signals.bookings_version() != version:
                        break

    async def _write_loop(self, endpoint: _Endpoint) -> None:
        while True:
            endpoint.wake.clear()
            now = time.monotonic()
            for node in endpoint.nodes:
                if node.wanted is not None and node.confirmed is not node.wanted and (
                    node.due <= now
                ):
                    await self._write(node)
            waiting = [n.due for n in endpoint.nodes
                       if n.wanted is not None and n.confirmed is not n.wanted]
            timeout = max(0.05, min(waiting) - time.monotonic()) if waiting else None
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can lose a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await endpoint.wake.wait()

    async def _write(self, node: _Node) -> None:
        wanted = node.wanted
        assert wanted is not None
        retry_s = self._settings.retry_s
        try:
            read = await node.writer.write(node.node, node.readback, wanted)
        except WriteFailedError as exc:
            previous = node.error
            self._fault(node, "write_failed", f"write failed: {exc}", None)
            if node.failures == 1 or node.error != previous:  # once per streak and cause
                log.warning(
                    "interlock.write_failed", machine=node.machine, endpoint=node.writer.endpoint,
                    node=node.node, wanted=wanted, error=str(exc), retry_s=retry_s,
                )
            return
        if read is not wanted:
            previous = node.error
            why = f"readback mismatch: {node.readback} reads {read} after writing {wanted}"
            self._fault(node, "readback_mismatch", why, read)
            if node.failures == 1 or node.error != previous:
                log.error(
                    "interlock.readback_mismatch", machine=node.machine,
                    endpoint=node.writer.endpoint, node=node.node, readback=node.readback,
                    wanted=wanted, read=read, retry_s=retry_s,
                )
            return
        if node.failures:
            log.info(
                "interlock.written", machine=node.machine, node=node.node, value=wanted,
                after_failures=node.failures,
            )
        node.read, node.confirmed, node.error, node.failures = read, wanted, None, 0

    def _fault(self, node: _Node, kind: str, why: str, read: bool | None) -> None:
        self._metrics.interlock_faults[(node.machine, kind)] += 1
        node.failures += 1
        node.read, node.confirmed, node.error = read, None, why
        node.due = time.monotonic() + self._settings.retry_s

    # -- what /health shows ----------------------------------------------------------------

    name = "interlock"

    def health_report(self, _now_ms: int) -> dict[str, Any]:
        """Each machine's signal as sent (with its seq) and, for an OPC UA node, what it was
        read back to say; unhealthy while a node does not read back or MQTT is down."""
        why: list[str] = []
        machines: dict[str, Any] = {}
        for machine in self.specs:
            sent = self._sent.get(machine)
            entry: dict[str, Any] = (
                {"enabled": None, "seq": None}
                if sent is None
                else {
                    "enabled": sent.signal.enabled,
                    "reservation": sent.signal.reservation,
                    "tenant": sent.signal.tenant,
                    "until": iso(sent.signal.until_ms),
                    "seq": sent.seq,
                }
            )
            node = self._nodes.get(machine)
            if node is not None:
                entry["opcua"] = {
                    "node": node.node,
                    "readback": node.readback,
                    "state": node.state,
                    "wanted": node.wanted,
                    "read": node.read,
                    "error": node.error,
                }
                if node.error is not None:
                    why.append(f"{machine}: {node.error}")
            machines[machine] = entry
        report: dict[str, Any] = {"topic_prefix": self.prefix}
        if self.publisher is not None:
            report["mqtt"] = self.publisher.health()
            if not self.publisher.connected:
                why.append(f"mqtt: not connected ({self.publisher.last_error or 'connecting'})")
        return {"healthy": not why, "why": "; ".join(why) or None, **report,
                "machines": machines}

    def unknown(self) -> dict[str, bool]:
        """Each OPC UA node's machine -> whether its last write did not read back (a refused
        write, a readback that differs), for ``interlock: unknown`` alert rules. A node not
        yet written in this run is left out: what the alert core restored stands until the
        node's first outcome (so an alert firing across a restart neither resolves nor fires
        again on its own)."""
        return {
            machine: node.error is not None
            for machine, node in self._nodes.items()
            if node.error is not None or node.confirmed is not None
        }

    def signals(self) -> Mapping[str, Sent]:
        """Each machine's signal as last decided."""
        return dict(self._sent)
