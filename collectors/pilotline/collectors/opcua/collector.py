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
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from pilotline.collectors.backoff import equal_jitter
from pilotline.collectors.clock import wall_clock_ms
from pilotline.collectors.opcua.config import OpcuaSource, connection_conflicts
from pilotline.collectors.opcua.errors import OpcuaError, UntrustedServerError
from pilotline.collectors.opcua.parse import Rejection, Stamper, read_data_value
from pilotline.collectors.opcua.security import (
    check_server_trusted,
    client_identity,
    first_certificate,
)
from pilotline.collectors.opcua.states import state_name
from pilotline.rules.sample import Quality, Sample

__all__ = ["OpcuaCollector", "OpcuaHealth", "OpcuaMachine", "Quarantined", "machines_by_endpoint"]

log = structlog.get_logger("pilotline.collectors.opcua")

CURRENT_TIME: Final = ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime)
MAX_MONITORED_ITEMS_PER_CALL: Final = ua.NodeId(
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall
)
_FIRST_BACKOFF_S: Final = 1.0
_QUEUE_MAX: Final = 100_000
_HEARTBEAT_HANDLE_BASE: Final = 1  # handles 1..n: one heartbeat per subscription
_ITEM_HANDLE_BASE: Final = 1_000
_WATCH_INTERVAL_S: Final = 0.25
_CLOSE_TIMEOUT_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class OpcuaMachine:
    """One machine on an endpoint: its source, and which signal gives its state.

    While ``state_signal``'s latest value is Bad the machine gets no heartbeats, so
    persistent Bad quality ends in ``offline`` as the core intends (without a state signal,
    any Bad signal pauses them).
    """

    source: OpcuaSource
    state_signal: str | None = None


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A refused value (same fields as the MQTT collector's): ``topic`` is the node id."""

    topic: str
    reason: str
    head: bytes
    arrival_ms: int
    machine: str | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class OpcuaHealth:
    endpoint: str
    connected: bool  # a session with its subscriptions is up
    since_ms: int | None  # when ``connected`` last changed (None: never tried yet)
    down_since_ms: int | None  # since when the endpoint is unreachable (None while up)
    last_error: str | None
    reconnects: int  # sessions established after the first
    machines: list[str]
    monitored_items: int  # live data items (heartbeats not counted)
    missing_nodes: list[str]  # "machine.signal node_id: why", retried while connected
    bad_values: int  # notifications with a Bad status
    uncertain_values: int
    notifications: int  # data-change notifications received (heartbeats included)
    heartbeats: int
    last_heartbeat_ms: int | None
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Item:
    machine: str
    signal: str
    node: str  # as configured
    handle: int
    group: int  # publishing interval (ms) of its subscription
    sampling_ms: int
    deadband: float | None
    state_model: str | None


@dataclass(slots=True)
class _Group:
    """Machines sharing a publishing interval share a subscription and its heartbeat."""

    interval_ms: int
    heartbeat_handle: int
    machines: list[str]
    items: list[_Item]


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
        request_timeout_s: float = 10.0,
        keepalive_s: float = 5.0,
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
        self._on_sample = on_sample
        self._on_reject = on_reject
        self._clock_ms = clock_ms
        self._pki_dir = pki_dir
        self._reconnect_max_s = reconnect_max_s
        self._connect_timeout_s = connect_timeout_s
        self._request_timeout_s = request_timeout_s
        self._keepalive_s = keepalive_s
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._retry_missing_s = retry_missing_s
        self._max_items_per_call = max(1, max_items_per_call)

        self._groups: list[_Group] = []
        self._items: dict[int, _Item] = {}
        self._build_items()

        self._stamper = Stamper()
        self._bad: dict[tuple[str, str], bool] = {}  # (machine, signal) -> latest is Bad
        self._live: set[int] = set()  # handles created on the current connection
        self._missing: dict[int, str] = {}  # handle -> why
        self._logged_missing: set[tuple[int, str]] = set()
        self._connected = False
        self._since_ms: int | None = None
        self._down_since_ms: int | None = None
        self._last_error: str | None = None
        self._sessions = 0
        self._bad_values = 0
        self._uncertain_values = 0
        self._notifications = 0
        self._heartbeats = 0
        self._last_heartbeat_ms: int | None = None
        self._heartbeat_mono: dict[int, float] = {}
        self._rejected: dict[str, int] = {}

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
                self._last_error = _describe(exc)
            except Exception as exc:
                self._last_error = _describe(exc)
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
            self._stamper.stamp(machine, ts_ms)

    def health(self) -> OpcuaHealth:
        return OpcuaHealth(
            endpoint=self.endpoint,
            connected=self._connected,
            since_ms=self._since_ms,
            down_since_ms=None if self._connected else self._down_since_ms,
            last_error=self._last_error,
            reconnects=max(0, self._sessions - 1),
            machines=list(self._machines),
            monitored_items=len(self._live),
            missing_nodes=[self._describe_missing(h) for h in sorted(self._missing)],
            bad_values=self._bad_values,
            uncertain_values=self._uncertain_values,
            notifications=self._notifications,
            heartbeats=self._heartbeats,
            last_heartbeat_ms=self._last_heartbeat_ms,
            rejected=dict(self._rejected),
        )

    # -- what the gateway reads (its Collector protocol) ----------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def health_report(self, now_ms: int) -> dict[str, Any]:
        """This collector's part of the gateway's ``/health``."""
        o = self.health()
        why = None
        if not o.connected:
            down_s = None if o.down_since_ms is None else (now_ms - o.down_since_ms) // 1000
            since = "" if down_s is None else f" for {down_s} s"
            why = f"{o.endpoint} unreachable{since}: {o.last_error or 'connecting'}"
        elif o.missing_nodes:
            why = f"{len(o.missing_nodes)} node(s) missing: {'; '.join(o.missing_nodes[:5])}"
        return {
            "healthy": why is None,
            "why": why,
            "connected": o.connected,
            "since_ms": o.since_ms,
            "down_since_ms": o.down_since_ms,
            "reconnects": o.reconnects,
            "machines": o.machines,
            "monitored_items": o.monitored_items,
            "missing_nodes": o.missing_nodes,
            "bad_values": o.bad_values,
            "notifications": o.notifications,
            "last_heartbeat_ms": o.last_heartbeat_ms,
            "heartbeat_silent_for_s": None
            if o.last_heartbeat_ms is None
            else round((now_ms - o.last_heartbeat_ms) / 1000, 1),
        }

    def gauges(self) -> tuple[bool, int, int, int]:
        """connected, reconnects, values with a Bad status, data-change notifications."""
        o = self.health()
        return o.connected, o.reconnects, o.bad_values, o.notifications

    # -- set-up -------------------------------------------------------------------------------

    def _build_items(self) -> None:
        by_interval: dict[int, _Group] = {}
        handle = _ITEM_HANDLE_BASE
        for machine, spec in self._machines.items():
            src = spec.source
            group = by_interval.get(src.publishing_interval_ms)
            if group is None:
                group = _Group(
                    src.publishing_interval_ms, _HEARTBEAT_HANDLE_BASE + len(by_interval), [], []
                )
                by_interval[src.publishing_interval_ms] = group
            group.machines.append(machine)
            for signal, node in src.nodes.items():
                item = _Item(
                    machine=machine,
                    signal=signal,
                    node=node,
                    handle=handle,
                    group=src.publishing_interval_ms,
                    sampling_ms=src.sampling_interval_ms,
                    deadband=src.deadband.get(signal),
                    state_model=src.state_model if signal == src.state_signal else None,
                )
                handle += 1
                group.items.append(item)
                self._items[item.handle] = item
        self._groups = list(by_interval.values())

    def _backoff(self, failures: int) -> float:
        return equal_jitter(failures, _FIRST_BACKOFF_S, self._reconnect_max_s)

    def _set_connected(self, connected: bool) -> None:
        now = self._clock_ms()
        if connected != self._connected or self._since_ms is None:
            self._since_ms = now
        if not connected:
            self._live.clear()
            if self._connected or self._down_since_ms is None:
                self._down_since_ms = now
        self._connected = connected

    async def _make_client(self) -> Client:
        src = self._source
        client = Client(
            self.endpoint, timeout=self._request_timeout_s, watchdog_intervall=self._keepalive_s
        )
        client.name = client.description = "pilotline gateway"
        client.product_uri = "urn:pilotline"
        client.session_timeout = 120_000
        if src.secure:
            identity = client_identity(self._pki_dir, src.certificate_file, src.private_key_file)
            client.application_uri = identity.application_uri
            mode = getattr(ua.MessageSecurityMode, src.security_mode)
            endpoints = await asyncio.wait_for(
                client.connect_and_get_server_endpoints(), self._connect_timeout_s
            )
            try:
                ep = Client.find_endpoint(endpoints, mode, SecurityPolicyBasic256Sha256.URI)
            except ua.UaError:
                offered = sorted(
                    {
                        f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}"
                        for e in endpoints
                    }
                )
                raise OpcuaError(
                    f"{self.endpoint} offers no Basic256Sha256/{src.security_mode} endpoint "
                    f"(offered: {', '.join(offered)})"
                ) from None
            server_der = first_certificate(ep.ServerCertificate or b"")
            check_server_trusted(
                self.endpoint,
                server_der,
                pki_dir=self._pki_dir,
                trust_dir=src.trust_dir,
                pinned=src.server_certificate_file,
            )
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                str(identity.certificate),
                str(identity.private_key),
                server_certificate=server_der,
                mode=mode,
            )
        if src.username is not None:
            client.set_user(src.username)
            password = src.password()
            if password is not None:
                client.set_password(password)
        return client

    # -- one connection -----------------------------------------------------------------------

    async def _session(self) -> None:
        """One connection from attempt to loss; ends only by an exception."""
        client = await self._make_client()
        lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def on_lost(exc: Exception) -> None:
            if not lost.done():
                lost.set_result(f"connection lost: {_describe(exc)}")

        client.connection_lost_callback = on_lost
        tasks: list[asyncio.Task[None]] = []
        try:
            try:
                await asyncio.wait_for(client.connect(), self._connect_timeout_s)
            except TimeoutError:
                raise OpcuaError(
                    f"no session with {self.endpoint} within {self._connect_timeout_s:g} s"
                ) from None
            except ua.UaStatusCodeError as exc:
                raise OpcuaError(_explain_refusal(exc, self._source)) from exc
            namespaces = await client.get_namespace_array()
            batch = await self._batch_size(client)
            self._sessions += 1
            self._missing.clear()
            subs: list[tuple[_Group, Subscription]] = []
            for group in self._groups:
                sub = await self._subscribe(client, group, namespaces, batch)
                subs.append((group, sub))
            self._set_connected(True)
            self._last_error = None
            log.info(
                "opcua.connected",
                endpoint=self.endpoint,
                machines=len(self._machines),
                monitored_items=len(self._live),
                missing=len(self._missing),
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
            await _close(client)
            if not lost.done():
                lost.cancel()

    async def _batch_size(self, client: Client) -> int:
        try:
            limit = await client.get_node(MAX_MONITORED_ITEMS_PER_CALL).read_value()
        except (ua.UaError, TimeoutError, OSError):
            return self._max_items_per_call
        if isinstance(limit, int) and limit > 0:
            return min(self._max_items_per_call, limit)
        return self._max_items_per_call

    async def _subscribe(
        self, client: Client, group: _Group, namespaces: Sequence[str], batch: int
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
        heartbeat = _request(CURRENT_TIME, group.heartbeat_handle, 1000.0, None)
        results = await sub.create_monitored_items([heartbeat])
        if isinstance(results[0], ua.StatusCode):
            raise OpcuaError(
                f"{self.endpoint} refused to monitor CurrentTime (i=2258): {results[0].name}"
            )
        await self._create_items(sub, group.items, namespaces, batch)
        return sub

    async def _create_items(
        self, sub: Subscription, items: Iterable[_Item], namespaces: Sequence[str], batch: int
    ) -> None:
        """Create monitored items in batches; refused ones go to ``_missing``."""
        requests: list[tuple[_Item, ua.MonitoredItemCreateRequest]] = []
        for item in items:
            node_id = _resolve(item.node, namespaces)
            if isinstance(node_id, str):
                self._report_missing(item, node_id)
                continue
            requests.append((item, _request(node_id, item.handle, item.sampling_ms, item.deadband)))
        for start in range(0, len(requests), batch):
            chunk = requests[start : start + batch]
            results = await sub.create_monitored_items([req for _, req in chunk])
            retry_plain: list[tuple[_Item, ua.MonitoredItemCreateRequest]] = []
            for (item, req), result in zip(chunk, results, strict=True):
                if not isinstance(result, ua.StatusCode):
                    self._found(item)
                    continue
                if item.deadband is not None and result.value in _FILTER_REFUSED:
                    plain = _request(req.ItemToMonitor.NodeId, item.handle, item.sampling_ms, None)
                    retry_plain.append((item, plain))
                    log.warning(
                        "opcua.deadband_refused",
                        endpoint=self.endpoint,
                        machine=item.machine,
                        signal=item.signal,
                        node=item.node,
                        status=result.name,
                    )
                    continue
                self._report_missing(item, result.name)
            if retry_plain:
                again = await sub.create_monitored_items([req for _, req in retry_plain])
                for (item, _req), result in zip(retry_plain, again, strict=True):
                    if isinstance(result, ua.StatusCode):
                        self._report_missing(item, result.name)
                    else:
                        self._found(item)

    def _found(self, item: _Item) -> None:
        self._live.add(item.handle)
        if self._missing.pop(item.handle, None) is not None:
            log.info(
                "opcua.node_found",
                endpoint=self.endpoint,
                machine=item.machine,
                signal=item.signal,
                node=item.node,
            )

    def _report_missing(self, item: _Item, why: str) -> None:
        self._missing[item.handle] = why
        if (item.handle, why) not in self._logged_missing:
            self._logged_missing.add((item.handle, why))
            log.error(
                "opcua.node_missing",
                endpoint=self.endpoint,
                machine=item.machine,
                signal=item.signal,
                node=item.node,
                status=why,
                note="retried while connected; the other nodes keep working",
            )

    def _describe_missing(self, handle: int) -> str:
        item = self._items[handle]
        return f"{item.machine}.{item.signal} {item.node}: {self._missing[handle]}"

    async def _watch(
        self,
        client: Client,
        subs: list[tuple[_Group, Subscription]],
        namespaces: Sequence[str],
        batch: int,
    ) -> None:
        """Heartbeat deadline per subscription, and the retry of missing nodes."""
        next_retry = time.monotonic() + self._retry_missing_s
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
            if self._missing and now >= next_retry:
                next_retry = now + self._retry_missing_s
                namespaces = await client.get_namespace_array()
                for group, sub in subs:
                    retry = [i for i in group.items if i.handle in self._missing]
                    if retry:
                        await self._create_items(sub, retry, namespaces, batch)

    # -- notifications (the hot path) ---------------------------------------------------------

    async def _consume(self, sub: Subscription, group: _Group) -> None:
        async for event in sub:
            if isinstance(event, DataChangeEvent):
                self._notifications += 1
                notification = event.data.monitored_item
                handle = notification.ClientHandle
                if handle == group.heartbeat_handle:
                    self._heartbeat(group, notification.Value)
                else:
                    self._data(handle, notification.Value)
            elif isinstance(event, StatusChangeEvent):
                status = event.notification.Status
                if status is not None and not status.is_good():
                    raise _LinkLostError(f"subscription status {status.name}")

    def _heartbeat(self, group: _Group, dv: ua.DataValue | None) -> None:
        self._heartbeat_mono[group.heartbeat_handle] = time.monotonic()
        self._heartbeats += 1
        self._last_heartbeat_ms = self._clock_ms()
        for machine in group.machines:
            if self._heartbeat_paused(machine):
                continue
            ts = self._stamper.last(machine)
            if ts is None:
                continue  # nothing to keep alive yet
            self._emit(Sample(machine, ts, {}))

    def _heartbeat_paused(self, machine: str) -> bool:
        signal = self._machines[machine].state_signal
        if signal is not None:
            return self._bad.get((machine, signal), False)
        return any(bad for (m, _s), bad in self._bad.items() if m == machine)

    def _data(self, handle: int, dv: ua.DataValue | None) -> None:
        item = self._items.get(handle)
        if item is None:
            return
        arrival = self._clock_ms()
        reading = read_data_value(dv, arrival)
        if isinstance(reading, Rejection):
            self._reject(item, reading, arrival, dv)
            return
        self._bad[(item.machine, item.signal)] = reading.quality is Quality.BAD
        if reading.quality is Quality.BAD:
            self._bad_values += 1
        elif reading.quality is Quality.UNCERTAIN:
            self._uncertain_values += 1
        ts = self._stamper.stamp(item.machine, reading.ts_ms)
        value = reading.value
        if value is None:
            sample = Sample(item.machine, ts, {}, reading.quality)
        else:
            if item.state_model is not None:
                value = state_name(item.state_model, value)
            sample = Sample(item.machine, ts, {item.signal: value}, reading.quality)
        self._emit(sample)

    def _emit(self, sample: Sample) -> None:
        try:
            self._on_sample(sample)
        except Exception as exc:  # a consumer bug must not stop the collector
            log.exception("opcua.callback_failed", machine=sample.machine, error=repr(exc))

    def _reject(
        self, item: _Item, rejection: Rejection, arrival: int, dv: ua.DataValue | None
    ) -> None:
        count = self._rejected.get(rejection.reason, 0)
        self._rejected[rejection.reason] = count + 1
        if count == 0:
            log.warning(
                "opcua.value_rejected",
                endpoint=self.endpoint,
                machine=item.machine,
                signal=item.signal,
                node=item.node,
                reason=rejection.reason,
                detail=rejection.detail,
                note="logged once per reason; later ones are only counted",
            )
        if self._on_reject is None:
            return
        head = repr(dv.Value if dv is not None else None).encode("utf-8", "replace")[:256]
        try:
            self._on_reject(
                Quarantined(
                    topic=item.node,
                    reason=rejection.reason,
                    head=head,
                    arrival_ms=arrival,
                    machine=item.machine,
                    detail=f"{item.signal}: {rejection.detail}",
                )
            )
        except Exception as exc:
            log.exception("opcua.callback_failed", machine=item.machine, error=repr(exc))


# -- helpers ------------------------------------------------------------------------------------

_FILTER_REFUSED: Final = frozenset(
    {
        ua.StatusCodes.BadFilterNotAllowed,
        ua.StatusCodes.BadMonitoredItemFilterUnsupported,
        ua.StatusCodes.BadMonitoredItemFilterInvalid,
        ua.StatusCodes.BadDeadbandFilterInvalid,
    }
)


def _resolve(text: str, namespaces: Sequence[str]) -> ua.NodeId | str:
    """The configured node id with its namespace index for this session, or why not."""
    try:
        parsed = ua.NodeId.from_string(text)
    except (ValueError, ua.UaError) as exc:
        return f"invalid node id: {exc}"
    uri = getattr(parsed, "NamespaceUri", None)
    if not uri:
        return ua.NodeId(parsed.Identifier, parsed.NamespaceIndex, parsed.NodeIdType)
    try:
        index = list(namespaces).index(uri)
    except ValueError:
        return f"namespace {uri!r} is not in the server's NamespaceArray"
    return ua.NodeId(parsed.Identifier, index, parsed.NodeIdType)


def _request(
    node_id: ua.NodeId, handle: int, sampling_ms: float, deadband: float | None
) -> ua.MonitoredItemCreateRequest:
    rv = ua.ReadValueId()
    rv.NodeId = node_id
    rv.AttributeId = ua.AttributeIds.Value
    params = ua.MonitoringParameters()
    params.ClientHandle = handle
    params.SamplingInterval = float(sampling_ms)
    params.QueueSize = 10  # keep short bursts between publishes instead of the last value
    params.DiscardOldest = True
    if deadband is not None:
        flt = ua.DataChangeFilter()
        flt.Trigger = ua.DataChangeTrigger.StatusValue
        flt.DeadbandType = ua.DeadbandType.Absolute
        flt.DeadbandValue = deadband
        params.Filter = flt
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = rv
    request.MonitoringMode = ua.MonitoringMode.Reporting
    request.RequestedParameters = params
    return request


async def _close(client: Client) -> None:
    try:
        await asyncio.wait_for(client.disconnect(), _CLOSE_TIMEOUT_S)
    except (Exception, asyncio.CancelledError):  # noqa: BLE001 - tearing down a dead link
        client.disconnect_socket()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ua.UaStatusCodeError):
        return f"{type(exc).__name__}: {exc}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _explain_refusal(exc: ua.UaStatusCodeError, source: OpcuaSource) -> str:
    code = getattr(exc, "code", None)
    hint = ""
    if code in (
        ua.StatusCodes.BadCertificateUntrusted,
        ua.StatusCodes.BadSecurityChecksFailed,
        ua.StatusCodes.BadCertificateInvalid,
    ):
        hint = (
            ": the server does not trust pilotline's client certificate; add it to the "
            "server's trusted certificates"
        )
    elif code in (ua.StatusCodes.BadIdentityTokenRejected, ua.StatusCodes.BadUserAccessDenied):
        hint = f": check username {source.username!r} and its password"
    return f"session refused: {_describe(exc)}{hint}"


def machines_by_endpoint(
    machines: Iterable[tuple[str, OpcuaSource, str | None]],
) -> dict[str, dict[str, OpcuaMachine]]:
    """Group (machine id, source, state signal) by endpoint: one collector per key."""
    out: dict[str, dict[str, OpcuaMachine]] = {}
    for machine, source, state_signal in machines:
        out.setdefault(source.endpoint, {})[machine] = OpcuaMachine(source, state_signal)
    return out
