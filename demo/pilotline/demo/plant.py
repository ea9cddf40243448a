"""A simulated photonics and imaging pilot line: the machines ``pilotline demo`` watches.

Theory of operation
-------------------
Each machine lives on a schedule of segments (idle gap, job, paused job, fault, planned
maintenance, lost connection), drawn lazily from its own ``random.Random`` seeded with the
plant seed and the machine id, so adding a machine never changes another one's life. The
schedule starts at the first instant the plant is asked about (or ``start_ms``) and is only
ever extended forwards; nothing here reads a clock, sleeps or does I/O: time is passed in.

The numbers a machine reports at an instant are a pure function of its current segment and
that instant: temperatures follow a first-order lag towards the segment's target, and noise
is a hash of (machine, time, channel) rather than a draw from a shared generator. The same
seed therefore gives the same payloads whether the plant is sampled every 100 ms, every
10 s, or in one jump.

What the gateway is meant to see:

* ``enum`` machines report an enumerated ``state`` in their own vocabulary (OPC 40001-1,
  PackML or MTConnect) that DESIGN.md's default table maps to the canonical state; the one
  OPC 40001-1 machine with planned maintenance reports ``OutOfService`` during its slot and
  carries an explicit ``map`` (:attr:`SimMachine.state_map`) that makes it ``maintenance``.
* ``power`` machines report only numbers; their state comes from ``power_w`` thresholds
  (running at or above :data:`RUNNING_ABOVE_W`, idle below :data:`IDLE_BELOW_W`).
* Noise blips (a test fire while idle, a stall between program steps) last at most
  :data:`BLIP_MAX_MS`, always shorter than the demo's 5 s debounce, and never change
  :meth:`Plant.true_state`.
* A paused job (PackML ``Held``, MTConnect ``FEED_HOLD``) is still ``running``.
* A power machine occasionally drops off the network: it publishes nothing for a while and
  its true state is ``offline``.

``time_scale`` multiplies every scheduled duration (jobs, gaps, faults, maintenance), not
the blips, which stay in real seconds so that they stay below the debounce.

Staged incidents (:class:`Incident`) are laid over the schedule without changing it: while
one is on, its machines report a fault (``down``) or fall silent (``offline``, a power cut),
and afterwards they carry on with their own lives. ``pilotline demo`` stages a fault on one
machine and a zone-wide outage at fixed times, so that alerts show within minutes.
"""

from __future__ import annotations

import math
import random
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Self, cast, get_args

import orjson

from pilotline.demo.catalogue import (
    ENUM_VOCABS,
    GENERATED,
    MAINT_MAP,
    OWNERS,
    PROFILES,
    STANDARD,
    WORDS,
    Phase,
    Profile,
    Row,
    Vocabulary,
)

__all__ = [
    "BLIP_MAX_MS",
    "IDLE_BELOW_W",
    "RUNNING_ABOVE_W",
    "Incident",
    "Plant",
    "SimMachine",
]

RUNNING_ABOVE_W = 120.0
"""Power threshold at or above which a ``power`` machine is running (site.py writes it)."""
IDLE_BELOW_W = 60.0
"""Power threshold below which a ``power`` machine is idle."""
BLIP_MAX_MS = 3_000
"""Longest noise blip; the demo debounce (5 s) must stay above it."""

_MINUTE_MS = 60_000

# Schedule parameters at time_scale=1.0 (milliseconds, probabilities per job).
_JOB_MS = (1 * _MINUTE_MS, 4 * _MINUTE_MS)
_GAP_MS = (1 * _MINUTE_MS, 6 * _MINUTE_MS)
_FAULT_MS = (45_000, 90_000)
_DROPOUT_MS = (40_000, 100_000)
_PAUSE_MS = (20_000, 50_000)
_P_FAULT = 0.07
_P_DROPOUT = 0.05
_P_PAUSE = 0.35
_P_BLIP = 0.3
_MAINT_FIRST_MS = 40 * _MINUTE_MS
_MAINT_LEN_MS = 20 * _MINUTE_MS
_MAINT_PERIOD_MS = 8 * 60 * _MINUTE_MS
_TAU_MS = 120_000
_BLIP_MIN_MS = 1_000
_BLIP_MARGIN_MS = 4_000




