"""Process plumbing the benchmarks share: start children, stop them, read their /proc.

Every benchmark starts real peers (Mosquitto, victoria-metrics), the gateway and its own
load generators as separate processes. This module holds what they all need to do that
without leaking a process or waiting forever:

- ``Children``: starts commands or role processes (a benchmark file re-run with a role name
  and a JSON spec), logs their output to a file, gives each ``PR_SET_PDEATHSIG`` so it gets
  SIGTERM if the benchmark dies however it dies, and stops them (SIGTERM, then SIGKILL after
  a deadline). ``running()`` is the one-process context manager form.
- /proc readers: CPU seconds of a process and of the whole machine, VmRSS and VmHWM.
- status files: the roles and the parent talk through small JSON files replaced atomically.
- the ``pilotline`` command line: an operator token, /metrics, waiting for a log event.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- time and status files --------------------------------------------------------------------


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def write_json(path: Path, data: Any) -> None:
    """Atomically replace ``path`` (readers never see half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def wait_until(
    condition: Callable[[], object],
    timeout_s: float,
    what: str,
    every_s: float = 0.05,
    *,
    tolerate: tuple[type[BaseException], ...] = (),
) -> None:
    """Poll ``condition`` until truthy; ``tolerate`` lists exceptions that mean "not yet"."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(*tolerate):
            if condition():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout_s:g} s")
        time.sleep(every_s)


# -- /proc ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (children not included), from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (user+nice+system+irq+softirq+steal)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def proc_status_kib(pid: int, key: str) -> int | None:
    """A ``kB`` line of /proc/PID/status (``VmRSS``, ``VmHWM``...), None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def vm_rss_kib(pid: int) -> int | None:
    return proc_status_kib(pid, "VmRSS")


def vm_hwm_kib(pid: int) -> int | None:
    """Peak resident set size since the process started."""
    return proc_status_kib(pid, "VmHWM")


def machine_line() -> str:
    """What the figures were measured on, for the report headers."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), Python {sys.version.split()[0]}"


# -- children ---------------------------------------------------------------------------------


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


def die_with_parent() -> None:
    """Linux: get SIGTERM when the parent process dies, however it dies."""
    libc = _libc()
    if libc is not None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int | None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL; the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@dataclass
class Children:
    """The processes a benchmark started; ``stop_all()`` (or leaving the ``with``) ends them."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self,
        cmd: Sequence[str],
        log: Path | None = None,
        *,
        stdout: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``cmd``; its output goes to ``log`` (appended) unless ``stdout`` is given.

        The child gets SIGTERM if this process dies (``preexec_fn``: the benchmark parents
        that use ``Children`` run no threads, where ``preexec_fn`` would be unsafe).
        """
        _libc()  # loaded before the fork: the child only calls prctl
        with contextlib.ExitStack() as stack:
            out: Any = stdout
            if out is None:
                out = stack.enter_context(log.open("ab")) if log else subprocess.DEVNULL
            proc = subprocess.Popen(
                list(cmd),
                stdout=out,
                stderr=subprocess.STDOUT if log else None,
                stdin=subprocess.DEVNULL,
                env=None if env is None else dict(env),
                preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads in the parents
            )
        self.procs.append(proc)
        return proc

    def role(
        self, script: str | Path, role: str, spec: Mapping[str, Any], log: Path
    ) -> subprocess.Popen[bytes]:
        """Re-run a benchmark file as one of its roles (see ``dispatch_role``)."""
        return self.start([sys.executable, str(script), role, json.dumps(spec)], log)

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int | None:
        rc = stop_process(proc, timeout_s)
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)
        return rc

    def stop_all(self) -> None:
        for proc in reversed(self.procs[:]):
            self.stop(proc, 10.0)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_all()


@contextlib.contextmanager
def running(cmd: Sequence[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """One child for the length of a ``with``: stopped (SIGTERM, then SIGKILL) on the way out.

    No ``PR_SET_PDEATHSIG`` here: flood.py runs this inside pytest, which may have threads.
    """
    proc = subprocess.Popen(list(cmd), **kwargs)
    try:
        yield proc
    finally:
        stop_process(proc, 30.0)


def dispatch_role(
    argv: Sequence[str], roles: Mapping[str, Callable[[dict[str, Any]], None]]
) -> bool:
    """If ``argv`` is ``ROLE SPEC_JSON`` for a known role, run it and say so."""
    if len(argv) == 2 and argv[0] in roles:
        die_with_parent()
        roles[argv[0]](json.loads(argv[1]))
        return True
    return False


# -- the pilotline command line and API -------------------------------------------------------


def pilotline_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m``."""
    script = Path(sys.executable).parent / "pilotline"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pilotline.gateway.cli"]


def operator_token(config: Path, name: str = "bench") -> dict[str, str]:
    """Headers with a fresh operator token for the gateway configured by ``config``."""
    create = ["token", "create", "--role", "operator", "--name", name, "-c", str(config)]
    token = subprocess.run(
        [*pilotline_command(), *create], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    return {"Authorization": f"Bearer {token}"}


def get_json(url: str, headers: Mapping[str, str]) -> Any:
    request = urllib.request.Request(url, headers=dict(headers))
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def metrics(api: str, headers: Mapping[str, str]) -> dict[str, float]:
    """/metrics as ``{name{labels}: value}``, plus per-name sums under the bare name."""
    request = urllib.request.Request(f"http://{api}/metrics", headers=dict(headers))
    with urllib.request.urlopen(request, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
        name = key.split("{", 1)[0]
        if "{" in key:
            out[name] = out.get(name, 0.0) + float(value)
    return out


def wait_connected(
    api: str, headers: Mapping[str, str], proc: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> None:
    """Until the gateway's /health says MQTT is connected and subscribed."""

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited; its log: {log.read_text()[-2000:]}")
        mqtt = get_json(f"http://{api}/health", headers).get("mqtt", {})
        return bool(mqtt.get("connected")) and mqtt.get("why") is None

    tolerate = (OSError, ValueError)
    wait_until(ready, timeout_s, "gateway connected and subscribed", 0.1, tolerate=tolerate)


def log_event(log: Path, event: str) -> dict[str, Any] | None:
    """The first JSON log line of ``event`` in a gateway log, None if not there (yet)."""
    try:
        text = log.read_text()
    except OSError:
        return None
    needle = f'"{event}"'
    for line in text.splitlines():
        if needle in line:
            with contextlib.suppress(ValueError):
                record: dict[str, Any] = json.loads(line)
                if record.get("event") == event:
                    return record
    return None


# -- the report ------------------------------------------------------------------------------


def command_line(script: str, argv: Sequence[str]) -> str:
    """How to repeat this run, for the README table (``--workdir DIR`` left out)."""
    shown: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workdir":
            skip = True
        elif not arg.startswith("--workdir="):
            shown.append(shlex.quote(arg))
    return " ".join([f"benchmarks/{script}", *shown])


def print_summary(
    rows: Sequence[tuple[str, str, str, str]], script: str, argv: Sequence[str], *, quick: bool
) -> None:
    """Rows (figure, target, measured, ratio) for the "Latest figures" table of the README."""
    if not rows:
        return
    cmd = command_line(script, argv)
    mark = " (quick run)" if quick else ""
    today = time.strftime("%Y-%m-%d")
    cores = f"{os.cpu_count()} cores"
    print("\nfor benchmarks/README.md (figure | target | measured | ratio | date | machine | cmd):")
    for figure, target, measured, ratio in rows:
        print(f"| {figure} | {target} | {measured}{mark} | {ratio} | {today} | {cores} | `{cmd}` |")
