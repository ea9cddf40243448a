"""Coverage-guided fuzzing (atheris, libFuzzer) of what the gateway reads from outside: the
MQTT payload decoder and the configuration loader. Every input must give a Sample or a
Rejection with a known reason (payloads), a SiteConfig or a ConfigError with issues
(configuration); anything else raising is a crash that libFuzzer reports with its input.

    .venv/bin/pip install atheris
    .venv/bin/python benchmarks/fuzz_inputs.py payload -runs=200000
    .venv/bin/python benchmarks/fuzz_inputs.py config -runs=20000 -max_len=4096

Extra arguments go to libFuzzer (``-max_total_time=60``, a corpus directory, ...).
tests/gateway/test_fuzz.py runs both for a bounded number of iterations when atheris is there.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris  # type: ignore[import-not-found, unused-ignore]

with atheris.instrument_imports(include=["pilotline"]):
    from pilotline.collectors.mqtt.parse import REJECT_REASONS, Rejection, decode
    from pilotline.gateway.config import ConfigError, load_config
    from pilotline.rules import Sample

ARRIVAL = 1_795_737_600_000
SEEDS = (
    b'{"ts": 1795737600000, "state": "Executing", "power_w": 120.5}',
    b'{"ts": "2026-11-27T00:00:00Z", "values": {"power_w": 1e309}}',
    b"site: s\nzones:\n  - id: z\n    machines:\n      - id: m\n        owner: o\n"
    b"        mqtt: {topic: t}\n        state: {signal: state}\n",
)


def fuzz_payload(data: bytes) -> None:
    result = decode(data, "m", ARRIVAL, 65_536)
    if isinstance(result, Rejection):
        if result.reason not in REJECT_REASONS:
            raise AssertionError(f"unknown reason {result.reason!r}")
    elif not isinstance(result, Sample):
        raise AssertionError(f"decode returned {result!r}")


_CONFIG = Path(tempfile.mkdtemp(prefix="pilotline-fuzz-")) / "site.yaml"


def fuzz_config(data: bytes) -> None:
    _CONFIG.write_bytes(data)
    try:
        load_config(_CONFIG)
    except ConfigError as exc:
        if not exc.issues or not str(exc):
            raise AssertionError("a ConfigError without issues") from exc


TARGETS: dict[str, Callable[[bytes], None]] = {"payload": fuzz_payload, "config": fuzz_config}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv[1]]
    corpus = Path(tempfile.mkdtemp(prefix="pilotline-fuzz-corpus-"))
    for i, seed in enumerate(SEEDS):
        (corpus / f"seed-{i}").write_bytes(seed)
    args = [sys.argv[0], *sys.argv[2:], str(corpus)]
    atheris.Setup(args, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