@dataclass(frozen=True, slots=True)
class SimMachine:
    """One simulated machine, with what the site configuration needs to know about it.

    ``state_map`` holds explicit vocabulary overrides (word, canonical state) that the
    configuration must carry on top of the default table; ``maintenance`` says the machine
    has a planned maintenance slot; ``signals`` lists the numeric signals it publishes.
    """

    id: str
    zone: str
    owner: str
    capabilities: tuple[str, ...]
    kind: Literal["enum", "power"]
    topic: str
    state_vocabulary: Vocabulary
    signals: tuple[str, ...] = ("power_w", "temperature_c")
    state_map: tuple[tuple[str, str], ...] = ()
    maintenance: bool = False


IncidentState = Literal["down", "offline"]


@dataclass(frozen=True, slots=True)
class Incident:
    """Every machine ``target`` names (a machine id, or a zone: all of its machines) is
    ``state`` from ``start_ms`` until ``end_ms`` (epoch ms, the plant's own time).

    ``down`` is a fault the machine reports in its vocabulary, so only ``enum`` machines can
    have one (a power-only machine at fault draws idle power); ``offline`` is silence. The
    text form ``state:target:start_ms:end_ms`` (:meth:`parse`, ``str``) crosses the command
    line to the demo's OPC UA server, which must stage the same incidents.
    """

    target: str
    state: IncidentState
    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.state not in get_args(IncidentState):
            raise ValueError(f"an incident is down or offline, not {self.state!r}")
        if self.end_ms <= self.start_ms:
            raise ValueError(f"incident on {self.target} ends before it starts")

    def __str__(self) -> str:
        return f"{self.state}:{self.target}:{self.start_ms}:{self.end_ms}"

    @classmethod
    def parse(cls, text: str) -> Self:
        """``down:laser-cut-01:1795737630000:1795737690000`` -> an Incident."""
        parts = text.split(":")
        if len(parts) != 4:
            raise ValueError(f"an incident is state:target:start_ms:end_ms, got {text!r}")
        state, target, start, end = parts
        return cls(target, cast(IncidentState, state), int(start), int(end))  # __post_init__ checks

    def on_at(self, at_ms: int) -> bool:
        return self.start_ms <= at_ms < self.end_ms


@dataclass(slots=True)
class _Segment:
    start_ms: int
    end_ms: int
    phase: Phase
    temp_start_c: float
    blip: tuple[int, int] | None = None


@dataclass(slots=True)
class _Machine:
    spec: SimMachine
    profile: Profile
    rng: random.Random
    key: int
    maint_offset_ms: int
    segments: deque[_Segment] = field(default_factory=deque)
    last_phase: Phase = Phase.IDLE
    next_maint_ms: int | None = None
    current: _Segment | None = None
    incidents: list[Incident] = field(default_factory=list)
    in_incident: Incident | None = None  # the one on at the last instant asked about



_M64 = (1 << 64) - 1


