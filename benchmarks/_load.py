"""The MQTT load of throughput.py and footprint.py: machines, topics, the site file, and the
publisher role (this file run as ``_load.py _publish SPEC``).

Machine ``i`` is ``m-0000``... on topic ``bench/bench/m-0000/telemetry``; payloads are in the
DESIGN format, ``{"ts": 1795753511518, "power_w": 812.25, "state": "Executing"}``, with ``ts``
the publish time in epoch ms, made unique per machine (+1 ms if needed, because
victoria-metrics deduplicates a series by millisecond).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _launch import dispatch_role, read_json, wall_ms, write_json

TOPIC = "bench/{zone}/{machine}/telemetry"
TOPIC_ZONE = "bench"
SCRIPT = Path(__file__).resolve()


def machine_id(i: int) -> str:
    return f"m-{i:04d}"


def topic_of(i: int) -> str:
    return TOPIC.format(zone=TOPIC_ZONE, machine=machine_id(i))


SITE = """\
site: {site}
mqtt:
  url: {mqtt_url}
  client_id: pilotline-bench-gateway
influx:
  url: {influx_url}
  org: pilot
  bucket: pilotline
store: {store}
api: {api}
log:
  level: info
  format: json
defaults:
  debounce_s: 20
  stale_after_s: 60
  min_idle_s: 900
  publish_interval_s: 60
  offering: always
zones:
{zones}"""

MACHINE = """\
      - id: {id}
        owner: owner-{owner}
        capabilities: [laser-cutting]
        mqtt: {{topic: {topic}}}
        state: {{signal: state}}
