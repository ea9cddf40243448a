"""The OPC UA collector: one asyncua client per endpoint, subscriptions, reconnect forever.

Theory of operation
-------------------
``run()`` is a plain loop: connect, subscribe, watch, and when anything goes wrong tear the
client down and start again after a jittered backoff (1 s doubling, capped at
``reconnect_max_s``). Every connection is a *fresh* ``asyncua.Client`` (asyncua's own
auto-reconnect is off; reusing a client after a loss is where long-running OPC UA clients
hang), so a server restart always ends in a new session, new subscriptions and new monitored
items, with namespace indexes re-read from the server's NamespaceArray (``nsu=`` node ids).

One connection serves every machine on the endpoint. Machines with the same publishing
interval share a subscription; each subscription also monitors the server's CurrentTime
(``i=2258``), which changes every second. Each CurrentTime notification is a *heartbeat*:
a ``Sample`` with no values for every machine of that subscription, stamped at the
machine's last sample time, so a machine whose values hold still stays alive, and one whose
link is dead goes ``offline`` through the core's staleness rule. A subscription with no
heartbeat for ``heartbeat_timeout_s`` counts as a dead link (a hung server that keeps its
TCP connection open) and the connection is rebuilt. asyncua's watchdog reads the server
state every ``keepalive_s`` and reports a lost transport at once.

Monitored items are created in batches of at most ``max_items_per_call`` (lowered to the
server's MaxMonitoredItemsPerCall when it declares one). A node the server refuses
(``BadNodeIdUnknown``, an unknown namespace URI, ...) is reported by machine, signal and
node id, logged once, shown in ``health().missing_nodes``, and retried every
``retry_missing_s`` on the live connection; the other nodes keep working.

Notifications are consumed through asyncua's subscription iterator in the event loop, and
``on_sample``/``on_reject`` are called synchronously from there (no threads). The iterator's
queue is bounded: when it fills (the loop is starved), the connection is rebuilt, and the
new subscription's initial values bring every signal back to its current value.

The rooms around this one: ``items.py`` (the monitored items, their creation and the
missing nodes), ``samples.py`` (what a notification becomes), ``client.py`` (making, opening
and closing the asyncua client), ``health.py`` (``OpcuaHealth`` and the ``/health`` report).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import structlog
from asyncua import Client, ua
from asyncua.common.subscription import (
    DataChangeEvent,
    OverflowPolicy,
    StatusChangeEvent,
    Subscription,
)

from pilotline.collectors.backoff import equal_jitter
from pilotline.collectors.clock import wall_clock_ms
from pilotline.collectors.opcua.client import (
    KEEPALIVE_S,
    REQUEST_TIMEOUT_S,
    batch_size,
    close,
    connect,
    describe,
    make_client,
)
from pilotline.collectors.opcua.config import OpcuaSource, connection_conflicts
from pilotline.collectors.opcua.errors import OpcuaError, UntrustedServerError
from pilotline.collectors.opcua.health import OpcuaHealth, health_report
from pilotline.collectors.opcua.items import (
    CURRENT_TIME,
    Group,
    MonitoredItems,
    OpcuaMachine,
    item_request,
    machines_by_endpoint,
)
from pilotline.collectors.opcua.samples import Quarantined, SampleMaker
from pilotline.rules.sample import Sample

# OpcuaHealth, OpcuaMachine, Quarantined and machines_by_endpoint live in their own modules
# and stay importable from here, where the gateway and the tests import them.
__all__ = ["OpcuaCollector", "OpcuaHealth", "OpcuaMachine", "Quarantined", "machines_by_endpoint"]

log = structlog.get_logger("pilotline.collectors.opcua")

_FIRST_BACKOFF_S: Final = 1.0
_QUEUE_MAX: Final = 100_000
_WATCH_INTERVAL_S: Final = 0.25


class _LinkLostError(Exception):
    """The connection must be rebuilt; the message says why."""


class OpcuaCollector:
    """Subscribes to the nodes of every machine on one endpoint and hands out ``Sample``s."""

    def __init__(
        self,
        endpoint: str,
        machines: Mapping[str, OpcuaMachine | OpcuaSource],
        on_sample: Callable[[Sample], None],
        on_reject: Callable[[Quarantined], None] | None = None,
        *,
        pki_dir: Path,
        clock_ms: Callable[[], int] = wall_clock_ms,
        reconnect_max_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        keepalive_s: float = KEEPALIVE_S,
        heartbeat_timeout_s: float = 15.0,
        retry_missing_s: float = 30.0,
        max_items_per_call: int = 1000,
    ) -> None:
        if not machines:
            raise ValueError(f"no machines for {endpoint}")
        self._machines: dict[str, OpcuaMachine] = {
            mid: m if isinstance(m, OpcuaMachine) else OpcuaMachine(m)
            for mid, m in machines.items()
        }
        wrong = [m for m, spec in self._machines.items() if spec.source.endpoint != endpoint]
        if wrong:
            raise ValueError(f"machines {', '.join(wrong)} are not on {endpoint}")
        conflicts = connection_conflicts((m, s.source) for m, s in self._machines.items())
        if conflicts:
            raise ValueError("; ".join(conflicts))
        self.endpoint = endpoint
        self.name = f"opcua:{endpoint}"
        self._source = next(iter(self._machines.values())).source  # connection settings
        self._clock_ms = clock_ms
        self._pki_dir = pki_dir
        self._reconnect_max_s = reconnect_max_s
        self._connect_timeout_s = connect_timeout_s
        self._request_timeout_s = request_timeout_s
        self._keepalive_s = keepalive_s
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._retry_missing_s = retry_missing_s
        self._max_items_per_call = max(1, max_items_per_call)

        self._items = MonitoredItems(endpoint, self._machines)
        self._samples = SampleMaker(
            endpoint,
            self._machines,
            self._items.by_handle,
            on_sample=on_sample,
            on_reject=on_reject,
            clock_ms=clock_ms,
        )
        self._connected = False
        self._since_ms: int | None = None
        self._down_since_ms: int | None = None
        self._last_error: str | None = None
        self._sessions = 0
        self._notifications = 0
        self._heartbeats = 0
        self._last_heartbeat_ms: int | None = None
        self._heartbeat_mono: dict[int, float] = {}

    # -- public -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, subscribe and reconnect forever; returns only by cancellation."""
        self._down_since_ms = self._clock_ms()
        failures = 0
        while True:
            was_up = False
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except UntrustedServerError as exc:
                self._last_error = str(exc)
            except (_LinkLostError, OpcuaError) as exc:
                self._last_error = str(exc)
            except (OSError, TimeoutError, ua.UaError, ValueError) as exc:
                self._last_error = describe(exc)
            except Exception as exc:
                self._last_error = describe(exc)
                log.exception("opcua.unexpected_error", endpoint=self.endpoint)
            finally:
                was_up = self._connected
                self._set_connected(False)
            if was_up:
                failures = 0
            delay = self._backoff(failures)
            failures += 1
            log.warning(
                "opcua.connection_lost" if was_up else "opcua.connect_failed",
                endpoint=self.endpoint,
                reason=self._last_error,
                retry_in_s=round(delay, 2),
            )
            await asyncio.sleep(delay)

    def resume(self, machine: str, ts_ms: int) -> None:
        """The time of ``machine``'s last sample before a restart: values read again after
        it that last changed earlier are stamped at that time (still current), not older."""
        if machine in self._machines:
            self._samples.stamper.stamp(machine, ts_ms)

    def health(self) -> OpcuaHealth:
        return OpcuaHealth(
            endpoint=self.endpoint,
            connected=self._connected,
            since_ms=self._since_ms,
            down_since_ms=None if self._connected else self._down_since_ms,
            last_error=self._last_error,
            reconnects=max(0, self._sessions - 1),
            machines=list(self._machines),
            monitored_items=len(self._items.live),
            missing_nodes=self._items.missing_nodes(),
            bad_values=self._samples.bad_values,
            uncertain_values=self._samples.uncertain_values,
            notifications=self._notifications,
            heartbeats=self._heartbeats,
            last_heartbeat_ms=self._last_heartbeat_ms,
            rejected=dict(self._samples.rejected),
        )

    # -- what the gateway reads (its Collector protocol) ----------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def health_report(self, now_ms: int) -> dict[str, Any]:
        """This collector's part of the gateway's ``/health``."""
        return health_report(self.health(), now_ms)

    def gauges(self) -> tuple[bool, int, int, int, dict[str, int]]:
        """connected, reconnects, values with a Bad status, data-change notifications, and
        no signals dropped (a subscription brings only the configured nodes)."""
        o = self.health()
        return o.connected, o.reconnects, o.bad_values, o.notifications, {}

    # -- connection state ---------------------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        return equal_jitter(failures, _FIRST_BACKOFF_S, self._reconnect_max_s)

    def _set_connected(self, connected: bool) -> None:
        now = self._clock_ms()
        if connected != self._connected or self._since_ms is None:
            self._since_ms = now
        if not connected:
            self._items.live.clear()
            if self._connected or self._down_since_ms is None:
                self._down_since_ms = now
        self._connected = connected

    # -- one connection -----------------------------------------------------------------------

    async def _session(self) -> None:
        """One connection from attempt to loss; ends only by an exception."""
        client = await make_client(
            self.endpoint,
            self._source,
            pki_dir=self._pki_dir,
            connect_timeout_s=self._connect_timeout_s,
            request_timeout_s=self._request_timeout_s,
            keepalive_s=self._keepalive_s,
        )
        lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def on_lost(exc: Exception) -> None:
            if not lost.done():
                lost.set_result(f"connection lost: {describe(exc)}")

        client.connection_lost_callback = on_lost
        tasks: list[asyncio.Task[None]] = []
        try:
            await connect(client, self.endpoint, self._source, self._connect_timeout_s)
            namespaces = await client.get_namespace_array()
            batch = await batch_size(client, self._max_items_per_call)
            self._sessions += 1
            self._items.missing.clear()
            subs: list[tuple[Group, Subscription]] = []
            for group in self._items.groups:
                sub = await self._subscribe(client, group, namespaces, batch)
                subs.append((group, sub))
            self._set_connected(True)
            self._last_error = None
            log.info(
                "opcua.connected",
                endpoint=self.endpoint,
                machines=len(self._machines),
                monitored_items=len(self._items.live),
                missing=len(self._items.missing),
                secure=f"{self._source.security_policy}/{self._source.security_mode}",
            )
            now = time.monotonic()
            for group, sub in subs:
                self._heartbeat_mono[group.heartbeat_handle] = now
                tasks.append(
                    asyncio.create_task(
                        self._consume(sub, group), name=f"opcua-consume-{group.interval_ms}"
                    )
                )
            tasks.append(
                asyncio.create_task(
                    self._watch(client, subs, namespaces, batch), name="opcua-watch"
                )
            )
            waiters: set[asyncio.Future[Any]] = {lost, *tasks}
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if lost in done:
                raise _LinkLostError(lost.result())
            for task in done:
                failure = task.exception()
                if failure is not None:
                    raise failure
            raise _LinkLostError("subscription closed")
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            await close(client)
            if not lost.done():
                lost.cancel()

    async def _subscribe(
        self, client: Client, group: Group, namespaces: Sequence[str], batch: int
    ) -> Subscription:
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = float(group.interval_ms)
        keepalive = max(
            1, round(max(self._keepalive_s * 1000, group.interval_ms) / group.interval_ms)
        )
        params.RequestedMaxKeepAliveCount = keepalive
        params.RequestedLifetimeCount = keepalive * 10
        params.MaxNotificationsPerPublish = 0  # no limit
        params.PublishingEnabled = True
        params.Priority = 0
        sub = await client.create_subscription(
            params, None, queue_maxsize=_QUEUE_MAX, overflow=OverflowPolicy.DISCONNECT
        )
        heartbeat = item_request(CURRENT_TIME, group.heartbeat_handle, 1000.0, None)
        results = await sub.create_monitored_items([heartbeat])
        if isinstance(results[0], ua.StatusCode):
            raise OpcuaError(
                f"{self.endpoint} refused to monitor CurrentTime (i=2258): {results[0].name}"
            )
        await self._items.create(sub, group.items, namespaces, batch)
        return sub

    async def _watch(
        self,
        client: Client,
        subs: list[tuple[Group, Subscription]],
        namespaces: Sequence[str],
        batch: int,
    ) -> None:
        """Heartbeat deadline per subscription, and the retry of missing nodes."""
        next_retry = time.monotonic() + self._retry_missing_s
        missing = self._items.missing
        while True:
            await asyncio.sleep(_WATCH_INTERVAL_S)
            now = time.monotonic()
            for group, _sub in subs:
                silent = now - self._heartbeat_mono.get(group.heartbeat_handle, now)
                if silent > self._heartbeat_timeout_s:
                    raise _LinkLostError(
                        f"no heartbeat from {self.endpoint} for {silent:.1f} s "
                        f"(publishing interval {group.interval_ms} ms)"
                    )
            if missing and now >= next_retry:
                next_retry = now + self._retry_missing_s
                namespaces = await client.get_namespace_array()
                for group, sub in subs:
                    retry = [i for i in group.items if i.handle in missing]
                    if retry:
                        await self._items.create(sub, retry, namespaces, batch)

    # -- notifications (the hot path) ---------------------------------------------------------

    async def _consume(self, sub: Subscription, group: Group) -> None:
        data = self._samples.data
        async for event in sub:
            if isinstance(event, DataChangeEvent):
                self._notifications += 1
                notification = event.data.monitored_item
                handle = notification.ClientHandle
                if handle == group.heartbeat_handle:
                    self._heartbeat(group)
                else:
                    data(handle, notification.Value)
            elif isinstance(event, StatusChangeEvent):
                status = event.notification.Status
                if status is not None and not status.is_good():
                    raise _LinkLostError(f"subscription status {status.name}")

    def _heartbeat(self, group: Group) -> None:
        self._heartbeat_mono[group.heartbeat_handle] = time.monotonic()
        self._heartbeats += 1
        self._last_heartbeat_ms = self._clock_ms()
        self._samples.heartbeat(group.machines)
