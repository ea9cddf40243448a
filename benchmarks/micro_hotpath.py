"""Micro-benchmarks of the gateway's per-sample hot path, one piece at a time.

Run from the repository root::

    .venv/bin/python benchmarks/micro_hotpath.py            # every section, ~1 min
    .venv/bin/python benchmarks/micro_hotpath.py mqtt core  # some sections

Sections (each prints nanoseconds or microseconds per item, best of a few repeats, so a
shared machine shows as noise rather than as a slower figure):

- ``mqtt``: reading QoS 1 PUBLISH packets from a socket: paho 2.x's own reader (as the
  collector used it: ``loop_read()`` per packet plus a ``MSG_PEEK``) against
  ``BufferedClient``; and acknowledging them (paho's ``ack`` per message + its write
  against ``ack_many``).
- ``decode``: payload to ``Sample``: ``orjson.loads`` (and ``msgspec`` when installed),
  the validation, the whole ``decode``.
- ``objects``: constructing the per-sample objects (``Sample``, ``AckToken``).
- ``line``: the ``telemetry`` line of one sample.
- ``core``: ``Plant.receive`` for a sample that keeps its machine's state (the common case).
- ``store``: one group commit of N telemetry lines (``Store.commit``), and draining them
  (``outbox_peek`` + ``outbox_delete``).
- ``gateway``: ``Gateway.ingest.sample`` plus its share of ``commit()`` (no MQTT, no HTTP).

Figures and the choices they decided: ``benchmarks/README.md``, "Design choices, by
measurement".
"""

from __future__ import annotations

import argparse
import gc
import select
import socket
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from pilotline.collectors.mqtt.collector import AckToken  # noqa: E402
from pilotline.collectors.mqtt.packets import encode_publish  # noqa: E402
from pilotline.collectors.mqtt.parse import decode, from_object  # noqa: E402
from pilotline.rules import MachineSpec, MappedState, Plant, PlantSpec, Sample  # noqa: E402
from pilotline.rules.states import DEFAULT_STATE_MAP  # noqa: E402

T0 = 1_795_737_600_000
PER_COMMIT = (1, 4, 16, 100)
PAYLOAD = b'{"ts": 1795753511518, "power_w": 812.25, "state": "Executing"}'


def best(stmt: Callable[[], Any], number: int, repeat: int = 5) -> float:
    """Seconds per call, best of ``repeat``."""
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number


def show(label: str, seconds: float, note: str = "") -> None:
    if seconds < 1e-6:
        figure = f"{seconds * 1e9:8.0f} ns"
    else:
        figure = f"{seconds * 1e6:8.2f} us"
    print(f"  {label:<58} {figure}  {note}")


# -- mqtt ----------------------------------------------------------------------------------


def publish_packet(topic: str, mid: int, payload: bytes) -> bytes:
    """One MQTT 5 QoS 1 PUBLISH (no properties)."""
    return encode_publish(topic.encode(), payload, qos=1, mid=mid)


