"""The Sparkplug host's state machine: pure, no I/O, no clock of its own.

Input: a message (its topic and decoded payload, or None when it did not decode) with the
host's receive time, ``tick(now)`` at ``next_deadline()`` and ``broker_lost(now)``. Output
(``Output``): samples for the machines bound to edge nodes and devices, ``history`` (values a
node flagged ``is_historical``: never the live state), offline marks, rebirth requests and
reports (what went wrong, for counters and logs).

Sessions (Sparkplug 3.0, chapter 5). An NBIRTH opens an edge node's session: its ``bdSeq``,
its metric definitions (name, alias, datatype) and ``seq`` (then each message of the node,
device ones included, carries the next one, modulo 256). DBIRTH defines a device's metrics;
NDATA/DDATA name metrics by alias. NDEATH closes the session only when its ``bdSeq`` is the
current NBIRTH's (a Will registered by an older connection and delivered late is stale and
ignored); NDEATH, DDEATH and the loss of the broker mark the machines ``offline`` at the
host's receive time.

Sequence. A message ahead of the next ``seq`` waits: a gap starts a reorder timer
(``reorder_ms``); the missing messages fill it, or at its end what waited is applied in
order, the gap reported and a rebirth requested. A message behind the next ``seq`` that was
seen lately is a duplicate (QoS 1 redelivers), dropped; one never seen means a second
source publishes as this node (two edge nodes configured with one id): reported, its data
dropped, and answered with no rebirth, which would only make the two fight.

Rebirths. Only a primary host asks (NCMD ``Node Control/Rebirth``); a passive one counts
what it would have asked for. Per node at most one request per cooldown, the cooldown
doubling while the node does not rebirth (to ``rebirth_max_ms``), a birth setting it back;
and at most ``rebirth_cap`` requests a minute in all. Each is counted by cause.

Liveness. Sparkplug reports by exception: an idle machine on a live node may stay silent for
hours. While its node (and device) is born the host sends a heartbeat for each bound machine
every ``heartbeat_ms``, so it does not go stale; a death stops them. Stamps are kept
monotonic per machine (a metric stamped by the node's clock before the host's last
heartbeat is stamped at that heartbeat), so clocks a little apart never reorder samples.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pilotline.collectors.sparkplug.payload import Metric, Payload, typed
from pilotline.collectors.sparkplug.topic import parse_topic
from pilotline.rules.sample import Quality, Sample, SignalValue

__all__ = [
    "Binding",
    "Host",
    "HostSettings",
    "Offline",
    "Output",
    "Rebirth",
    "Report",
]

SEQ_MOD = 256
_RECENT = 32  # seqs remembered per node to tell a duplicate from a second source


@dataclass(frozen=True, slots=True)
class Binding:
    """A machine bound to an edge node (``device`` None) or a device, and which metric gives
    each of its signals."""

    machine: str
    group: str
    node: str
    device: str | None
    metrics: Mapping[str, str]  # signal -> metric name


@dataclass(frozen=True, slots=True)
class HostSettings:
    primary: bool = False
    reorder_ms: int = 2_000
    rebirth_cooldown_ms: int = 30_000
    rebirth_max_ms: int = 600_000
    rebirth_cap: int = 10  # requests per minute, all nodes together
    heartbeat_ms: int = 10_000


@dataclass(frozen=True, slots=True)
class Offline:
    machine: str
    at_ms: int
    cause: str  # ndeath, ddeath, broker_lost


@dataclass(frozen=True, slots=True)
class Rebirth:
    group: str
    node: str
    cause: str


@dataclass(frozen=True, slots=True)
class Report:
    kind: str
    group: str
    node: str
    device: str | None = None
    detail: str = ""


@dataclass
class Output:
    samples: list[Sample] = field(default_factory=list)
    history: list[Sample] = field(default_factory=list)
    offline: list[Offline] = field(default_factory=list)
    rebirths: list[Rebirth] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)

    def extend(self, other: Output) -> None:
        self.samples += other.samples
        self.history += other.history
        self.offline += other.offline
        self.rebirths += other.rebirths
        self.reports += other.reports


@dataclass(frozen=True, slots=True)
class _Def:
    name: str
    datatype: int | None


class _Defs:
    """The metrics one birth defined: by alias and by name."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.by_alias: dict[int, _Def] = {}
        self.by_name: dict[str, _Def] = {}
        for m in metrics:
            if m.name is None:
                continue
            d = _Def(m.name, m.datatype)
            self.by_name[m.name] = d
            if m.alias is not None:
                self.by_alias[m.alias] = d

    def resolve(self, m: Metric) -> _Def | None:
        if m.alias is not None and m.alias in self.by_alias:
            return self.by_alias[m.alias]
        if m.name is not None:
            return self.by_name.get(m.name)
        return None