"""


def site_yaml(
    machines: int,
    *,
    mqtt_url: str,
    influx_url: str,
    store: Path,
    api: str,
    zone_size: int = 0,
    site: str = "bench-site",
) -> str:
    """A site of ``machines`` MQTT machines, in zones of ``zone_size`` (0: one zone)."""
    size = zone_size or machines
    zones = []
    for z, first in enumerate(range(0, machines, size)):
        body = "".join(
            MACHINE.format(id=machine_id(i), owner=i % 7, topic=topic_of(i))
            for i in range(first, min(machines, first + size))
        )
        zone_id = "bench" if size >= machines else f"zone-{z:03d}"
        zones.append(f"  - id: {zone_id}\n    machines:\n{body}")
    return SITE.format(
        site=site,
        mqtt_url=mqtt_url,
        influx_url=influx_url,
        store=store,
        api=api,
        zones="".join(zones),
    )


# -- role: publisher ---------------------------------------------------------------------------


class PahoLink:
    """paho-mqtt 2.x driven from this one thread (no ``loop_start``): ``publish()`` writes
    straight to the socket and ``loop()`` reads the PUBACKs. paho's network thread would cost
    a socketpair wake-up and GIL hand-overs per message, several times slower."""

    def __init__(self, port: int, client_id: str, topics: list[str], window: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.topics = topics
        self.acked = 0
        self.last_ack_ms = 0
        connected = threading.Event()

        def on_publish(*_args: Any) -> None:
            self.acked += 1
            self.last_ack_ms = wall_ms()

        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        self.client.max_inflight_messages_set(window)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = lambda *_: connected.set()
        self.client.on_publish = on_publish
        self.client.connect("127.0.0.1", port, keepalive=60)
        deadline = time.monotonic() + 10
        while not connected.is_set():
            if time.monotonic() > deadline:
                raise SystemExit("publisher: no CONNACK within 10 s")
            self.client.loop(0.05)

    def send(self, batch: list[tuple[int, bytes]]) -> None:
        for k, payload in batch:
            self.client.publish(self.topics[k], payload, qos=1)

    def poll(self, timeout_s: float) -> None:
        self.client.loop(timeout_s)

    def close(self) -> None:
        self.client.disconnect()


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


class RawLink:
    """MQTT 3.1.1 over a bare socket: PUBLISH packets (QoS 1) built as bytes and sent in one
    ``sendall`` per batch; every packet the broker sends after CONNACK is a 4-byte PUBACK, so
    acknowledgements are counted by bytes. Several times faster than paho, so one publisher
    process is no longer what limits the ceilings on a 2-core machine."""

    def __init__(self, port: int, client_id: str, topics: list[str], window: int) -> None:
        import socket

        del window  # the caller bounds the messages in flight
        self.heads = [len(t).to_bytes(2, "big") + t.encode() for t in topics]
        self.acked = 0
        self.last_ack_ms = 0
        self._pending = 0  # bytes of a PUBACK split across reads
        self._mid = 0
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = client_id.encode()
        # CONNECT: "MQTT", level 4, clean session, keepalive 0 (no PINGREQ needed)
        body = b"\x00\x04MQTT\x04\x02\x00\x00" + len(cid).to_bytes(2, "big") + cid
        self.sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
        connack = b""
        while len(connack) < 4:
            chunk = self.sock.recv(4 - len(connack))
            if not chunk:
                raise SystemExit("publisher: the broker closed the connection before CONNACK")
            connack += chunk
        if connack != b"\x20\x02\x00\x00":
            raise SystemExit(f"publisher: CONNACK refused: {connack!r}")
        self.sock.setblocking(False)

    def send(self, batch: list[tuple[int, bytes]]) -> None:
        packets = []
        mid = self._mid
        for k, payload in batch:
            mid = mid + 1 if mid < 65535 else 1
            head = self.heads[k]
            packets.append(
                b"\x32"
                + _remaining_length(len(head) + 2 + len(payload))
                + head
                + mid.to_bytes(2, "big")
                + payload
            )
        self._mid = mid
        self.sock.setblocking(True)
        self.sock.sendall(b"".join(packets))
        self.sock.setblocking(False)
        self.poll(0)

    def poll(self, timeout_s: float) -> None:
        import select

        if timeout_s > 0:
            select.select([self.sock], [], [], timeout_s)
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            if not data:
                raise SystemExit("publisher: the broker closed the connection")
            total = self._pending + len(data)
            self.acked += total // 4
            self._pending = total % 4
            self.last_ack_ms = wall_ms()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.setblocking(True)
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        self.sock.close()


def role_publish(spec: dict[str, Any]) -> None:
    """Publish the machines ``spec["machines"]`` round-robin at QoS 1 for ``seconds`` (or until
    ``count`` messages, when given), then write a JSON summary to ``out``.

    Bounded three ways: at most ``window`` messages without PUBACK, at most ``rate`` msg/s
    (0: no limit), and at most ``backlog`` messages ahead of the consumer (whose status file
    says how many it has received; each of ``nproc`` publishers takes its share).
    ``client`` is ``raw`` (bytes on a socket, the default) or ``paho``.
    """
    machines: list[int] = spec["machines"]
    topics = [topic_of(i) for i in machines]
    seconds: float = spec["seconds"]
    count: int = spec.get("count") or 0
    rate: float = spec["rate"]
    window: int = spec["window"]
    backlog: int = spec.get("backlog", 0)
    nproc: int = spec.get("nproc", 1)
    consumer = Path(spec["consumer_status"]) if spec.get("consumer_status") else None
    received_base: int = spec.get("received_base", 0)
    out = Path(spec["out"])
    last_ts = [int(spec.get("ts_floor", 0))] * len(topics)
    link_type = RawLink if spec.get("client", "raw") == "raw" else PahoLink
    link = link_type(spec["port"], spec["client_id"], topics, window)
    if spec.get("go"):
        # Connected: say so, and start when the parent says go (it takes its CPU snapshot
        # in between, so the measured window holds no interpreter start-up).
        go = Path(spec["go"])
        write_json(out.with_suffix(".ready"), {"pid": os.getpid()})
        deadline = time.monotonic() + 60
        while not go.exists():
            if time.monotonic() > deadline:
                raise SystemExit("publisher: no go within 60 s")
            link.poll(0.001)

    published = 0
    throttled_s = 0.0
    window_s = 0.0
    received = 0
    next_status_read = 0.0
    first_ms = wall_ms()
    start = time.monotonic()
    end = start + seconds
    limit = count or sys.maxsize
    n = len(topics)
    k = 0
    while (now := time.monotonic()) < end and published < limit:
        link.poll(0)  # PUBACKs in
        allowed = min(window - (published - link.acked), limit - published)
        if rate > 0:
            allowed = min(allowed, int((now - start) * rate) + 1 - published)
        if consumer is not None and backlog > 0:
            if now >= next_status_read:
                status = read_json(consumer)
                if status is not None:
                    received = int(status.get("received", 0)) - received_base
                next_status_read = now + 0.02
            ahead = backlog // nproc - (published - received // nproc)
            if ahead <= 0:
                link.poll(0.002)
                throttled_s += time.monotonic() - now
                continue
            allowed = min(allowed, ahead)
        if allowed <= 0:
            if rate <= 0:
                waited = time.monotonic()
                link.poll(0.0005)
                window_s += time.monotonic() - waited  # PUBACKs, not the rate, hold it
            else:
                link.poll(min(0.005, 1 / rate))
            continue
        batch = []
        ts = wall_ms()
        for _ in range(min(allowed, 256)):
            t = ts if ts > last_ts[k] else last_ts[k] + 1  # unique per machine (VM dedups)
            last_ts[k] = t
            power = 790.0 + (published % 97) / 4
            batch.append((k, f'{{"ts": {t}, "power_w": {power}, "state": "Executing"}}'.encode()))
            published += 1
            k = k + 1 if k + 1 < n else 0
        link.send(batch)
    publish_end_ms = wall_ms()
    deadline = time.monotonic() + 60
    while link.acked < published and time.monotonic() < deadline:
        link.poll(0.01)
    link.close()
    usage = os.times()
    write_json(
        out,
        {
            "published": published,
            "acked": link.acked,
            "first_ms": first_ms,
            "publish_end_ms": publish_end_ms,
            "last_ack_ms": link.last_ack_ms,
            "throttled_s": throttled_s,
            "window_s": window_s,
            "cpu_s": usage.user + usage.system,
            "max_ts": max(last_ts),
        },
    )


if __name__ == "__main__":
    if not dispatch_role(sys.argv[1:], {"_publish": role_publish}):
        sys.exit("usage: _load.py _publish SPEC_JSON (started by the benchmarks)")
