"""The alert core's checkpoint as data: ``Saved`` and its JSON-able form, both ways.

The data crosses a store, so ``from_json`` checks every field's type and refuses anything else
with one ``ValueError``; what it means for a restore is ``Alerts.restore``'s business.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pilotline.rules.alerts.transitions import Status
from pilotline.rules.states import State

CHECKPOINT_VERSION = 1


@dataclass(frozen=True, slots=True)
class SavedInstance:
    rule: str
    target: str  # the machine's id, or the collector's name
    condition: str  # conditions.fingerprint() of the rule's condition
    status: Status
    since: int
    firing_since: int | None
    value: float | None  # None for NaN (JSON has none)
    raw: bool


@dataclass(frozen=True, slots=True)
class Saved:
    now_ms: int | None
    machines: dict[str, tuple[State, int, int | None]]  # state, state_since, window_start
    collectors: dict[str, bool]  # connected
    instances: list[SavedInstance]
    interlocks: list[str]  # machines whose interlock does not read back


def to_json(saved: Saved) -> dict[str, object]:
    """``saved`` as plain JSON-able data."""
    return {
        "version": CHECKPOINT_VERSION,
        "now_ms": saved.now_ms,
        "machines": {
            machine: {"state": state.value, "state_since": since, "window_start": window_start}
            for machine, (state, since, window_start) in saved.machines.items()
        },
        "collectors": {name: {"connected": c} for name, c in saved.collectors.items()},
        "interlocks": saved.interlocks,
        "instances": [
            {
                "rule": i.rule,
                "target": i.target,
                "condition": i.condition,
                "status": i.status.value,
                "since": i.since,
                "firing_since": i.firing_since,
                "value": i.value,
                "raw": i.raw,
            }
            for i in saved.instances
        ],
    }


def from_json(data: Mapping[str, object]) -> Saved:
    """Check the shape of checkpoint data (it crossed a store); ``ValueError`` if wrong."""
    if not isinstance(data, Mapping) or data.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"not an alerts checkpoint of version {CHECKPOINT_VERSION}")
    try:
        now = _opt_int(data["now_ms"])
        machines = {
            _str(k): (
                State(_str(_map(m)["state"])),
                _int(_map(m)["state_since"]),
                _opt_int(_map(m)["window_start"]),
            )
            for k, m in _map(data["machines"]).items()
        }
        collectors = {
            _str(k): _bool(_map(c)["connected"]) for k, c in _map(data["collectors"]).items()
        }
        instances = []
        raw_instances = data["instances"]
        if not isinstance(raw_instances, list):
            raise TypeError("instances")
        for item in raw_instances:
            i = _map(item)
            value = i["value"]
            if value is not None and not (
                isinstance(value, int | float) and not isinstance(value, bool)
            ):
                raise TypeError("value")
            status = Status(_str(i["status"]))
            instances.append(
                SavedInstance(
                    _str(i["rule"]),
                    _str(i["target"]),
                    _str(i["condition"]),
                    status,
                    _int(i["since"]),
                    _opt_int(i["firing_since"]),
                    None if value is None else float(value),
                    _bool(i["raw"]),
                )
            )
        # absent from checkpoints written before interlock rules existed: none unknown
        raw_interlocks = data.get("interlocks", [])
        if not isinstance(raw_interlocks, list):
            raise TypeError("interlocks")
        interlocks = [_str(m) for m in raw_interlocks]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"a malformed alerts checkpoint: {e!r}") from e
    return Saved(now, machines, collectors, instances, interlocks)


def _map(x: object) -> Mapping[str, object]:
    if not isinstance(x, Mapping):
        raise TypeError(f"expected a mapping, got {type(x).__name__}")
    return x


def _str(x: object) -> str:
    if not isinstance(x, str):
        raise TypeError(f"expected a string, got {type(x).__name__}")
    return x


def _bool(x: object) -> bool:
    if not isinstance(x, bool):
        raise TypeError(f"expected a boolean, got {type(x).__name__}")
    return x


def _int(x: object) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"expected an integer, got {type(x).__name__}")
    return x


def _opt_int(x: object) -> int | None:
    return None if x is None else _int(x)
