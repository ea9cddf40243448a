"""``pilotline browse mqtt://HOST:PORT --seconds N``: the Sparkplug B machines on a broker.

Listens for births (NBIRTH, DBIRTH) for ``seconds`` and prints a ``machines:`` fragment to
paste: one machine per edge node or device that was born, with ``sparkplug: {group, node,
device?, metrics}`` and, when a metric's name looks like a state (``state``, ``status``), that
metric as the state signal. Comments list every metric with its datatype and birth value.

Read-only and passive: a session of its own with a clean start and no session kept, a
subscription to ``spBv1.0/<group>/#`` (every group without ``groups``) and nothing published,
so no rebirth is requested. Births are not retained: an edge node born before the listening
began shows only as data; the fragment names it in a comment (restart it, or let a primary
host ask it to rebirth, and browse again).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.collectors.sparkplug.payload import DataType, Metric, PayloadError, decode, typed
from pilotline.collectors.sparkplug.proto import sparkplug_b_pb2 as pb
from pilotline.collectors.sparkplug.topic import NAMESPACE, parse_topic

__all__ = ["Born", "listen", "render"]

# Metrics an edge node has for the host, not for the machine (Sparkplug 3.0, 6.4.2).
_CONTROL = ("Node Control/", "Node Info/", "Properties/")
_STATE_WORDS = re.compile(r"state|status", re.IGNORECASE)


@dataclass
class Born:
    """One edge node or device: its birth's metrics (name -> (datatype, value))."""

    group: str
    node: str
    device: str | None
    metrics: dict[str, tuple[int | None, Any]] = field(default_factory=dict)


@dataclass
class Heard:
    born: dict[tuple[str, str, str | None], Born] = field(default_factory=dict)
    unborn: set[tuple[str, str, str | None]] = field(default_factory=set)
    malformed: int = 0

    def message(self, topic: str, data: bytes) -> None:
        parts = parse_topic(topic)
        if parts is None or parts.kind == "STATE":
            return
        key = (parts.group, parts.node, parts.device)
        if parts.kind not in ("NBIRTH", "DBIRTH"):
            if parts.kind in ("NDATA", "DDATA") and key not in self.born:
                self.unborn.add(key)
            return
        try:
            payload = decode(data)
        except PayloadError:
            self.malformed += 1
            return
        self.unborn.discard(key)
        born = self.born[key] = Born(*key)
        for m in payload.metrics:
            if m.name is not None and not m.name.startswith(_CONTROL) and m.name != "bdSeq":
                born.metrics[m.name] = (m.datatype, _value(m))


def _value(m: Metric) -> Any:
    value = None if m.is_null else typed(m.raw, m.datatype)
    integer = m.datatype is not None and DataType.INT8 <= m.datatype <= DataType.UINT64
    return int(value) if integer and isinstance(value, float) else value


def _type_name(datatype: int | None) -> str:
    if datatype is None:
        return "?"
    try:
        return str(pb.DataType.Name(datatype))
    except ValueError:
        return f"type {datatype}"


def _readable(datatype: int | None) -> bool:
    # the types the host decodes into a sample (payload.typed); others are listed, not mapped
    return datatype is not None and DataType.INT8 <= datatype <= DataType.UUID


def _signal(name: str, taken: set[str]) -> str:
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.rsplit("/", maxsplit=1)[-1]).lower()
    base = re.sub(r"[^a-z0-9_]+", "_", snake).strip("_") or "signal"
    if base[0].isdigit():
        base = f"m_{base}"
    signal, n = base, 2
    while signal in taken:
        signal, n = f"{base}_{n}", n + 1
    return signal


def _machine_id(born: Born) -> str:
    name = born.node if born.device is None else f"{born.node}-{born.device}"
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._") or "machine"


