"""A short atheris (libFuzzer) run of benchmarks/fuzz_inputs.py on each target: no input
crashes the payload decoder or the configuration loader. Skipped without atheris
(``.venv/bin/pip install atheris``); longer runs: see the script."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "fuzz_inputs.py"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None, reason="atheris is not installed"
)


@pytest.mark.parametrize(
    ("target", "runs", "extra"),
    [("payload", 100_000, []), ("config", 1_500, ["-max_len=2048"])],
)
def test_fuzz_run_finds_no_crash(target: str, runs: int, extra: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), target, f"-runs={runs}", "-seed=1", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    final = re.search(r"#(\d+)\s+DONE\s+cov: (\d+)", done.stderr)
    assert final is not None, done.stderr[-2000:]
    print(f"\nfuzz {target}: {final.group(1)} inputs, coverage {final.group(2)}, no crash")
