"""The interlock's OPC UA side: write a machine's boolean node, then read it back.

One session per endpoint for the interlock's writes, beside the collector's: the collector's
is a subscriber's with its own reconnect loop, and a refused write must not tear it down
(nor a collector reconnect drop a write). It is made with the machine's own ``opcua:``
settings (security, certificates, trust, user: ``collectors.opcua.client.make_client``), so
it goes where the collector goes, as the same client. Opened when a write is due, kept while
it works, dropped on any failure (the next attempt opens a fresh one).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from asyncua import Client, ua
from asyncua.common.node import Node

from pilotline.collectors.opcua.client import close, connect, describe, make_client
from pilotline.collectors.opcua.config import OpcuaSource
from pilotline.collectors.opcua.errors import OpcuaError
from pilotline.collectors.opcua.items import resolve

__all__ = ["NodeWriter", "WriteFailedError"]


class WriteFailedError(Exception):
    """The write, or the read after it, did not happen; the message says why."""


class NodeWriter:
    """Writes booleans to the nodes of one endpoint and reads them back."""

    def __init__(
        self, endpoint: str, source: OpcuaSource, *, pki_dir: Path, timeout_s: float
    ) -> None:
        self.endpoint = endpoint
        self._source = source
        self._pki_dir = pki_dir
        self._timeout_s = timeout_s
        self._client: Client | None = None
        self._namespaces: list[str] = []

    async def write(self, node: str, readback: str, value: bool) -> bool | None:
        """Write ``value`` to ``node``, then read ``readback``: its value (None: not a
        boolean). Raises ``WriteFailedError`` when either cannot be done."""
        try:
            async with asyncio.timeout(self._timeout_s):
                client = await self._session()
                target = self._node(client, node)
                await target.write_value(ua.DataValue(ua.Variant(value, ua.VariantType.Boolean)))
                read = await self._node(client, readback).read_value()
        except WriteFailedError:
            await self.close()
            raise
        except ua.UaStatusCodeError as exc:
            # the server answered: the session is fine, the node refused
            raise WriteFailedError(describe(exc)) from None
        except (TimeoutError, OSError, ua.UaError, OpcuaError, ConnectionError) as exc:
            await self.close()
            raise WriteFailedError(describe(exc) or "timed out") from None
        return read if isinstance(read, bool) else None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await close(client)

    async def _session(self) -> Client:
        if self._client is not None:
            return self._client
        client = await make_client(
            self.endpoint, self._source, pki_dir=self._pki_dir,
            connect_timeout_s=self._timeout_s, request_timeout_s=self._timeout_s,
        )
        await connect(client, self.endpoint, self._source, self._timeout_s)
        try:
            self._namespaces = list(await client.get_namespace_array())
        except BaseException:
            await close(client)
            raise
        self._client = client
        return client

    def _node(self, client: Client, text: str) -> Node:
        node_id = resolve(text, self._namespaces)
        if isinstance(node_id, str):
            raise WriteFailedError(f"{text}: {node_id}")
        return client.get_node(node_id)
