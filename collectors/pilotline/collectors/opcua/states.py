"""Standard state models: numeric state codes to the names the default state map knows.

A machine that exposes a standard state as a number (PackML's state code, the StateNumber of
an OPC 40001-1 MachineryItemState) names its model in ``opcua.state_model``; the collector
then hands the state signal on as the model's state *name*, which ``DEFAULT_STATE_MAP``
(``pilotline.rules.states``) maps to the canonical state with no ``map:`` in the file.
Names (LocalizedText or strings) pass through unchanged: they are already in the default map.

- ``machinery``: OPC 40001-1 MachineryItemState StateNumbers.
- ``packml``: ISA-TR88.00.02 / OMAC PackML state numbers (PackTags ``StateCurrent``).
- ``mtconnect``: Execution is a text enumeration, so no codes: its names (ACTIVE, READY,
  ...) pass through, and ``DEFAULT_STATE_MAP`` holds them with the states they map to.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = ["STATE_MODELS", "state_name"]

MACHINERY: Final[Mapping[int, str]] = MappingProxyType(
    {0: "NotAvailable", 1: "OutOfService", 2: "NotExecuting", 3: "Executing"}
)
PACKML: Final[Mapping[int, str]] = MappingProxyType(
    {
        1: "Clearing",
        2: "Stopped",
        3: "Starting",
        4: "Idle",
        5: "Suspended",
        6: "Execute",
        7: "Stopping",
        8: "Aborting",
        9: "Aborted",
        10: "Holding",
        11: "Held",
        12: "Unholding",
        13: "Suspending",
        14: "Unsuspending",
        15: "Resetting",
        16: "Completing",
        17: "Complete",
    }
)
MTCONNECT: Final[Mapping[int, str]] = MappingProxyType({})

STATE_MODELS: Final[Mapping[str, Mapping[int, str]]] = MappingProxyType(
    {"machinery": MACHINERY, "packml": PACKML, "mtconnect": MTCONNECT}
)


def state_name(model: str, value: float | str) -> float | str:
    """The model's name for a numeric code; anything else unchanged."""
    if isinstance(value, str) or not float(value).is_integer():
        return value
    return STATE_MODELS[model].get(int(value), value)