def _machine(born: Born) -> tuple[dict[str, Any], list[str]]:
    """A machine's entry and the comment lines above it."""
    where = f"{born.group}/{born.node}" + (f"/{born.device}" if born.device else "")
    comments = [f"{where}: {'DBIRTH' if born.device else 'NBIRTH'}, {len(born.metrics)} metric(s)"]
    metrics: dict[str, str] = {}
    state: str | None = None
    for name, (datatype, value) in born.metrics.items():
        note = "" if _readable(datatype) else "  (not read by pilotline)"
        comments.append(f"  {name}: {_type_name(datatype)} = {value!r}{note}")
        if not _readable(datatype):
            continue
        if state is None and _STATE_WORDS.search(name):
            state = "state"
            metrics["state"] = name
        else:
            metrics[_signal(name, set(metrics) | {"state"})] = name
    source: dict[str, Any] = {"group": born.group, "node": born.node}
    if born.device is not None:
        source["device"] = born.device
    source["metrics"] = metrics
    if state is None:
        comments.append("  no metric looks like a state: choose state.signal (a map or "
                        "running_above/idle_below)")
    signal = state or next(iter(metrics), "state")
    entry = {"id": _machine_id(born), "owner": "CHANGE-ME", "sparkplug": source,
             "state": {"signal": signal}}
    return entry, comments


def render(heard: Heard, url: str, seconds: float) -> str:
    """The ``machines:`` fragment, with comments, for what was heard."""
    head = [f"# pilotline browse {url}: Sparkplug B births heard in {seconds:g} s"]
    blocks: list[str] = []
    for key in sorted(heard.born, key=lambda k: (k[0], k[1], k[2] or "")):
        born = heard.born[key]
        if not any(_readable(t) for t, _ in born.metrics.values()):
            head.append(f"# {'/'.join(p for p in key if p)}: no metric pilotline reads")
            continue
        entry, comments = _machine(born)
        text = yaml.safe_dump([entry], sort_keys=False, allow_unicode=True)
        blocks.append("".join(f"  # {c}\n" for c in comments)
                      + "".join(f"  {line}\n" for line in text.splitlines()))
    for key in sorted(heard.unborn, key=lambda k: (k[0], k[1], k[2] or "")):
        head.append(f"# {'/'.join(p for p in key if p)}: data but no birth heard (born before "
                    "the listening began: restart it or have a primary host ask for a rebirth)")
    if heard.malformed:
        head.append(f"# {heard.malformed} birth(s) that are not Sparkplug B payloads skipped")
    if not blocks:
        head.append("# no machine born: machines: []")
        return "\n".join(head) + "\n"
    return "\n".join(head) + "\nmachines:\n" + "".join(blocks)


def listen(
    broker: MqttBrokerConfig,
    groups: list[str],
    seconds: float,
    *,
    connect_timeout_s: float = 10.0,
) -> Heard:
    """Births heard on ``broker`` in ``seconds`` (``OSError``/``TimeoutError`` if it cannot
    connect, ``ValueError`` if it refuses)."""
    heard = Heard()
    lock = threading.Lock()
    connected = threading.Event()
    refused: list[str] = []
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"pilotline-browse-{uuid.uuid4().hex[:12]}",
        protocol=paho.MQTTv5,
        reconnect_on_failure=False,
    )
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password())
    if broker.tls:
        import ssl  # noqa: PLC0415 (only a TLS broker needs it)

        ca = str(broker.ca_file) if broker.ca_file is not None else None
        context = ssl.create_default_context(cafile=ca)
        if broker.cert_file is not None and broker.key_file is not None:
            context.load_cert_chain(broker.cert_file, broker.key_file)
        client.tls_set_context(context)

    def on_connect(c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            refused.append(str(rc))
        else:
            c.subscribe([(f"{NAMESPACE}/{g}/#", 0) for g in groups] or [(f"{NAMESPACE}/#", 0)])
        connected.set()

    def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with lock:
            heard.message(msg.topic, bytes(msg.payload))

    client.on_connect = on_connect
    client.on_message = on_message
    # clean start, no session expiry: the broker keeps nothing for a browse
    client.connect(broker.host, broker.port, 30, clean_start=True)
    client.loop_start()
    try:
        if not connected.wait(connect_timeout_s):
            raise TimeoutError(f"no CONNACK within {connect_timeout_s:g} s")
        if refused:
            raise ValueError(f"broker refused: {refused[0]}")
        time.sleep(seconds)
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return heard
