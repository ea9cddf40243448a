"""The service's timing knobs: how long it batches, how long it waits for a backlog and for
the outbox on stop. (How far ahead a source may be is each machine's ``max_skew_s``.)"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServiceOptions:
    lateness_ms: int = 2_000
    # Group commit: the committer waits up to commit_interval_s after the first staged item
    # for more to join, and commits at once when commit_eager_acks MQTT messages wait for
    # their ack (below Mosquitto's default in-flight window of 20, so a broker held back by
    # its window never waits for the linger). Samples per commit and CPU per sample without
    # the linger, measured: benchmarks/README.md.
    commit_interval_s: float = 0.010
    commit_eager_acks: int = 16
    commit_max_items: int = 5_000
    stop_timeout_s: float = 8.0
    catch_up_quiet_s: float = 1.0
    catch_up_max_s: float = 60.0
