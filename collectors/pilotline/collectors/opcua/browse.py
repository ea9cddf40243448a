"""``pilotline browse ENDPOINT``: list a server's variables to write the ``nodes:`` map.

Walks the address space from the Objects folder (the standard Server object is skipped)
and prints one line per variable: its node id (``nsu=`` form, which survives namespace
index changes), data type, current value, access level and browse path. An object named
``MachineryItemState`` (OPC 40001-1) marks its ``CurrentState`` as a Machinery state
machine. With ``yaml_fragment=True`` the output is a ``machines:`` fragment to paste, one
machine per object that holds variables, with ``state_model: machinery`` where found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from asyncua import Client, ua
from asyncua.common.node import Node

from pilotline.collectors.opcua.client import close, make_client
from pilotline.collectors.opcua.config import OpcuaSource

__all__ = ["BrowsedVariable", "browse", "browse_variables"]

_SERVER_OBJECT = ua.NodeId(ua.ObjectIds.Server)
_MACHINERY_STATE = "MachineryItemState"


@dataclass(frozen=True, slots=True)
class BrowsedVariable:
    node_id: str
    path: tuple[str, ...]
    data_type: str
    value: str
    access: str
    machinery_state: bool


async def browse_variables(client: Client, depth: int = 10) -> list[BrowsedVariable]:
    namespaces = await client.get_namespace_array()
    found: list[BrowsedVariable] = []

    def node_text(node_id: ua.NodeId) -> str:
        text = str(node_id.to_string())
        if node_id.NamespaceIndex and node_id.NamespaceIndex < len(namespaces):
            text = re.sub(r"^ns=\d+;", f"nsu={namespaces[node_id.NamespaceIndex]};", text)
        return text

    async def walk(node: Node, path: tuple[str, ...], level: int) -> None:
        if level > depth:
            return
        for child in await node.get_children():
            if child.nodeid == _SERVER_OBJECT:
                continue
            name = (await child.read_browse_name()).Name
            cls = await child.read_node_class()
            here = (*path, name)
            if cls == ua.NodeClass.Variable:
                found.append(await _describe(child, here, node_text(child.nodeid)))
            if cls in (ua.NodeClass.Object, ua.NodeClass.Variable):
                await walk(child, here, level + 1)

    await walk(client.nodes.objects, (), 1)
    return found


async def _describe(node: Node, path: tuple[str, ...], text: str) -> BrowsedVariable:
    value = "?"
    data_type = "?"
    access = "?"
    try:
        dtype = await node.read_data_type()
        data_type = (await Node(node.session, dtype).read_browse_name()).Name
    except Exception:  # noqa: BLE001 - one odd node must not stop the listing
        data_type = "?"
    try:
        value = _short(await node.read_value())
    except Exception as exc:  # noqa: BLE001
        value = f"<{type(exc).__name__}>"
    try:
        bits = int((await node.read_attribute(ua.AttributeIds.AccessLevel)).Value.Value)
        access = "RW" if bits & 0b10 else ("R" if bits & 0b1 else "-")
    except Exception:  # noqa: BLE001
        access = "?"
    machinery = len(path) >= 2 and path[-2] == _MACHINERY_STATE and path[-1] == "CurrentState"
    return BrowsedVariable(text, path, data_type, value, access, machinery)


def _short(value: Any) -> str:
    if isinstance(value, ua.LocalizedText):
        value = value.Text
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _signal_name(name: str) -> str:
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
    return re.sub(r"[^a-z0-9_]+", "_", snake).strip("_") or "signal"


def _machine_id(name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._") or "machine"


def render(endpoint: str, variables: list[BrowsedVariable], yaml_fragment: bool) -> str:
    if not yaml_fragment:
        lines = [f"{len(variables)} variables on {endpoint}"]
        for v in variables:
            mark = "  [Machinery ItemState: state_model machinery]" if v.machinery_state else ""
            lines.append(
                f"{v.node_id}  {v.data_type}  {v.value}  {v.access}  {'/'.join(v.path)}{mark}"
            )
        return "\n".join(lines)
    machines: dict[str, dict[str, Any]] = {}
    for v in variables:
        if len(v.path) < 2 or not v.node_id.startswith("nsu="):
            continue  # the standard namespace (i=...) holds no machine signals
        owner = v.path[-3] if v.machinery_state and len(v.path) >= 3 else v.path[-2]
        machine = machines.setdefault(
            _machine_id(owner),
            {
                "id": _machine_id(owner),
                "owner": "CHANGE-ME",
                "opcua": {"endpoint": endpoint, "nodes": {}},
            },
        )
        signal = "state" if v.machinery_state else _signal_name(v.path[-1])
        machine["opcua"]["nodes"][signal] = v.node_id
        if v.machinery_state:
            machine["opcua"]["state_model"] = "machinery"
            machine["state"] = {"signal": "state"}
    for machine in machines.values():
        machine.setdefault("state", {"signal": next(iter(machine["opcua"]["nodes"]))})
    return yaml.safe_dump({"machines": list(machines.values())}, sort_keys=False)


async def browse(
    endpoint: str,
    *,
    depth: int = 10,
    yaml_fragment: bool = False,
    source: OpcuaSource | None = None,
    pki_dir: Path | None = None,
    timeout_s: float = 10.0,
) -> str:
    """The listing (or YAML fragment) of ``endpoint``'s variables.

    ``source`` gives security and user settings (as in a machine's ``opcua:`` section);
    without it the connection uses SecurityPolicy None.
    """
    settings = source or OpcuaSource(endpoint=endpoint, nodes={"x": "i=2258"})
    client = await make_client(
        endpoint, settings, pki_dir=pki_dir or Path("./var/opcua-pki"), connect_timeout_s=timeout_s
    )
    await client.connect()
    try:
        variables = await browse_variables(client, depth)
    finally:
        await close(client)
    return render(endpoint, variables, yaml_fragment)
