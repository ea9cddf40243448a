"""The gateway service: wiring (gateway.py) and the parts it wires, one job per module.

``ingest`` the way in (the hot path), ``handlers`` what happens to the core's events,
``commit`` the group commit and its drop log, ``timer`` the rules timer and the catch-up
after a restart, ``reports`` utilization, ``actions`` operators' alert actions, ``health``
``/health`` and the gauges, ``collectors`` the protocol every collector meets, ``options``
the timing knobs, ``staged`` the batch waiting for the next commit.
"""

from pilotline.gateway.service.commit import DROP_LOG_INTERVAL_MS
from pilotline.gateway.service.gateway import Gateway
from pilotline.gateway.service.health import DROPPING_UNHEALTHY_MS
from pilotline.gateway.service.options import ServiceOptions
from pilotline.gateway.service.reports import UTILIZATION_BACKFILL_DAYS, UTILIZATION_REPORT

__all__ = [
    "DROPPING_UNHEALTHY_MS",
    "DROP_LOG_INTERVAL_MS",
    "UTILIZATION_BACKFILL_DAYS",
    "UTILIZATION_REPORT",
    "Gateway",
    "ServiceOptions",
]
