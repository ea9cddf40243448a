"""The pure rules core: samples and the time in, events out (see plant.py).

Nothing here does I/O, reads a clock, or imports ``pilotline.gateway`` or
``pilotline.collectors``.
"""

from pilotline.rules.errors import RulesConfigError
from pilotline.rules.events import (
    Capacity,
    Event,
    IdleWindowClosed,
    IdleWindowOpened,
    SampleLate,
    SampleRejected,
    StateChanged,
    ZoneCapacity,
)
from pilotline.rules.machine import Checkpoint
from pilotline.rules.plant import ALL_CAPABILITIES, MachineView, Plant
from pilotline.rules.sample import Quality, Sample, SignalValue
from pilotline.rules.spec import MachineSpec, MappedState, PlantSpec, StateRule, ThresholdState
from pilotline.rules.states import DEFAULT_STATE_MAP, State

__all__ = [
    "ALL_CAPABILITIES",
    "DEFAULT_STATE_MAP",
    "Capacity",
    "Checkpoint",
    "Event",
    "IdleWindowClosed",
    "IdleWindowOpened",
    "MachineSpec",
    "MachineView",
    "MappedState",
    "Plant",
    "PlantSpec",
    "Quality",
    "RulesConfigError",
    "Sample",
    "SampleLate",
    "SampleRejected",
    "SignalValue",
    "State",
    "StateChanged",
    "StateRule",
    "ThresholdState",
    "ZoneCapacity",
]