def _more_to_read(sock: socket.socket) -> bool:
    """How MqttCollector._readable asked, with paho's reader, whether to read on."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:
        return False


def _stream(messages: int) -> bytes:
    return b"".join(
        publish_packet(f"bench/bench/m-{i % 200:04d}/telemetry", i % 65535 + 1, PAYLOAD)
        for i in range(messages)
    )


def _read_all(client: Any, rsock: socket.socket, data: bytes, buffered: bool) -> float:
    """CPU seconds for the client to read ``data`` written by another thread."""
    wsock = client._test_wsock
    writer = threading.Thread(target=wsock.sendall, args=(data,))
    got = client._test_count
    started = time.process_time()
    writer.start()
    while got[0] < client._test_total:
        select.select([rsock], [], [], 1.0)
        if buffered:
            client.loop_read(1000)
        else:
            for _ in range(1000):  # what MqttCollector._readable did with paho's reader
                client.loop_read()
                if not _more_to_read(rsock):
                    break
    used = time.process_time() - started
    writer.join()
    return used


def _client(cls: type[paho.Client], total: int) -> tuple[paho.Client, socket.socket]:
    rsock, wsock = socket.socketpair()
    rsock.setblocking(False)
    client = cls(CallbackAPIVersion.VERSION2, client_id="bench", protocol=paho.MQTTv5)
    client.manual_ack_set(True)
    client._sock = rsock
    count = [0]

    def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        count[0] += 1
        _ = (msg.topic, msg.payload, msg.mid, msg.qos)

    def on_raw(topic: bytes, payload: bytes, mid: int, qos: int) -> None:
        count[0] += 1

    client.on_message = on_message
    if hasattr(client, "on_publish_raw"):
        client.on_publish_raw = on_raw
    client._test_wsock = wsock  # type: ignore[attr-defined]
    client._test_count = count  # type: ignore[attr-defined]
    client._test_total = total  # type: ignore[attr-defined]
    return client, rsock


def section_mqtt() -> None:
    from pilotline.collectors.mqtt.reader import BufferedClient

    print("mqtt: read and acknowledge QoS 1 PUBLISH packets (MQTT 5, 60-byte payload)")
    messages = 20_000
    data = _stream(messages)
    for label, cls, buffered in (
        ("paho loop_read() per packet + MSG_PEEK (before)", paho.Client, False),
        ("BufferedClient.loop_read(1000)", BufferedClient, True),
    ):
        runs = []
        for _ in range(3):
            client, rsock = _client(cls, messages)
            runs.append(_read_all(client, rsock, data, buffered))
            rsock.close()
            client._test_wsock.close()  # type: ignore[attr-defined]
        show(label, min(runs) / messages, "CPU per message")

    # Acknowledging 12 messages (one group commit at 2,000 samples/s): queue + write.
    for label, buffered in (
        ("paho ack() x12 + loop_write() (before)", False),
        ("BufferedClient.ack_many(12)", True),
    ):
        client, rsock = _client(BufferedClient if buffered else paho.Client, 0)
        wsock = client._test_wsock  # type: ignore[attr-defined]
        client.on_socket_register_write = lambda *_: None
        sink = threading.Event()

        def drain(w: socket.socket = wsock, sink: threading.Event = sink) -> None:
            while not sink.is_set():
                try:
                    w.recv(1 << 20)
                except OSError:
                    return

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        mids = list(range(1, 13))

        def ack_paho(c: paho.Client = client, mids: list[int] = mids) -> None:
            for mid in mids:
                c.ack(mid, 1)
            c.loop_write()

        def ack_buffered(c: Any = client, mids: list[int] = mids) -> None:
            c.ack_many(mids)

        seconds = best(ack_buffered if buffered else ack_paho, 2000)
        show(label, seconds / 12, "per message")
        sink.set()
        wsock.close()
        rsock.close()


# -- decode, objects, line -------------------------------------------------------------


def section_decode() -> None:
    print("decode: one payload", PAYLOAD.decode())
    show("orjson.loads", best(lambda: orjson.loads(PAYLOAD), 100_000))
    try:
        import msgspec  # type: ignore[import-not-found,unused-ignore]

        decoder = msgspec.json.Decoder()
        show("msgspec.json.Decoder().decode", best(lambda: decoder.decode(PAYLOAD), 100_000))
    except ImportError:
        print("  (msgspec not installed: not measured)")
    obj = orjson.loads(PAYLOAD)
    show("from_object (validation + Sample)", best(lambda: from_object(obj, "m", T0), 100_000))
    show("decode (the whole thing)", best(lambda: decode(PAYLOAD, "m", T0, 65_536), 100_000))


def section_objects() -> None:
    print("objects: per-sample allocations")
    values: dict[str, float | str] = {"power_w": 812.25, "state": "Executing"}
    show("Sample(machine, ts, values)", best(lambda: Sample("m", T0, values), 200_000))
    show("AckToken(mid, qos, delivery)", best(lambda: AckToken(1, 1, 1), 200_000))


def section_line() -> None:
    from pilotline.gateway.sinks.influx.points import telemetry_line

    print("line: telemetry line of one sample")
    values: dict[str, float | str] = {"power_w": 812.25, "state": "Executing"}
    show(
        "telemetry_line(site, zone, machine, values, ts)",
        best(lambda: telemetry_line("s", "z", "m-0001", values, T0), 100_000),
    )


# -- core ------------------------------------------------------------------------------


def section_core() -> None:
    print("core: Plant.receive, a sample that keeps its machine's state")
    machines = 200
    spec = PlantSpec(
        tuple(
            MachineSpec(f"m-{i:04d}", "z", "o", MappedState("state", DEFAULT_STATE_MAP))
            for i in range(machines)
        )
    )
    samples = [
        Sample(f"m-{i % machines:04d}", T0 + i * 5, {"power_w": 812.25, "state": "Executing"})
        for i in range(200_000)
    ]

    def run() -> None:
        plant = Plant(spec)
        for s in samples:
            plant.receive(s)
            plant.events()

    seconds = best(run, 1, repeat=3) / len(samples)
    show("Plant.receive + events()", seconds, f"({1 / seconds:,.0f} samples/s)")


# -- store -----------------------------------------------------------------------------


def section_store() -> None:
    from pilotline.gateway.sinks.influx.points import PRIORITY_TELEMETRY
    from pilotline.gateway.store import Store

    print("store: one group commit of N telemetry lines, then draining them")
    for n in (1, 12, 100, 1000):
        lines = [
            (PRIORITY_TELEMETRY, f"telemetry,machine=m-{i:04d},site=s,zone=z power_w=1.5 {T0 + i}")
            for i in range(n)
        ]
        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "s.db") as store:
            commits = max(20, 20_000 // n)
            started = time.process_time()
            for _ in range(commits):
                store.commit(now_ms=T0, lines=lines)
            commit_s = (time.process_time() - started) / (commits * n)
            started = time.process_time()
            drained = 0
            while store.outbox_depth():
                if hasattr(store, "outbox_lines"):  # the drainer's way since batches
                    last, texts = store.outbox_lines(5000)
                else:
                    rows = store.outbox_peek(5000)
                    last, texts = rows[-1][0], [text for _, text in rows]
                drained += len(texts)
                store.outbox_delete(last)
            drain_s = (time.process_time() - started) / drained
        show(f"commit of {n:>4} lines, per line", commit_s)
        show(f"drain (peek + delete, 5,000 a batch), per line [{n:>4} a commit]", drain_s)


# -- gateway ---------------------------------------------------------------------------


def section_gateway() -> None:
    import asyncio

    from pilotline.collectors.mqtt.connection import Connection
    from pilotline.gateway.config import load_config
    from pilotline.gateway.logs import configure_logging
    from pilotline.gateway.service import Gateway
    from pilotline.gateway.sinks.influx.writer import MemoryWriter

    print("gateway: PUBLISH payload -> collector -> ingest.sample, commit() every N, then drain")
    print("  (everything but the sockets, the event loop and the HTTP request)")
    configure_logging("json", "warning")
    machines = 200
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        text = [
            "site: bench",
            'mqtt: {url: "mqtt://127.0.0.1:1"}',
            'influx: {url: "http://127.0.0.1:1", org: o, bucket: b}',
            "store: STORE",
            "defaults: {debounce_s: 1, offering: always}",  # states confirmed within the warm-up
            "zones:",
            "  - id: bench",
            "    machines:",
        ]
        text += [
            f"      - {{id: m-{i:04d}, owner: o, mqtt: {{topic: t/m-{i:04d}}},"
            " state: {signal: state}}"
            for i in range(machines)
        ]
        for per_commit in PER_COMMIT:
            site = work / f"site-{per_commit}.yaml"
            store = work / f"g-{per_commit}.db"
            site.write_text("\n".join(text).replace("STORE", str(store)) + "\n")
            config = load_config(site)
            clock = [T0]

            def now_ms(clock: list[int] = clock) -> int:
                return clock[0]

            writer = MemoryWriter()
            gateway = Gateway(config, writer=writer, clock_ms=now_ms)
            collector = gateway.mqtt
            assert collector is not None
            assert gateway.drainer is not None
            client = collector._make_client()
            collector._conn = Connection(
                client=client,
                generation=1,
                connack=loop.create_future(),
                closed=loop.create_future(),
                loop=loop,
                receive_maximum=config.mqtt.receive_maximum,
                on_pause=lambda: None,
            )
            warm_up = 2_000
            total = 24_000
            messages = [
                (
                    f"t/m-{i % machines:04d}".encode(),
                    b'{"ts": %d, "power_w": 812.25, "state": "Executing"}' % (T0 + i),
                    i % 65535 + 1,
                )
                for i in range(warm_up + total)
            ]
            for i, (topic, payload, mid) in enumerate(messages[:warm_up]):
                clock[0] = T0 + i
                collector._handle_raw(client, topic, payload, mid, 1)
            gateway.commit()
            gc.collect()
            gc.freeze()  # the inputs above are this harness's, not the gateway's garbage
            started = time.process_time()
            for i, (topic, payload, mid) in enumerate(messages[warm_up:], start=warm_up):
                clock[0] = T0 + i
                collector._handle_raw(client, topic, payload, mid, 1)
                if i % per_commit == per_commit - 1:
                    gateway.commit()
            gateway.commit()
            used = (time.process_time() - started) / total
            gc.unfreeze()
            started = time.process_time()
            while gateway.store.outbox_depth():
                last, lines = gateway.store.outbox_lines(5000)
                writer.write(lines)
                gateway.store.outbox_delete(last)
            drained = (time.process_time() - started) / total
            gateway.store.close()
            show(f"receive + commit every {per_commit:>3}, per sample", used)
            show(f"  drain (outbox_lines + delete), per sample [{per_commit:>3}]", drained)
    loop.close()


SECTIONS = {
    "mqtt": section_mqtt,
    "decode": section_decode,
    "objects": section_objects,
    "line": section_line,
    "core": section_core,
    "store": section_store,
    "gateway": section_gateway,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", choices=[*SECTIONS, []], default=[])
    args = parser.parse_args()
    for name in args.sections or SECTIONS:
        SECTIONS[name]()


if __name__ == "__main__":
    main()
