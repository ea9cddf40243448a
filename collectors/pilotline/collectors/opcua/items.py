"""The monitored items of one endpoint: built from its machines, created on each session.

Machines with the same publishing interval share a subscription (a ``Group``) and its
CurrentTime heartbeat item; every configured node is an ``Item`` with a client handle that
stays the same across sessions. On each new session the items are created again, in
batches: a node id is resolved against the session's NamespaceArray (``nsu=`` ids), a
deadband the server refuses is dropped for that item, and a node the server refuses is
*missing*: logged once, listed in the collector's health, retried while connected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import structlog
from asyncua import ua
from asyncua.common.subscription import Subscription

from pilotline.collectors.opcua.config import OpcuaSource

__all__ = [
    "CURRENT_TIME",
    "Group",
    "Item",
    "MonitoredItems",
    "OpcuaMachine",
    "item_request",
    "machines_by_endpoint",
    "resolve",
]

log = structlog.get_logger("pilotline.collectors.opcua")

CURRENT_TIME: Final = ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime)
_HEARTBEAT_HANDLE_BASE: Final = 1  # handles 1..n: one heartbeat per subscription
_ITEM_HANDLE_BASE: Final = 1_000
_FILTER_REFUSED: Final = frozenset(
    {
        ua.StatusCodes.BadFilterNotAllowed,
        ua.StatusCodes.BadMonitoredItemFilterUnsupported,
        ua.StatusCodes.BadMonitoredItemFilterInvalid,
        ua.StatusCodes.BadDeadbandFilterInvalid,
    }
)


@dataclass(frozen=True, slots=True)
class OpcuaMachine:
    """One machine on an endpoint: its source, and which signal gives its state.

    While ``state_signal``'s latest value is Bad the machine gets no heartbeats, so
    persistent Bad quality ends in ``offline`` as the core intends (without a state signal,
    any Bad signal pauses them).
    """

    source: OpcuaSource
    state_signal: str | None = None


def machines_by_endpoint(
    machines: Iterable[tuple[str, OpcuaSource, str | None]],
) -> dict[str, dict[str, OpcuaMachine]]:
    """Group (machine id, source, state signal) by endpoint: one collector per key."""
    out: dict[str, dict[str, OpcuaMachine]] = {}
    for machine, source, state_signal in machines:
        out.setdefault(source.endpoint, {})[machine] = OpcuaMachine(source, state_signal)
    return out


@dataclass(slots=True)
class Item:
    machine: str
    signal: str
    node: str  # as configured
    handle: int
    group: int  # publishing interval (ms) of its subscription
    sampling_ms: int
    deadband: float | None
    state_model: str | None


@dataclass(slots=True)
class Group:
    """Machines sharing a publishing interval share a subscription and its heartbeat."""

    interval_ms: int
    heartbeat_handle: int
    machines: list[str]
    items: list[Item]


class MonitoredItems:
    """Every item of one endpoint by handle, and which of them are live or missing now."""

    def __init__(self, endpoint: str, machines: Mapping[str, OpcuaMachine]) -> None:
        self.endpoint = endpoint
        self.by_handle: dict[int, Item] = {}
        self.groups: list[Group] = self._build(machines)
        self.live: set[int] = set()  # handles created on the current connection
        self.missing: dict[int, str] = {}  # handle -> why
        self._logged_missing: set[tuple[int, str]] = set()

    def _build(self, machines: Mapping[str, OpcuaMachine]) -> list[Group]:
        by_interval: dict[int, Group] = {}
        handle = _ITEM_HANDLE_BASE
        for machine, spec in machines.items():
            src = spec.source
            group = by_interval.get(src.publishing_interval_ms)
            if group is None:
                group = Group(
                    src.publishing_interval_ms, _HEARTBEAT_HANDLE_BASE + len(by_interval), [], []
                )
                by_interval[src.publishing_interval_ms] = group
            group.machines.append(machine)
            for signal, node in src.nodes.items():
                item = Item(
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
                self.by_handle[item.handle] = item
        return list(by_interval.values())

    def missing_nodes(self) -> list[str]:
        """Each missing node as "machine.signal node_id: why", by handle."""
        return [self._describe_missing(h) for h in sorted(self.missing)]

    async def create(
        self, sub: Subscription, items: Iterable[Item], namespaces: Sequence[str], batch: int
    ) -> None:
        """Create monitored items in batches; refused ones go to ``missing``."""
        requests: list[tuple[Item, ua.MonitoredItemCreateRequest]] = []
        for item in items:
            node_id = resolve(item.node, namespaces)
            if isinstance(node_id, str):
                self._report_missing(item, node_id)
                continue
            requests.append(
                (item, item_request(node_id, item.handle, item.sampling_ms, item.deadband))
            )
        for start in range(0, len(requests), batch):
            chunk = requests[start : start + batch]
            results = await sub.create_monitored_items([req for _, req in chunk])
            retry_plain: list[tuple[Item, ua.MonitoredItemCreateRequest]] = []
            for (item, req), result in zip(chunk, results, strict=True):
                if not isinstance(result, ua.StatusCode):
                    self._found(item)
                    continue
                if item.deadband is not None and result.value in _FILTER_REFUSED:
                    plain = item_request(
                        req.ItemToMonitor.NodeId, item.handle, item.sampling_ms, None
                    )
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

    def _found(self, item: Item) -> None:
        self.live.add(item.handle)
        if self.missing.pop(item.handle, None) is not None:
            log.info(
                "opcua.node_found",
                endpoint=self.endpoint,
                machine=item.machine,
                signal=item.signal,
                node=item.node,
            )

    def _report_missing(self, item: Item, why: str) -> None:
        self.missing[item.handle] = why
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
        item = self.by_handle[handle]
        return f"{item.machine}.{item.signal} {item.node}: {self.missing[handle]}"


def resolve(text: str, namespaces: Sequence[str]) -> ua.NodeId | str:
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


def item_request(
    node_id: ua.NodeId, handle: int, sampling_ms: float, deadband: float | None
) -> ua.MonitoredItemCreateRequest:
    """The request that monitors ``node_id``'s value under ``handle``."""
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
