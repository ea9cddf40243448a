"""The core's input port: one normalized observation of one machine.

Collectors import this type (and nothing else) from the core. A sample carries event time
(the source's clock) in epoch milliseconds; the core never reads a clock of its own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Quality(enum.IntEnum):
    """OPC UA-style quality. Only GOOD and UNCERTAIN values may drive a state."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


SignalValue = float | str


@dataclass(frozen=True, slots=True)
class Sample:
    """Signal values of one machine at one source time.

    ``values`` maps signal names (as in the configuration) to a float or a string. An empty
    ``values`` is a heartbeat: the source is alive and the last values still hold (an OPC UA
    subscription keep-alive), which keeps the machine from going stale.
    """

    machine: str
    ts_ms: int
    values: Mapping[str, SignalValue] = field(default_factory=dict)
    quality: Quality = Quality.GOOD