def _noise(key: int) -> float:
    """Uniform in [-1, 1), a pure function of ``key`` (splitmix64 finaliser)."""
    z = (key + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    z ^= z >> 31
    return float(z >> 11) * (2.0 / (1 << 53)) - 1.0


class Plant:
    """The simulated line. ``payloads(now_ms)`` is all a publisher needs.

    ``machines=None`` gives the standard ten-machine line; ``machines=N`` generates N
    machines spread over the two zones (for benchmarks). ``start_ms`` fixes the origin of
    every schedule; by default it is the first instant passed to :meth:`payloads`.
    ``dropouts=False`` keeps every machine publishing (no ``offline`` spells).
    ``incidents`` are staged on top of the schedule (see :class:`Incident`); an unknown
    target, or a ``down`` on a power-only machine, is a ``ValueError``.
    """

    def __init__(
        self,
        seed: int = 7,
        time_scale: float = 1.0,
        machines: int | None = None,
        topic_prefix: str = "pilot",
        *,
        start_ms: int | None = None,
        dropouts: bool = True,
        incidents: Sequence[Incident] = (),
    ) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        if machines is not None and machines < 1:
            raise ValueError(f"machines must be at least 1, got {machines}")
        self.seed = seed
        self.time_scale = time_scale
        self.topic_prefix = topic_prefix
        self._dropouts = dropouts
        self._origin_ms = start_ms
        self._last_ms: int | None = None
        self._sims = [self._make(row, i) for i, row in enumerate(self._rows(machines))]
        self._by_id = {sim.spec.id: sim for sim in self._sims}
        self.machines: list[SimMachine] = [sim.spec for sim in self._sims]
        for incident in incidents:
            self._stage(incident)

    # -- construction --------------------------------------------------------------------

    def _topic(self, zone: str, machine: str) -> str:
        return f"{self.topic_prefix}/{zone}/{machine}/telemetry"

    def _rows(self, count: int | None) -> list[Row]:
        if count is None:
            return list(STANDARD)
        width = max(3, len(str(count)))
        rows = []
        for i in range(count):
            stem, zone, caps = GENERATED[i % len(GENERATED)]
            vocab: Vocabulary = "power" if i % 2 else ENUM_VOCABS[(i // 2) % len(ENUM_VOCABS)]
            owner = OWNERS[i % len(OWNERS)]
            maint = vocab == "opc40001" and i % 12 == 0
            rows.append(Row(f"{stem}-{i + 1:0{width}d}", zone, owner, caps, vocab, maint))
        return rows

    def _make(self, row: Row, index: int) -> _Machine:
        if row.maintenance and row.vocabulary != "opc40001":
            raise ValueError(f"{row.id}: planned maintenance is simulated on OPC 40001 machines")
        base = PROFILES[row.id.rsplit("-", 1)[0]]
        key = (zlib.crc32(row.id.encode()) << 20) ^ (self.seed & 0xFFFFF)
        vary = 1.0 + 0.08 * _noise(key)  # this machine's own rating, within 8 %
        profile = replace(base, run_w=round(base.run_w * vary), idle_w=round(base.idle_w * vary))
        spec = SimMachine(
            id=row.id,
            zone=row.zone,
            owner=row.owner,
            capabilities=row.capabilities,
            kind="power" if row.vocabulary == "power" else "enum",
            topic=self._topic(row.zone, row.id),
            state_vocabulary=row.vocabulary,
            signals=("power_w", "temperature_c", profile.extra),
            state_map=MAINT_MAP if row.maintenance else (),
            maintenance=row.maintenance,
        )
        return _Machine(
            spec=spec,
            profile=profile,
            rng=random.Random(f"pilotline-demo:{self.seed}:{row.id}"),
            key=key,
            maint_offset_ms=(index % 7) * 5 * _MINUTE_MS,
        )

    def _stage(self, incident: Incident) -> None:
        sims = [s for s in self._sims if incident.target in (s.spec.id, s.spec.zone)]
        if not sims:
            raise ValueError(f"incident target {incident.target!r}: no such machine or zone")
        for sim in sims:
            if incident.state == "down" and sim.spec.kind == "power":
                raise ValueError(
                    f"{sim.spec.id} reports power only and cannot report a fault: "
                    "stage an offline incident instead"
                )
            sim.incidents.append(incident)

    # -- public API ----------------------------------------------------------------------

    def payloads(self, now_ms: int) -> list[tuple[str, bytes]]:
        """(topic, JSON payload) of every machine publishing at ``now_ms``.

        Advances each machine's schedule to ``now_ms``. An instant earlier than the last one
        is served from the current segments (a wall clock stepping back must not rewind the
        line); its payloads still carry ``now_ms`` as ``ts``. Machines whose true state is
        ``offline`` publish nothing.
        """
        at = self._advance(now_ms)
        out: list[tuple[str, bytes]] = []
        for sim in self._sims:
            seg = self._staged(sim, self._segment_at(sim, at), at)
            if seg.phase is Phase.OFFLINE:
                continue
            out.append((sim.spec.topic, orjson.dumps(self._values(sim, seg, at, now_ms))))
        return out

    def true_state(self, machine_id: str) -> str:
        """Canonical state the machine is in at the last instant asked about.

        Noise blips do not count; before the first :meth:`payloads` call it is ``offline``.
        Raises ``KeyError`` for an unknown machine.
        """
        sim = self._by_id[machine_id]
        if sim.current is None:
            return "offline"
        if sim.in_incident is not None:
            return sim.in_incident.state
        return sim.current.phase.canonical

    # -- schedule ------------------------------------------------------------------------

    def _advance(self, now_ms: int) -> int:
        if self._origin_ms is None:
            self._origin_ms = now_ms
        at = max(now_ms, self._origin_ms)
        if self._last_ms is not None:
            at = max(at, self._last_ms)
        self._last_ms = at
        return at

    def _scaled(self, bounds: tuple[int, int], rng: random.Random) -> int:
        return max(1, round(rng.uniform(bounds[0], bounds[1]) * self.time_scale))

    def _segment_at(self, sim: _Machine, at: int) -> _Segment:
        if not sim.segments:
            self._begin(sim)
        while True:
            cur = sim.segments[0]
            if at < cur.end_ms:
                sim.current = cur
                return cur
            if len(sim.segments) == 1:
                self._extend(sim)
            sim.segments.popleft()

    def _staged(self, sim: _Machine, seg: _Segment, at: int) -> _Segment:
        """``seg``, or the incident on at ``at`` in its place (the schedule goes on beneath).

        The incident's temperature starts from the scheduled segment's at the incident's
        start (or at the segment's own start, if it began later): a pure function of ``at``,
        like everything else here."""
        sim.in_incident = next((i for i in sim.incidents if i.on_at(at)), None)
        incident = sim.in_incident
        if incident is None:
            return seg
        phase = Phase.DOWN if incident.state == "down" else Phase.OFFLINE
        temp = self._temperature(sim, seg, max(seg.start_ms, incident.start_ms))
        return _Segment(incident.start_ms, incident.end_ms, phase, temp)

    def _begin(self, sim: _Machine) -> None:
        """First segment: idle or running, part-way through, so machines start out of step."""
        assert self._origin_ms is not None
        origin = self._origin_ms
        if sim.spec.maintenance:
            sim.next_maint_ms = origin + round(
                (_MAINT_FIRST_MS + sim.maint_offset_ms) * self.time_scale
            )
        phase = Phase.RUNNING if sim.rng.random() < 0.5 else Phase.IDLE
        bounds = _JOB_MS if phase is Phase.RUNNING else _GAP_MS
        length = max(1, round(self._scaled(bounds, sim.rng) * sim.rng.uniform(0.2, 1.0)))
        temp = sim.profile.run_c if phase is Phase.RUNNING else sim.profile.idle_c
        sim.segments.append(_Segment(origin, origin + length, phase, temp))
        sim.last_phase = phase

    def _extend(self, sim: _Machine) -> None:
        """Append the next block of segments after the last one."""
        rng = sim.rng
        last = sim.last_phase
        if last is Phase.IDLE:
            self._job(sim)
            return
        if last in (Phase.RUNNING, Phase.PAUSED):
            roll = rng.random()
            if sim.spec.kind == "enum" and not sim.spec.maintenance and roll < _P_FAULT:
                self._push(sim, Phase.DOWN, self._scaled(_FAULT_MS, rng))
                return
            if sim.spec.kind == "power" and self._dropouts and roll < _P_DROPOUT:
                self._push(sim, Phase.OFFLINE, self._scaled(_DROPOUT_MS, rng))
                return
        self._push(sim, Phase.IDLE, self._scaled(_GAP_MS, rng))

    def _job(self, sim: _Machine) -> None:
        rng = sim.rng
        length = self._scaled(_JOB_MS, rng)
        pausable = sim.spec.state_vocabulary in ("packml", "mtconnect")
        if pausable and rng.random() < _P_PAUSE:
            pause = self._scaled(_PAUSE_MS, rng)
            first = max(1, round(length * rng.uniform(0.3, 0.7)))
            pieces = [
                (Phase.RUNNING, first),
                (Phase.PAUSED, pause),
                (Phase.RUNNING, max(1, length - first)),
            ]
        else:
            pieces = [(Phase.RUNNING, length)]
        for phase, dur in pieces:
            if not self._push(sim, phase, dur):
                return

    def _push(self, sim: _Machine, phase: Phase, dur: int) -> bool:
        """Append one segment; returns False when a maintenance slot cut it short."""
        prev = sim.segments[-1]
        start = prev.end_ms
        end = start + dur
        temp = self._temperature(sim, prev, prev.end_ms)
        slot = sim.next_maint_ms
        if slot is not None and end > slot:
            if slot > start:
                sim.segments.append(self._blipped(sim, _Segment(start, slot, phase, temp)))
                temp = self._temperature(sim, sim.segments[-1], slot)
            maint_end = max(slot, start) + round(_MAINT_LEN_MS * self.time_scale)
            sim.segments.append(_Segment(max(slot, start), maint_end, Phase.MAINTENANCE, temp))
            sim.next_maint_ms = slot + round(_MAINT_PERIOD_MS * self.time_scale)
            sim.last_phase = Phase.MAINTENANCE
            return False
        sim.segments.append(self._blipped(sim, _Segment(start, end, phase, temp)))
        sim.last_phase = phase
        return True

    def _blipped(self, sim: _Machine, seg: _Segment) -> _Segment:
        if seg.phase not in (Phase.IDLE, Phase.RUNNING):
            return seg
        rng = sim.rng
        if rng.random() >= _P_BLIP:
            return seg
        length = rng.randint(_BLIP_MIN_MS, BLIP_MAX_MS)
        room = seg.end_ms - seg.start_ms - length - 2 * _BLIP_MARGIN_MS
        if room <= 0:
            return seg
        start = seg.start_ms + _BLIP_MARGIN_MS + rng.randint(0, room)
        seg.blip = (start, start + length)
        return seg

    # -- signals -------------------------------------------------------------------------

    def _target_c(self, sim: _Machine, phase: Phase) -> float:
        p = sim.profile
        if phase in (Phase.RUNNING, Phase.PAUSED):
            return p.run_c if phase is Phase.RUNNING else (p.run_c + p.idle_c) / 2
        if phase is Phase.IDLE:
            return p.idle_c
        return 22.0

    def _temperature(self, sim: _Machine, seg: _Segment, at: int) -> float:
        target = self._target_c(sim, seg.phase)
        tau = max(5_000.0, _TAU_MS * self.time_scale)
        decay = math.exp(-(at - seg.start_ms) / tau)
        return target + (seg.temp_start_c - target) * decay

    def _values(self, sim: _Machine, seg: _Segment, at: int, now_ms: int) -> dict[str, object]:
        p = sim.profile
        spec = sim.spec
        phase = seg.phase
        blip = seg.blip is not None and seg.blip[0] <= at < seg.blip[1]
        shown = phase
        if blip:
            shown = Phase.RUNNING if phase is Phase.IDLE else Phase.IDLE
        k = sim.key ^ (at * 0x2545F491)
        n_power, n_temp, n_extra = _noise(k), _noise(k + 1), _noise(k + 2)

        if shown is Phase.RUNNING:
            power = p.run_w * (1.0 + 0.04 * n_power)
            if blip:  # a test fire or a warm-up pulse on an idle machine
                power = max(RUNNING_ABOVE_W + 20.0, 0.5 * p.run_w) * (1.0 + 0.05 * n_power)
        elif shown is Phase.PAUSED:
            power = max(0.3 * p.run_w, RUNNING_ABOVE_W + 10.0) * (1.0 + 0.04 * n_power)
        elif shown is Phase.IDLE:
            power = p.idle_w * (1.0 + 0.1 * n_power)
            if blip:  # a stall between program steps
                power = 0.8 * p.idle_w * (1.0 + 0.1 * n_power)
        elif shown is Phase.DOWN:
            power = 12.0 + 3.0 * n_power
        else:  # maintenance: only the service controller is on
            power = 8.0 + 2.0 * n_power

        values: dict[str, object] = {"ts": now_ms}
        if spec.kind == "enum":
            values["state"] = WORDS[spec.state_vocabulary][shown]
        values["power_w"] = round(power, 1)
        values["temperature_c"] = round(self._temperature(sim, seg, at) + 0.2 * n_temp, 2)
        if p.extra:
            values[p.extra] = self._extra(p.extra, shown, n_extra)
        return values

    @staticmethod
    def _extra(name: str, phase: Phase, n: float) -> float:
        busy = phase in (Phase.RUNNING, Phase.PAUSED)
        if name == "chiller_c":
            return round((19.5 if busy else 18.0) + 0.3 * n, 2)
        if name == "vacuum_mbar":
            if phase is Phase.MAINTENANCE:
                return round(1013.0 + 2.0 * n, 1)  # chamber vented for service
            return round((0.004 if busy else 0.02) * (1.0 + 0.1 * n), 5)
        if name == "frames_per_s":
            return round(60.0 + 2.0 * n, 1) if phase is Phase.RUNNING else 0.0
        if name == "force_n":
            return round(32.0 + 4.0 * n, 2) if phase is Phase.RUNNING else 0.0
        return round(n, 3)
