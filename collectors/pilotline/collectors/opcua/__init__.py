"""OPC UA collector: subscriptions on asyncua, one connection per endpoint.

Only the configuration is imported here, so that ``pilotline check`` (which validates the
``opcua:`` sections) does not pay for importing asyncua. The collector lives in
``pilotline.collectors.opcua.collector`` and discovery in ``pilotline.collectors.opcua.browse``.
"""

from pilotline.collectors.opcua.config import OpcuaSource, connection_conflicts

__all__ = ["OpcuaSource", "connection_conflicts"]
