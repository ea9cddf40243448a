"""A simulated OPC UA server playing machines of the pilot line, on asyncua's own Server.

``python -m pilotline.demo.opcua_server --port 4840 [--secure --pki DIR] [--bench 500]``
prints ``READY opc.tcp://127.0.0.1:4840`` once it listens, then updates its variables from
:class:`pilotline.demo.plant.Plant` every ``--interval`` seconds (each value stamped with
the plant's time as its SourceTimestamp).

Machines (namespace ``urn:pilotline:demo``, string node ids):

* ``laser-cut-01`` speaks OPC 40001-1: ``laser-cut-01.MachineryItemState.CurrentState``
  (LocalizedText: Executing, NotExecuting, OutOfService), inside an object named
  ``MachineryItemState`` as Machinery servers expose it;
* ``bonder-01`` speaks PackML: ``bonder-01.PackMLState`` (Int32 state code, 6 = Execute);
* ``laser-mark-01`` speaks MTConnect: ``laser-mark-01.Execution`` (String, ACTIVE, READY...);
* each has ``<id>.PowerW``, ``<id>.TemperatureC`` and one more signal.

``test.Value`` (Double), ``test.Text`` (String) and ``test.Flag`` (Boolean) are writable and
never touched by the simulation: tests write them and watch what the collector reports.
``--bench N`` adds ``bench.v0000``... Doubles, all rewritten every ``--bench-interval-ms``.
``--incident down:laser-cut-01:START_MS:END_MS`` (repeatable) stages the demo's incidents
(:class:`pilotline.demo.plant.Incident`); while a machine is silent (``offline``) its state
variable reads Bad_NoCommunication, as an aggregating server reports a device it lost.

``--secure`` offers only Basic256Sha256 Sign and SignAndEncrypt. The server's certificate
is generated once in ``PKI/server/``; client certificates are accepted only when the same
certificate (by SHA-256) sits in ``PKI/trusted-clients/`` (read at each session).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
from asyncua import Server, ua
from asyncua.common.node import Node
from asyncua.crypto import cert_gen
from asyncua.crypto.validator import CertificateValidatorMethod
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from pilotline.demo.plant import Incident, Plant
from pilotline.gateway.clock import wall_clock_ms

__all__ = ["DEMO_MACHINES", "NAMESPACE", "demo_nodes", "main", "serve"]

NAMESPACE: Final = "urn:pilotline:demo"
# machine id -> (vocabulary, state node suffix, state model)
DEMO_MACHINES: Final = {
    "laser-cut-01": ("opc40001", "MachineryItemState.CurrentState", "machinery"),
    "bonder-01": ("packml", "PackMLState", "packml"),
    "laser-mark-01": ("mtconnect", "Execution", "mtconnect"),
}
_PACKML_CODES: Final = {"Idle": 4, "Execute": 6, "Held": 11, "Aborted": 9, "Resetting": 15}
_SIGNALS: Final = {
    "power_w": "PowerW",
    "temperature_c": "TemperatureC",
    "chiller_c": "ChillerC",
    "force_n": "ForceN",
}


def demo_nodes(machine: str) -> dict[str, str]:
    """The ``opcua.nodes`` map of a demo machine, with ``nsu=`` node ids."""
    state_node = DEMO_MACHINES[machine][1]
    nodes = {"state": f"nsu={NAMESPACE};s={machine}.{state_node}"}
    extra = "force_n" if machine.startswith("bonder") else "chiller_c"
    for name in ("power_w", "temperature_c", extra):
        nodes[name] = f"nsu={NAMESPACE};s={machine}.{_SIGNALS[name]}"
    return nodes


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _trust_validator(trusted_dir: Path) -> CertificateValidatorMethod:
    async def validate(cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
        wanted = _fingerprint(cert.public_bytes(serialization.Encoding.DER))
        for path in trusted_dir.iterdir():  # noqa: ASYNC240 - a few small files per session
            try:
                data = path.read_bytes()
                if data.lstrip().startswith(b"-----BEGIN"):
                    data = x509.load_pem_x509_certificate(data).public_bytes(
                        serialization.Encoding.DER
                    )
            except (OSError, ValueError):
                continue
            if _fingerprint(data) == wanted:
                return
        from asyncua.common.utils import ServiceError  # noqa: PLC0415 - only when secure

        raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    return validate


def _server_certificate(pki: Path, uri: str) -> tuple[Path, Path]:
    own = pki / "server"
    own.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = own / "cert.der", own / "key.pem"
    if not cert_path.exists() or not key_path.exists():
        key = cert_gen.generate_private_key()
        host = socket.gethostname()
        cert = cert_gen.generate_self_signed_app_certificate(
            key,
            uri,
            {"organizationName": "pilotline demo"},
            [x509.UniformResourceIdentifier(uri), x509.DNSName(host), x509.DNSName("localhost")],
            extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            days=3650,
        )
        key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return cert_path, key_path


class DemoServer:
    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        secure: bool = False,
        pki: Path | None = None,
        bench: int = 0,
        seed: int = 7,
        time_scale: float = 1.0,
        incidents: Sequence[Incident] = (),
    ) -> None:
        self.endpoint = f"opc.tcp://{host}:{port}"
        self.secure = secure
        self.pki = pki
        self.bench = bench
        self.plant = Plant(seed=seed, time_scale=time_scale, incidents=incidents)
        self.server = Server()
        self.values: dict[tuple[str, str], Node] = {}
        self.bench_nodes: list[Node] = []
        self.idx = 0

    async def setup(self) -> None:
        server = self.server
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("pilotline demo line")
        uri = "urn:pilotline:demo:server"
        await server.set_application_uri(uri)
        if self.secure:
            assert self.pki is not None
            cert, key = _server_certificate(self.pki, uri)
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))
            server.set_security_policy(
                [
                    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                    ua.SecurityPolicyType.Basic256Sha256_Sign,
                ]
            )
            trusted = self.pki / "trusted-clients"
            trusted.mkdir(parents=True, exist_ok=True)
            server.set_certificate_validator(_trust_validator(trusted))
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.idx = await server.register_namespace(NAMESPACE)
        line = await server.nodes.objects.add_folder(
            ua.NodeId("PilotLine", self.idx), ua.QualifiedName("PilotLine", self.idx)
        )
        for machine, (vocabulary, state_node, _model) in DEMO_MACHINES.items():
            obj = await line.add_object(
                ua.NodeId(machine, self.idx), ua.QualifiedName(machine, self.idx)
            )
            parent = obj
            if vocabulary == "opc40001":
                parent = await obj.add_object(
                    ua.NodeId(f"{machine}.MachineryItemState", self.idx),
                    ua.QualifiedName("MachineryItemState", self.idx),
                )
                initial: Any = ua.LocalizedText("NotExecuting")
                vtype = ua.VariantType.LocalizedText
            elif vocabulary == "packml":
                initial, vtype = 4, ua.VariantType.Int32
            else:
                initial, vtype = "READY", ua.VariantType.String
            name = state_node.rsplit(".", 1)[-1]
            self.values[(machine, "state")] = await parent.add_variable(
                ua.NodeId(f"{machine}.{state_node}", self.idx),
                ua.QualifiedName(name, self.idx),
                ua.Variant(initial, vtype),
            )
            for node_id in demo_nodes(machine).values():
                suffix = node_id.rsplit(".", 1)[-1]
                signal = next((s for s, n in _SIGNALS.items() if n == suffix), None)
                if signal is None:
                    continue
                self.values[(machine, signal)] = await obj.add_variable(
                    ua.NodeId(f"{machine}.{suffix}", self.idx),
                    ua.QualifiedName(suffix, self.idx),
                    ua.Variant(0.0, ua.VariantType.Double),
                )
        test = await line.add_object(
            ua.NodeId("test", self.idx), ua.QualifiedName("test", self.idx)
        )
        for name, variant in (
            ("Value", ua.Variant(0.0, ua.VariantType.Double)),
            ("Text", ua.Variant("", ua.VariantType.String)),
            ("Flag", ua.Variant(False, ua.VariantType.Boolean)),
        ):
            var = await test.add_variable(
                ua.NodeId(f"test.{name}", self.idx), ua.QualifiedName(name, self.idx), variant
            )
            await var.set_writable()
        if self.bench:
            folder = await line.add_folder(
                ua.NodeId("bench", self.idx), ua.QualifiedName("bench", self.idx)
            )
            for i in range(self.bench):
                self.bench_nodes.append(
                    await folder.add_variable(
                        ua.NodeId(f"bench.v{i:04d}", self.idx),
                        ua.QualifiedName(f"v{i:04d}", self.idx),
                        ua.Variant(0.0, ua.VariantType.Double),
                    )
                )

    async def update(self, now_ms: int) -> None:
        stamp = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
        silent = set(DEMO_MACHINES)
        for topic, payload in self.plant.payloads(now_ms):
            machine = topic.split("/")[-2]
            if machine not in DEMO_MACHINES:
                continue
            silent.discard(machine)
            values = orjson.loads(payload)
            vocabulary = DEMO_MACHINES[machine][0]
            for key, value in values.items():
                node = self.values.get((machine, key))
                if node is None:
                    continue
                if key == "state":
                    if vocabulary == "opc40001":
                        variant = ua.Variant(ua.LocalizedText(value), ua.VariantType.LocalizedText)
                    elif vocabulary == "packml":
                        variant = ua.Variant(_PACKML_CODES.get(value, 0), ua.VariantType.Int32)
                    else:
                        variant = ua.Variant(value, ua.VariantType.String)
                else:
                    variant = ua.Variant(float(value), ua.VariantType.Double)
                await node.write_value(
                    ua.DataValue(variant, SourceTimestamp=stamp, ServerTimestamp=stamp)
                )
        for machine in sorted(silent):
            lost = ua.StatusCode(ua.StatusCodes.BadNoCommunication)
            await self.values[(machine, "state")].write_value(
                ua.DataValue(StatusCode=lost, SourceTimestamp=stamp, ServerTimestamp=stamp)
            )

    async def bench_loop(self, interval_s: float) -> None:
        n = 0
        while True:
            n += 1
            stamp = datetime.now(UTC)
            for i, node in enumerate(self.bench_nodes):
                dv = ua.DataValue(
                    ua.Variant(float(n * 1000 + i), ua.VariantType.Double),
                    SourceTimestamp=stamp,
                    ServerTimestamp=stamp,
                )
                await node.write_value(dv)
            await asyncio.sleep(interval_s)


async def serve(
    port: int,
    *,
    host: str = "127.0.0.1",
    secure: bool = False,
    pki: Path | None = None,
    interval_s: float = 1.0,
    bench: int = 0,
    bench_interval_s: float = 0.1,
    seed: int = 7,
    time_scale: float = 1.0,
    stop: asyncio.Event | None = None,
    incidents: Sequence[Incident] = (),
) -> None:
    demo = DemoServer(
        port,
        host=host,
        secure=secure,
        pki=pki,
        bench=bench,
        seed=seed,
        time_scale=time_scale,
        incidents=incidents,
    )
    await demo.setup()
    async with demo.server:
        print(f"READY {demo.endpoint}", flush=True)
        tasks = []
        if bench:
            tasks.append(asyncio.create_task(demo.bench_loop(bench_interval_s), name="bench"))
        try:
            while stop is None or not stop.is_set():
                await demo.update(wall_clock_ms())
                if stop is None:
                    await asyncio.sleep(interval_s)
                else:
                    with contextlib.suppress(TimeoutError):  # not wait_for (gh-86296)
                        async with asyncio.timeout(interval_s):
                            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pilotline.demo.opcua_server")
    parser.add_argument("--port", type=int, default=4840)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--secure", action="store_true", help="Basic256Sha256 only")
    parser.add_argument("--pki", type=Path, default=Path("./var/opcua-demo-pki"))
    parser.add_argument("--interval", type=float, default=1.0, help="simulation step, s")
    parser.add_argument("--bench", type=int, default=0, help="extra Double variables")
    parser.add_argument("--bench-interval-ms", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument(
        "--incident",
        type=Incident.parse,
        action="append",
        default=[],
        help="state:target:start_ms:end_ms (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(
            args.port,
            host=args.host,
            secure=args.secure,
            pki=args.pki,
            interval_s=args.interval,
            bench=args.bench,
            bench_interval_s=args.bench_interval_ms / 1000,
            seed=args.seed,
            time_scale=args.time_scale,
            stop=stop,
            incidents=args.incident,
        )

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