@dataclass
class _Node:
    group: str
    node: str
    bdseq: int | None = None
    born: bool = False
    next_seq: int = 0
    defs: _Defs | None = None
    devices: dict[str, _Defs] = field(default_factory=dict)
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=_RECENT))
    waiting: dict[int, tuple[str, str | None, Payload]] = field(default_factory=dict)
    gap_deadline: int | None = None
    # rebirth requests: the next allowed and the current cooldown
    rebirth_after: int = -(2**62)
    rebirth_wait: int = 0


_BIRTH_KINDS = frozenset({"NBIRTH", "DBIRTH"})
_SEQ_KINDS = frozenset({"DBIRTH", "NDATA", "DDATA", "DDEATH"})


def _quality(code: int | None) -> Quality:
    """OPC DA quality codes (192 good, 64..127 uncertain, 0..63 bad), as Ignition sends them."""
    if code is None:
        return Quality.GOOD
    top = code & 0xC0
    if top == 0xC0:
        return Quality.GOOD
    if top == 0:
        return Quality.BAD
    return Quality.UNCERTAIN


class Host:
    def __init__(self, bindings: Iterable[Binding], settings: HostSettings | None = None) -> None:
        self.settings = settings or HostSettings()
        self._bindings: dict[tuple[str, str, str | None], list[Binding]] = {}
        # per (group, node, device): metric name -> [(machine, signal)]
        self._wanted: dict[tuple[str, str, str | None], dict[str, list[tuple[str, str]]]] = {}
        for b in bindings:
            key = (b.group, b.node, b.device)
            self._bindings.setdefault(key, []).append(b)
            wanted = self._wanted.setdefault(key, {})
            for signal, metric in b.metrics.items():
                wanted.setdefault(metric, []).append((b.machine, signal))
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._last_ts: dict[str, int] = {}
        self._alive: set[str] = set()  # machines whose node (and device) is born
        self._next_heartbeat: int | None = None
        self._recent_rebirths: deque[int] = deque()
        self.counts: dict[str, int] = {}
        self.rebirths: dict[str, int] = {}
        self.rebirths_held: dict[str, int] = {}
        """Requests not sent (passive mode, cooldown, the global cap), by cause."""

    # -- inputs ---------------------------------------------------------------------------

    def receive(self, topic: str, payload: Payload | None, now_ms: int) -> Output:
        out = Output()
        t = parse_topic(topic)
        if t is None or t.kind == "STATE" or t.kind.endswith("CMD"):
            return out
        node = self._nodes.get((t.group, t.node))
        if node is None:
            node = self._nodes[(t.group, t.node)] = _Node(t.group, t.node)
        if payload is None:
            self._report(out, Report("bad_payload", t.group, t.node, t.device))
            return out
        if t.kind == "NBIRTH":
            self._nbirth(node, payload, now_ms, out)
        elif t.kind == "NDEATH":
            self._ndeath(node, payload, now_ms, out)
        elif not node.born:
            self._report(out, Report("not_born", t.group, t.node, t.device, t.kind))
            self._rebirth(node, "not_born", now_ms, out)
        else:
            self._sequenced(node, t.kind, t.device, payload, now_ms=now_ms, out=out)
        self._after(now_ms, out)
        return out

    def tick(self, now_ms: int) -> Output:
        out = Output()
        for node in self._nodes.values():
            if node.gap_deadline is not None and node.gap_deadline <= now_ms:
                self._gap_expired(node, now_ms, out)
        self._after(now_ms, out)
        return out

    def broker_lost(self, now_ms: int) -> Output:
        """The host lost the broker: every machine offline now; births needed again."""
        out = Output()
        for key, node in self._nodes.items():
            if node.born:
                self._mark_offline(
                    key[0], key[1], None, now_ms=now_ms, cause="broker_lost", out=out, whole=True
                )
            node.born = False
            node.defs = None
            node.devices.clear()
            node.waiting.clear()
            node.gap_deadline = None
        self._next_heartbeat = None
        return out

    def next_deadline(self) -> int | None:
        deadlines = [n.gap_deadline for n in self._nodes.values() if n.gap_deadline is not None]
        if self._next_heartbeat is not None and self._alive:
            deadlines.append(self._next_heartbeat)
        return min(deadlines, default=None)

    def node_state(self, group: str, node: str) -> tuple[bool, int | None, int]:
        """(born, bdSeq, next seq) of an edge node: for /health and the tests."""
        n = self._nodes.get((group, node))
        return (False, None, 0) if n is None else (n.born, n.bdseq, n.next_seq)

    # -- sessions ---------------------------------------------------------------------------

    def _nbirth(self, node: _Node, payload: Payload, now_ms: int, out: Output) -> None:
        bd = payload.metric("bdSeq")
        node.bdseq = int(bd.raw) if bd is not None and type(bd.raw) is int else None
        node.born = True
        node.defs = _Defs(payload.metrics)
        node.devices.clear()
        node.waiting.clear()
        node.gap_deadline = None
        node.recent.clear()
        seq = payload.seq if payload.seq is not None else 0
        node.recent.append(seq % SEQ_MOD)
        node.next_seq = (seq + 1) % SEQ_MOD
        node.rebirth_wait = 0  # a birth answers the requests: the next may come after cooldown
        for b in self._bindings.get((node.group, node.node, None), ()):
            self._alive.add(b.machine)
        self._values(node, None, node.defs, payload, now_ms=now_ms, out=out)

    def _ndeath(self, node: _Node, payload: Payload, now_ms: int, out: Output) -> None:
        bd = payload.metric("bdSeq")
        bdseq = int(bd.raw) if bd is not None and type(bd.raw) is int else None
        if not node.born or bdseq != node.bdseq:
            self._report(
                out,
                Report(
                    "stale_death",
                    node.group,
                    node.node,
                    detail=f"NDEATH bdSeq {bdseq} is not the current birth's {node.bdseq}"
                    if node.born
                    else "NDEATH for a node not born",
                ),
            )
            return
        node.born = False
        node.waiting.clear()
        node.gap_deadline = None
        self._mark_offline(
            node.group, node.node, None, now_ms=now_ms, cause="ndeath", out=out, whole=True
        )
        node.devices.clear()

    def _sequenced(
        self, node: _Node, kind: str, device: str | None, payload: Payload, *, now_ms: int,
        out: Output,
    ) -> None:
        seq = payload.seq
        if seq is None or kind not in _SEQ_KINDS:
            self._report(out, Report("no_seq", node.group, node.node, device, kind))
            return
        seq %= SEQ_MOD
        ahead = (seq - node.next_seq) % SEQ_MOD
        if ahead == 0:
            self._apply(node, kind, device, payload, now_ms=now_ms, out=out)
            self._drain(node, now_ms, out)
            return
        if ahead < SEQ_MOD // 2 and seq not in node.recent:
            if seq in node.waiting:
                self._report(out, Report("duplicate", node.group, node.node, device, f"seq {seq}"))
                return
            node.waiting[seq] = (kind, device, payload)
            if node.gap_deadline is None:
                node.gap_deadline = now_ms + self.settings.reorder_ms
            return
        if seq in node.recent:
            self._report(out, Report("duplicate", node.group, node.node, device, f"seq {seq}"))
            return
        self._report(
            out,
            Report(
                "seq_backwards",
                node.group,
                node.node,
                device,
                f"seq {seq} behind {node.next_seq} with bdSeq {node.bdseq} unchanged: "
                "two edge nodes with one id?",
            ),
        )

    def _drain(self, node: _Node, now_ms: int, out: Output) -> None:
        while node.next_seq in node.waiting:
            kind, device, payload = node.waiting.pop(node.next_seq)
            self._apply(node, kind, device, payload, now_ms=now_ms, out=out)
        if not node.waiting:
            node.gap_deadline = None

    def _gap_expired(self, node: _Node, now_ms: int, out: Output) -> None:
        missing = 0
        while node.waiting and node.born:
            if node.next_seq not in node.waiting:
                missing += 1
                node.recent.append(node.next_seq)
                node.next_seq = (node.next_seq + 1) % SEQ_MOD
                continue
            self._drain(node, now_ms, out)
        node.gap_deadline = None
        self._report(out, Report("seq_gap", node.group, node.node, detail=f"{missing} missing"))
        self._rebirth(node, "seq_gap", now_ms, out)

    def _apply(
        self, node: _Node, kind: str, device: str | None, payload: Payload, *, now_ms: int,
        out: Output,
    ) -> None:
        node.recent.append(node.next_seq)
        node.next_seq = (node.next_seq + 1) % SEQ_MOD
        if kind == "NDATA":
            assert node.defs is not None
            self._values(node, None, node.defs, payload, now_ms=now_ms, out=out)
            return
        assert device is not None
        if kind == "DBIRTH":
            defs = node.devices[device] = _Defs(payload.metrics)
            for b in self._bindings.get((node.group, node.node, device), ()):
                self._alive.add(b.machine)
            self._values(node, device, defs, payload, now_ms=now_ms, out=out)
            return
        known = node.devices.get(device)
        if known is None:
            self._report(out, Report("unknown_device", node.group, node.node, device, kind))
            if kind == "DDATA":
                self._rebirth(node, "unknown_device", now_ms, out)
            return
        if kind == "DDEATH":
            del node.devices[device]
            self._mark_offline(
                node.group, node.node, device, now_ms=now_ms, cause="ddeath", out=out
            )
            return
        self._values(node, device, known, payload, now_ms=now_ms, out=out)

    def _mark_offline(
        self, group: str, node: str, device: str | None, *, now_ms: int, cause: str,
        out: Output, whole: bool = False,
    ) -> None:
        """Its machines (``whole``: the node's and all its devices') offline at ``now_ms``."""
        for (g, n, d), bindings in self._bindings.items():
            if g != group or n != node or (d != device and not whole):
                continue
            for b in bindings:
                if b.machine in self._alive:
                    self._alive.discard(b.machine)
                    at = max(now_ms, self._last_ts.get(b.machine, now_ms))
                    self._last_ts[b.machine] = at
                    out.offline.append(Offline(b.machine, at, cause))

    # -- values --------------------------------------------------------------------------------

    def _values(
        self, node: _Node, device: str | None, defs: _Defs, payload: Payload, *, now_ms: int,
        out: Output,
    ) -> None:
        wanted = self._wanted.get((node.group, node.node, device))
        if not wanted:
            return
        live: dict[tuple[str, int], tuple[dict[str, SignalValue], list[Quality]]] = {}
        history: dict[tuple[str, int], dict[str, SignalValue]] = {}
        for m in payload.metrics:
            d = defs.resolve(m)
            if d is None:
                self._report(
                    out,
                    Report("unknown_metric", node.group, node.node, device,
                           f"alias {m.alias}" if m.name is None else m.name),
                )
                if m.alias is not None and m.name is None:
                    self._rebirth(node, "unknown_alias", now_ms, out)
                continue
            targets = wanted.get(d.name)
            if targets is None:
                continue
            if m.is_null:
                self._report(out, Report("null_value", node.group, node.node, device, d.name))
                continue
            value = typed(m.raw, m.datatype if m.datatype is not None else d.datatype)
            if value is None:
                self._report(out, Report("unsupported_type", node.group, node.node, device, d.name))
                continue
            ts = m.timestamp if m.timestamp is not None else payload.timestamp
            stamp = now_ms if ts is None else int(ts)
            for machine, signal in targets:
                if m.is_historical:
                    history.setdefault((machine, stamp), {})[signal] = value
                    continue
                values, qualities = live.setdefault((machine, stamp), ({}, []))
                values[signal] = value
                qualities.append(_quality(m.quality))
        for (machine, stamp), (values, qualities) in sorted(live.items(), key=lambda i: i[0][1]):
            at = max(stamp, self._last_ts.get(machine, stamp))
            self._last_ts[machine] = at
            out.samples.append(Sample(machine, at, values, max(qualities)))
        for (machine, stamp), values in history.items():
            out.history.append(Sample(machine, stamp, values))

    def _after(self, now_ms: int, out: Output) -> None:
        """Heartbeats for the machines alive, every ``heartbeat_ms``."""
        if not self._alive:
            self._next_heartbeat = None
            return
        if self._next_heartbeat is None:
            self._next_heartbeat = now_ms + self.settings.heartbeat_ms
            return
        if now_ms < self._next_heartbeat:
            return
        self._next_heartbeat = now_ms + self.settings.heartbeat_ms
        for machine in sorted(self._alive):
            at = max(now_ms, self._last_ts.get(machine, now_ms))
            self._last_ts[machine] = at
            out.samples.append(Sample(machine, at))

    # -- rebirths and reports ---------------------------------------------------------------

    def _rebirth(self, node: _Node, cause: str, now_ms: int, out: Output) -> None:
        s = self.settings
        window = self._recent_rebirths
        while window and window[0] <= now_ms - 60_000:
            window.popleft()
        if not s.primary or now_ms < node.rebirth_after or len(window) >= s.rebirth_cap:
            self.rebirths_held[cause] = self.rebirths_held.get(cause, 0) + 1
            return
        wait = node.rebirth_wait = min(
            max(s.rebirth_cooldown_ms, node.rebirth_wait * 2), s.rebirth_max_ms
        )
        node.rebirth_after = now_ms + wait
        window.append(now_ms)
        self.rebirths[cause] = self.rebirths.get(cause, 0) + 1
        out.rebirths.append(Rebirth(node.group, node.node, cause))

    def _report(self, out: Output, report: Report) -> None:
        self.counts[report.kind] = self.counts.get(report.kind, 0) + 1
        out.reports.append(report)
