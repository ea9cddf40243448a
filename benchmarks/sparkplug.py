"""Sparkplug B DDATA decoded into samples, against the JSON path, for the same signals.

Run from the repository root::

    .venv/bin/python benchmarks/sparkplug.py              # every section, ~10 s
    .venv/bin/python benchmarks/sparkplug.py decode        # some sections
    .venv/bin/python benchmarks/sparkplug.py profile       # where the Sparkplug time goes

Sections (best of a few repeats, CPU time of this process, so a shared machine shows as
noise rather than as a slower figure):

- ``decode``: one DDATA payload of 1, 10 and 50 metrics named by alias (no name, no
  datatype: the DBIRTH gave them; Double, Float, Int32 negative as Sparkplug sends it
  (sign-extended in the uint32), Boolean, UInt32, Int64, Int16 and a String state) through
  ``payload.decode`` and ``Host.receive`` into one ``Sample``; and the same signals as a
  pilotline JSON payload (``{"ts": ..., "<signal>": ...}``) through the MQTT collector's
  ``parse.decode``, the function ``micro_hotpath.py`` measures. Metrics (signal values) per
  second and the ratio Sparkplug / JSON.
- ``gateway``: the same payloads end to end through one gateway (no sockets, no event loop):
  the Sparkplug collector's message handler (decode, host, ``Gateway.ingest.sample``) and the
  MQTT collector's ``_handle_raw`` (decode, ``ingest.sample``, the QoS 1 ack token), with a
  ``commit()`` every 16 messages, as in ``micro_hotpath.py gateway``.
- ``profile``: cProfile of the ``decode`` section's Sparkplug path at 10 metrics, the
  functions with the most own time.

Figures: ``benchmarks/README.md``, "Sparkplug B (issue 17)".
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pilotline.collectors.mqtt.parse import decode as json_decode  # noqa: E402
from pilotline.collectors.sparkplug.host import Binding, Host  # noqa: E402
from pilotline.collectors.sparkplug.payload import DataType  # noqa: E402
from pilotline.collectors.sparkplug.payload import decode as sp_decode  # noqa: E402
from pilotline.collectors.sparkplug.proto import sparkplug_b_pb2 as pb  # noqa: E402
from pilotline.rules import Sample  # noqa: E402

T0 = 1_795_737_600_000
SIZES = (1, 10, 50)
MESSAGES = 5_000  # DDATA per repeat
GROUP, NODE, DEVICE = "Plant1", "edge-1", "press-7"
DDATA = f"spBv1.0/{GROUP}/DDATA/{NODE}/{DEVICE}"
DBIRTH = f"spBv1.0/{GROUP}/DBIRTH/{NODE}/{DEVICE}"
NBIRTH = f"spBv1.0/{GROUP}/NBIRTH/{NODE}"

# (datatype, the oneof member, a value as the wire holds it, the same value in JSON)
KINDS: tuple[tuple[int, str, int | float | bool | str, float | str], ...] = (
    (DataType.DOUBLE, "double_value", 812.25, 812.25),
    (DataType.FLOAT, "float_value", 41.5, 41.5),
    (DataType.INT32, "int_value", (-17) & 0xFFFFFFFF, -17.0),
    (DataType.BOOLEAN, "boolean_value", True, 1.0),
    (DataType.UINT32, "int_value", 123_456, 123_456.0),
    (DataType.INT64, "long_value", 9_876_543_210, 9_876_543_210.0),
    (DataType.INT16, "int_value", 1_200, 1_200.0),
)
STATE = (DataType.STRING, "string_value", "Executing", "Executing")


def kinds(n: int) -> list[tuple[int, str, int | float | bool | str, float | str]]:
    """``n`` metrics: the last one the String state once there are several."""
    if n == 1:
        return [KINDS[0]]
    return [KINDS[i % len(KINDS)] for i in range(n - 1)] + [STATE]


def signal(i: int, n: int) -> str:
    return "state" if n > 1 and i == n - 1 else f"m{i:02d}"


def metric_name(i: int, n: int) -> str:
    return "Status/State" if n > 1 and i == n - 1 else f"Line/Metric {i:02d}"


def birth_payloads(n: int) -> tuple[bytes, bytes]:
    """NBIRTH (bdSeq, seq 0) and DBIRTH (seq 1) defining ``n`` metrics with aliases."""
    nb = pb.Payload()
    nb.timestamp, nb.seq = T0, 0
    bd = nb.metrics.add()
    bd.name, bd.datatype, bd.long_value = "bdSeq", DataType.INT64, 0
    db = pb.Payload()
    db.timestamp, db.seq = T0, 1
    for i, (datatype, member, raw, _) in enumerate(kinds(n)):
        m = db.metrics.add()
        m.name, m.alias, m.datatype, m.timestamp = metric_name(i, n), i + 1, datatype, T0
        setattr(m, member, raw)
    return nb.SerializeToString(), db.SerializeToString()


def ddata(n: int, k: int) -> bytes:
    """The ``k``-th DDATA after the births: every metric by alias, stamped by the node."""
    p = pb.Payload()
    ts = T0 + 1 + k
    p.timestamp, p.seq = ts, (k + 2) % 256
    for i, (_, member, raw, _) in enumerate(kinds(n)):
        m = p.metrics.add()
        m.alias, m.timestamp = i + 1, ts
        setattr(m, member, raw)
    return bytes(p.SerializeToString())


def json_payload(n: int, k: int) -> bytes:
    fields = [f'"ts": {T0 + 1 + k}']
    for i, (_, _, _, value) in enumerate(kinds(n)):
        text = f'"{value}"' if isinstance(value, str) else repr(value)
        fields.append(f'"{signal(i, n)}": {text}')
    return ("{" + ", ".join(fields) + "}").encode()


def bindings(n: int, machine: str = "press-07") -> list[Binding]:
    return [Binding(machine, GROUP, NODE, DEVICE,
                    {signal(i, n): metric_name(i, n) for i in range(n)})]


def born_host(n: int) -> Host:
    host = Host(bindings(n))
    nb, db = birth_payloads(n)
    host.receive(NBIRTH, sp_decode(nb), T0)
    host.receive(DBIRTH, sp_decode(db), T0)
    return host


def best_cpu(run: Callable[[], object], repeat: int = 5) -> float:
    """CPU seconds of ``run``, best of ``repeat``; garbage of the inputs frozen."""
    gc.collect()
    gc.freeze()
    times = []
    try:
        for _ in range(repeat):
            started = time.process_time()
            run()
            times.append(time.process_time() - started)
    finally:
        gc.unfreeze()
    return min(times)


def row(label: str, seconds: float, messages: int, n: int) -> float:
    per_metric = messages * n / seconds
    print(f"  {label:<44} {seconds / messages * 1e6:8.2f} us/message "
          f"{per_metric:>12,.0f} metrics/s {messages / seconds:>10,.0f} messages/s")
    return per_metric


# -- decode ------------------------------------------------------------------------------


def section_decode() -> dict[int, tuple[float, float]]:
    print("decode: payload -> Sample, one machine, per DDATA / JSON message")
    figures = {}
    for n in SIZES:
        sp = [ddata(n, k) for k in range(MESSAGES)]
        js = [json_payload(n, k) for k in range(MESSAGES)]
        print(f" {n} metric(s): Sparkplug DDATA {len(sp[0])} bytes, JSON {len(js[0])} bytes")
        host = born_host(n)
        out = host.receive(DDATA, sp_decode(sp[0]), T0)
        assert len(out.samples) == 1, out
        assert len(out.samples[0].values) == n, out
        ok = json_decode(js[0], "press-07", T0, 65_536)
        assert isinstance(ok, Sample), ok
        assert ok.values == out.samples[0].values, (ok.values, out.samples[0].values)

        def run_sp(sp: list[bytes] = sp, n: int = n) -> None:
            host = born_host(n)  # a fresh session: seq runs from the births on
            receive = host.receive
            for k, data in enumerate(sp):
                receive(DDATA, sp_decode(data), T0 + 1 + k)

        def run_decode_only(sp: list[bytes] = sp) -> None:
            for data in sp:
                sp_decode(data)

        def run_json(js: list[bytes] = js) -> None:
            for k, data in enumerate(js):
                json_decode(data, "press-07", T0 + 1 + k, 65_536)

        sp_rate = row("Sparkplug: decode + Host.receive", best_cpu(run_sp), MESSAGES, n)
        row("  of which payload.decode", best_cpu(run_decode_only), MESSAGES, n)
        js_rate = row("JSON: parse.decode", best_cpu(run_json), MESSAGES, n)
        figures[n] = (sp_rate, js_rate)
    print()
    print("  | metrics a message | Sparkplug metrics/s | JSON metrics/s | Sparkplug / JSON |")
    print("  |---|---|---|---|")
    for n, (sp_rate, js_rate) in figures.items():
        print(f"  | {n} | {sp_rate:,.0f} | {js_rate:,.0f} | {sp_rate / js_rate:.2f} |")
    return figures


# -- gateway -----------------------------------------------------------------------------


def _site(work: Path, n: int, kind: str) -> Path:
    lines = [
        "site: bench",
        'mqtt: {url: "mqtt://127.0.0.1:1"}',
        'influx: {url: "http://127.0.0.1:1", org: o, bucket: b}',
        f"store: {work / f'{kind}-{n}.db'}",
        "defaults: {debounce_s: 1, offering: always}",
        "zones:",
        "  - id: bench",
        "    machines:",
    ]
    if kind == "sparkplug":
        metrics = ", ".join(f'{signal(i, n)}: "{metric_name(i, n)}"' for i in range(n))
        source = f"sparkplug: {{group: {GROUP}, node: {NODE}, device: {DEVICE}, " \
                 f"metrics: {{{metrics}}}}}"
    else:
        source = "mqtt: {topic: t/press-07}"
    state = "state: {signal: state}"
    if n == 1:
        state = "state: {signal: m00, running_above: 100, idle_below: 10}"
    lines.append(f"      - {{id: press-07, owner: o, {source}, {state}}}")
    path = work / f"{kind}-{n}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _sparkplug_handler(collector: Any) -> Callable[[int, bytes], None]:
    message = collector._message

    def handle(k: int, data: bytes) -> None:
        message(DDATA, data)

    return handle


def _mqtt_handler(collector: Any, client: Any) -> Callable[[int, bytes], None]:
    raw = collector._handle_raw

    def handle(k: int, data: bytes) -> None:
        raw(client, b"t/press-07", data, k % 65535 + 1, 1)

    return handle


def section_gateway() -> None:
    import asyncio

    from pilotline.collectors.mqtt.connection import Connection
    from pilotline.gateway.config import load_config
    from pilotline.gateway.logs import configure_logging
    from pilotline.gateway.service import Gateway
    from pilotline.gateway.sinks.influx.writer import MemoryWriter

    print("gateway: payload -> collector -> Gateway.ingest.sample, commit() every 16 messages")
    print("  (everything but the sockets and the event loop; CPU per message and per metric)")
    configure_logging("json", "warning")
    per_commit = 16
    loop = asyncio.new_event_loop()
    figures = {}
    for n in SIZES:
        rates = []
        for kind in ("sparkplug", "json"):
            with tempfile.TemporaryDirectory() as tmp:
                config = load_config(_site(Path(tmp), n, kind))
                clock = [T0]

                def now_ms(clock: list[int] = clock) -> int:
                    return clock[0]

                gateway = Gateway(config, writer=MemoryWriter(), clock_ms=now_ms)
                if kind == "sparkplug":
                    sp = gateway.sparkplug
                    assert sp is not None
                    nb, db = birth_payloads(n)
                    sp._message(NBIRTH, nb)
                    sp._message(DBIRTH, db)
                    payloads = [ddata(n, k) for k in range(MESSAGES)]
                    handle = _sparkplug_handler(sp)
                else:
                    mqtt = gateway.mqtt
                    assert mqtt is not None
                    client = mqtt._make_client()
                    mqtt._conn = Connection(
                        client=client, generation=1, connack=loop.create_future(),
                        closed=loop.create_future(), loop=loop,
                        receive_maximum=config.mqtt.receive_maximum,  # type: ignore[union-attr]
                        on_pause=lambda: None,
                    )
                    payloads = [json_payload(n, k) for k in range(MESSAGES)]
                    handle = _mqtt_handler(mqtt, client)

                gateway.commit()
                gc.collect()
                gc.freeze()
                started = time.process_time()
                for k, data in enumerate(payloads):
                    clock[0] = T0 + 1 + k
                    handle(k, data)
                    if k % per_commit == per_commit - 1:
                        gateway.commit()
                gateway.commit()
                used = time.process_time() - started
                gc.unfreeze()
                samples = sum(gateway.metrics.samples.values())
                assert samples >= MESSAGES, (kind, samples)
                gateway.store.close()
                rates.append(row(f"{kind}, {n} metric(s)", used, MESSAGES, n))
        figures[n] = (rates[0], rates[1])
    loop.close()
    print()
    print("  | metrics a message | Sparkplug metrics/s | JSON metrics/s | Sparkplug / JSON |")
    print("  |---|---|---|---|")
    for n, (sp_rate, js_rate) in figures.items():
        print(f"  | {n} | {sp_rate:,.0f} | {js_rate:,.0f} | {sp_rate / js_rate:.2f} |")


# -- profile -----------------------------------------------------------------------------


def section_profile() -> None:
    n = 10
    print(f"profile: Sparkplug decode + Host.receive, {n} metrics, {MESSAGES} DDATA (own time)")
    sp = [ddata(n, k) for k in range(MESSAGES)]
    host = born_host(n)
    profiler = cProfile.Profile()
    profiler.enable()
    for k, data in enumerate(sp):
        host.receive(DDATA, sp_decode(data), T0 + 1 + k)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(14)
    print(text.getvalue())


SECTIONS: dict[str, Callable[[], object]] = {
    "decode": section_decode,
    "gateway": section_gateway,
    "profile": section_profile,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", choices=[*SECTIONS, []], default=[])
    args = parser.parse_args()
    for name in args.sections or SECTIONS:
        SECTIONS[name]()
        print()


if __name__ == "__main__":
    main()
