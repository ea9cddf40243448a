"""From notifications to ``Sample``s: data values, heartbeats, and refused values.

A data change becomes one ``Sample`` of its machine (``parse.read_data_value`` reads the
DataValue; a state model maps state codes to names), stamped so that a machine's time never
goes back (``parse.Stamper``). A value ``parse`` refuses becomes a ``Quarantined``, counted
per reason and logged once per reason. A heartbeat becomes an empty ``Sample`` for each
machine of its subscription, stamped at the machine's last sample time; a machine with no
sample yet, or whose state signal is Bad (without a state signal: any Bad signal), gets
none, so it goes ``offline`` through the core's staleness rule. Called synchronously from
the collector's notification loop (the hot path); a failing callback is logged, never raised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog
from asyncua import ua

from pilotline.collectors.opcua.items import Item, OpcuaMachine
from pilotline.collectors.opcua.parse import Rejection, Stamper, read_data_value
from pilotline.collectors.opcua.states import state_name
from pilotline.rules.sample import Quality, Sample

__all__ = ["Quarantined", "SampleMaker"]

log = structlog.get_logger("pilotline.collectors.opcua")


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A refused value (same fields as the MQTT collector's): ``topic`` is the node id."""

    topic: str
    reason: str
    head: bytes
    arrival_ms: int
    machine: str | None
    detail: str = ""


class SampleMaker:
    """Turns one endpoint's notifications into calls of ``on_sample`` and ``on_reject``."""

    def __init__(
        self,
        endpoint: str,
        machines: Mapping[str, OpcuaMachine],
        items: Mapping[int, Item],
        *,
        on_sample: Callable[[Sample], None],
        on_reject: Callable[[Quarantined], None] | None,
        clock_ms: Callable[[], int],
    ) -> None:
        self._endpoint = endpoint
        self._machines = machines
        self._items = items
        self._on_sample = on_sample
        self._on_reject = on_reject
        self._clock_ms = clock_ms
        self.stamper = Stamper()
        self._bad: dict[tuple[str, str], bool] = {}  # (machine, signal) -> latest is Bad
        self.bad_values = 0
        self.uncertain_values = 0
        self.rejected: dict[str, int] = {}

    def heartbeat(self, machines: list[str]) -> None:
        """Keep ``machines`` alive: an empty sample each at its last sample time."""
        for machine in machines:
            if self._heartbeat_paused(machine):
                continue
            ts = self.stamper.last(machine)
            if ts is None:
                continue  # nothing to keep alive yet
            self._emit(Sample(machine, ts, {}))

    def _heartbeat_paused(self, machine: str) -> bool:
        signal = self._machines[machine].state_signal
        if signal is not None:
            return self._bad.get((machine, signal), False)
        return any(bad for (m, _s), bad in self._bad.items() if m == machine)

    def data(self, handle: int, dv: ua.DataValue | None) -> None:
        """One data change of the item with client handle ``handle``."""
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
            self.bad_values += 1
        elif reading.quality is Quality.UNCERTAIN:
            self.uncertain_values += 1
        ts = self.stamper.stamp(item.machine, reading.ts_ms)
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
        self, item: Item, rejection: Rejection, arrival: int, dv: ua.DataValue | None
    ) -> None:
        count = self.rejected.get(rejection.reason, 0)
        self.rejected[rejection.reason] = count + 1
        if count == 0:
            log.warning(
                "opcua.value_rejected",
                endpoint=self._endpoint,
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
