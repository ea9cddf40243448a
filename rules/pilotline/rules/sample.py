"""The core's input port: one normalized observation of one machine.

Collectors import this type (and nothing else) from the core. A sample carries event time
(the source's clock) in epoch milliseconds; the core never reads a clock of its own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple


class Quality(enum.IntEnum):
    """OPC UA-style quality. Only GOOD and UNCERTAIN values may drive a state."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


SignalValue = float | str


_NO_VALUES: Mapping[str, SignalValue] = MappingProxyType({})


class Sample(NamedTuple):
    """Signal values of one machine at one source time.

    ``values`` maps signal names (as in the configuration) to a float or a string. An empty
    ``values`` is a heartbeat: the source is alive and the last values still hold (an OPC UA
    subscription keep-alive), which keeps the machine from going stale.

    Immutable, as a NamedTuple rather than a frozen dataclass: one is made per message, and
    a NamedTuple is the cheaper to make (measured: benchmarks/README.md).
    """

    machine: str
    ts_ms: int
    values: Mapping[str, SignalValue] = _NO_VALUES
    quality: Quality = Quality.GOOD
