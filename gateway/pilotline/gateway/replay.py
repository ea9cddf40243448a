"""Replay: recorded samples through the same rules, in event time, as fast as possible.

Theory of operation. Samples are read whole (a JSON-lines file, a line-protocol file of
``telemetry`` points, or the ``telemetry`` measurement of an InfluxDB 1.x time range), sorted
by event time (stably: samples of one millisecond keep their input order) and fed, one by
one, to an ordinary ``Gateway`` built without collectors, through the very ``Ingest.sample``
the collectors call. No timer runs during the replay: each sample advances the core's time
to its own timestamp, which the core's chunking invariance (tests/rules/test_rules.py) makes
equal to a live run with its timer; one final ``handle_timer(end)`` fires what was due by
the end. Staging, the store's transaction, the points and the outbox are therefore the live
gateway's own code, not a second pipeline.

The gateway's clock follows the replay: it reads the time of the sample being fed, so the
"future" check never fires on history and every wall-time stamp the store keeps (outbox
enqueue time, quarantine arrival) is event time: the same input gives the same store, byte
for byte in every table.

What line protocol loses: the gateway's ``telemetry`` points carry numeric signals only. A
machine whose state comes from a string signal (``state: Executing``) has no state in them
and stays ``offline`` in a replay from line protocol or InfluxDB; numeric state codes (OPC UA
enumerations) and threshold machines replay fully. JSON lines carry everything.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from pilotline.collectors.mqtt.parse import Rejection, from_object
from pilotline.gateway.config import SiteConfig
from pilotline.gateway.service import Gateway, ServiceOptions
from pilotline.gateway.sinks.influx.lineproto import FieldValue
from pilotline.gateway.sinks.influx.points import TELEMETRY
from pilotline.gateway.sinks.influx.writer import InfluxWriter
from pilotline.rules import MappedState, Sample
from pilotline.rules.sample import SignalValue

Progress = Callable[[int, int], None]
"""``progress(done, total)``, called now and then while samples are fed."""

PROGRESS_EVERY = 10_000


class ReplayError(Exception):
    """The replay cannot run (an input that cannot be read, a store that exists...)."""


@dataclass
class Input:
    """Samples read from a source, and what was left out while reading (by reason)."""

    samples: list[Sample] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    first_problem: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.first_problem.setdefault(reason, where)


# -- reading -------------------------------------------------------------------------------


def read_jsonl(lines: Iterable[bytes | str], into: Input | None = None) -> Input:
    """JSON lines: one object per line, ``{"machine": ..., "ts": ..., <signals>}``, with the
    MQTT payload's rules for ``ts`` (epoch ms or ISO 8601), signals and ``quality``."""
    out = into or Input()
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text[:1] in ("#", b"#"):
            continue
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            out.skip("malformed_json", f"line {number}: {exc}")
            continue
        if not isinstance(obj, dict):
            out.skip("not_an_object", f"line {number}")
            continue
        machine = obj.pop("machine", None)
        if not isinstance(machine, str) or not machine:
            out.skip("no_machine", f'line {number}: no "machine" string')
            continue
        if "ts" not in obj:
            out.skip("no_ts", f'line {number}: no "ts" (replay needs event time)')
            continue
        sample = from_object(obj, machine, 0)
        if isinstance(sample, Rejection):
            out.skip(sample.reason, f"line {number}: {sample.detail}")
            continue
        out.samples.append(sample)
    return out


def read_line_protocol(
    lines: Iterable[bytes | str], *, site: str | None = None, into: Input | None = None
) -> Input:
    """``telemetry`` points (nanosecond timestamps, as the gateway writes them) as Samples:
    tag ``machine`` is the machine, every numeric field a signal (strings are kept as they
    are, booleans skipped). Other measurements, and other sites when ``site`` is given, are
    skipped and counted."""
    out = into or Input()
    for number, raw in enumerate(lines, 1):
        text = raw.decode() if isinstance(raw, bytes) else raw
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        try:
            measurement, tags, fields, ts_ns = parse_line(text)
        except ValueError as exc:
            out.skip("malformed_line", f"line {number}: {exc}")
            continue
        if measurement != TELEMETRY:
            out.skip(f"measurement_{measurement}"[:64], f"line {number}")
            continue
        if site is not None and tags.get("site", site) != site:
            out.skip("other_site", f"line {number}: site={tags.get('site')}")
            continue
        machine = tags.get("machine")
        if not machine:
            out.skip("no_machine", f"line {number}: no machine tag")
            continue
        if ts_ns is None:
            out.skip("no_ts", f"line {number}: no timestamp (replay needs event time)")
            continue
        values = _signals(fields)
        out.samples.append(Sample(machine, ts_ns // 1_000_000, values))
    return out


def _signals(fields: dict[str, FieldValue]) -> dict[str, SignalValue]:
    values: dict[str, SignalValue] = {}
    for key, value in fields.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            number = float(value)
            if math.isfinite(number):
                values[key] = number
        else:
            values[key] = value
    return values


def parse_line(text: str) -> tuple[str, dict[str, str], dict[str, FieldValue], int | None]:
    """One line of InfluxDB line protocol: measurement, tags, fields, timestamp (ns or None).

    Escapes as InfluxDB reads them: ``\\`` before a comma, equals sign or space in names and
    tag values, before a double quote or backslash in string fields; any other backslash is
    literal.
    """
    key_end = _scan(text, 0, stop=" ", quotes=False)
    series = text[:key_end]
    fields_start = key_end + 1
    fields_end = _scan(text, fields_start, stop=" ", quotes=True)
    fields_text = text[fields_start:fields_end]
    rest = text[fields_end + 1 :].strip() if fields_end < len(text) else ""
    parts = _split(series, ",", quotes=False)
    measurement = _unescape(parts[0])
    if not measurement:
        raise ValueError("no measurement")
    tags: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = _partition(part)
        if not sep:
            raise ValueError(f"tag without '=': {part!r}")
        tags[_unescape(key)] = _unescape(value)
    if not fields_text:
        raise ValueError("no fields")
    fields: dict[str, FieldValue] = {}
    for part in _split(fields_text, ",", quotes=True):
        key, sep, value = _partition(part)
        if not sep or not key:
            raise ValueError(f"field without '=': {part!r}")
        fields[_unescape(key)] = _field_value(value)
    ts_ns = None
    if rest:
        try:
            ts_ns = int(rest)
        except ValueError:
            raise ValueError(f"timestamp {rest[:32]!r} is not an integer") from None
    return measurement, tags, fields, ts_ns


def _scan(text: str, start: int, *, stop: str, quotes: bool) -> int:
    """Index of the first unescaped ``stop`` at or after ``start`` (outside quotes)."""
    i, quoted, n = start, False, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if quotes and ch == '"':
            quoted = not quoted
        elif ch == stop and not quoted:
            return i
        i += 1
    if quoted:
        raise ValueError("unterminated string")
    return n


def _split(text: str, sep: str, *, quotes: bool) -> list[str]:
    parts, start = [], 0
    while True:
        end = _scan(text, start, stop=sep, quotes=quotes)
        parts.append(text[start:end])
        if end >= len(text):
            return parts
        start = end + 1


def _partition(text: str) -> tuple[str, str, str]:
    end = _scan(text, 0, stop="=", quotes=False)
    if end >= len(text):
        return text, "", ""
    return text[:end], "=", text[end + 1 :]


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in ', ="\\':
            out.append(text[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})


def _field_value(text: str) -> FieldValue:
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise ValueError(f"bad string field {text[:32]!r}")
        return _unescape(text[1:-1])
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    try:
        if text.endswith(("i", "u")):
            return int(text[:-1])
        return float(text)
    except ValueError:
        raise ValueError(f"bad field value {text[:32]!r}") from None


def read_file(path: Path, *, site: str | None = None) -> Input:
    """A JSON-lines (``.jsonl``, ``.ndjson``, ``.json``) or line-protocol (anything else) file;
    a first non-blank line starting with ``{`` also means JSON lines."""
    try:
        handle: IO[bytes] = path.open("rb")
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        if _is_jsonl(path, handle):
            return read_jsonl(handle)
        return read_line_protocol(handle, site=site)


def _is_jsonl(path: Path, handle: IO[bytes]) -> bool:
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return True
    for raw in handle:
        if raw.strip():
            handle.seek(0)
            return raw.lstrip().startswith(b"{")
    handle.seek(0)
    return False


def read_influx(
    url: str,
    db: str,
    from_ms: int,
    to_ms: int,
    *,
    site: str | None = None,
    token: str | None = None,
    chunk_ms: int = 86_400_000,
    timeout_s: float = 60.0,
    progress: Progress | None = None,
) -> Input:
    """The ``telemetry`` measurement of ``[from_ms, to_ms)`` through InfluxQL (``/query`` of
    InfluxDB 1.x, or the 1.x-compatible API of 2.x/3.x), one day per request, each streamed
    in chunks of rows."""
    if to_ms <= from_ms:
        raise ReplayError("--to must be after --from")
    out = Input()
    where_site = f" AND \"site\" = '{_influxql_string(site)}'" if site else ""
    start = from_ms
    while start < to_ms:
        end = min(to_ms, start + chunk_ms)
        # InfluxQL, not SQL: integers and an escaped string literal only.
        query = (
            f'SELECT * FROM "{TELEMETRY}" WHERE time >= {start}ms AND time < {end}ms'  # noqa: S608 # nosec B608
            f"{where_site} GROUP BY *"
        )
        params = urllib.parse.urlencode(
            {"db": db, "q": query, "epoch": "ms", "chunked": "true", "chunk_size": "10000"}
        )
        request = urllib.request.Request(f"{url.rstrip('/')}/query?{params}")  # noqa: S310 - the operator's URL
        if token:
            request.add_header("Authorization", f"Token {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 # nosec B310
                for raw in response:
                    if raw.strip():
                        _influx_chunk(json.loads(raw), out)
        except (OSError, ValueError) as exc:
            raise ReplayError(f"InfluxDB query failed ({url}, db {db}): {exc}") from None
        if progress is not None:
            progress(end - from_ms, to_ms - from_ms)
        start = end
    return out


def _influxql_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _influx_chunk(body: dict[str, Any], out: Input) -> None:
    for result in body.get("results", []):
        if "error" in result:
            raise ReplayError(f"InfluxDB: {result['error']}")
        for series in result.get("series", []):
            machine = (series.get("tags") or {}).get("machine")
            columns: list[str] = series.get("columns", [])
            if not machine:
                out.skip("no_machine", "an InfluxDB series without a machine tag")
                continue
            for row in series.get("values", []):
                ts = row[0]
                fields = {
                    name: value
                    for name, value in zip(columns[1:], row[1:], strict=True)
                    if value is not None
                }
                values = _signals(fields)
                if values:
                    out.samples.append(Sample(machine, int(ts), values))


# -- replaying -----------------------------------------------------------------------------


@dataclass
class ReplayResult:
    samples: int
    """Samples fed to the core (after the --from/--to filter)."""
    outside: int
    """Samples read but outside [from, to)."""
    start_ms: int | None
    end_ms: int | None
    events: Counter[str]
    rejected: Counter[tuple[str, str]]
    elapsed_s: float
    store: Path
    stateless: list[str]
    """Machines with an enumerated state signal that no sample carried (line protocol)."""
    flushed: bool | None = None
    """With --influx: whether the outbox was fully written to InfluxDB."""


class _ReplayClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def replay(
    config: SiteConfig,
    samples: Sequence[Sample],
    *,
    out_store: Path,
    from_ms: int | None = None,
    to_ms: int | None = None,
    influx: bool = False,
    telemetry: bool = False,
    writer: InfluxWriter | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    flush_timeout_s: float = 300.0,
) -> ReplayResult:
    """Feed ``samples`` in event time to a ``Gateway`` on ``out_store`` (a new file).

    The core's time starts at ``from_ms`` (else the first sample) and ends with
    ``handle_timer(to_ms)`` (else the last sample's time: the states of machines that were
    still reporting are left open, not made stale). With ``influx`` the points go to the
    outbox and from there to the configuration's InfluxDB (or ``writer``), drained before
    returning; ``telemetry`` also writes the samples as ``telemetry`` points (useful for a
    JSON-lines input going to an empty InfluxDB; the input's own points otherwise).
    """
    out_store = Path(out_store)
    if out_store.resolve() == Path(config.store).resolve():
        raise ReplayError(f"{out_store} is the live gateway's store: give another --out-store")
    if out_store.exists():
        if not overwrite:
            raise ReplayError(f"{out_store} exists: remove it or pass --overwrite")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{out_store}{suffix}").unlink(missing_ok=True)
    if influx and config.influx is None and writer is None:
        raise ReplayError("--influx: the configuration has no influx: section")

    started = time.perf_counter()
    chosen = sorted(
        (
            s
            for s in samples
            if (from_ms is None or s.ts_ms >= from_ms) and (to_ms is None or s.ts_ms < to_ms)
        ),
        key=_event_time,
    )
    start = from_ms if from_ms is not None else (chosen[0].ts_ms if chosen else None)
    end = to_ms if to_ms is not None else (chosen[-1].ts_ms if chosen else start)
    clock = _ReplayClock(start or 0)
    site = config.model_copy(
        update={"store": out_store, "influx": config.influx if influx else None}
    )
    gateway = Gateway(
        site,
        writer=writer if influx else None,
        clock_ms=clock,
        options=ServiceOptions(lateness_ms=0),
        collectors=False,
        telemetry=telemetry,
    )
    flushed: bool | None = None
    try:
        ingest = gateway.ingest
        if start is not None:
            ingest.advance(start)  # the core's time starts here, as a gateway started then
        total = len(chosen)
        on_sample = ingest.sample
        for done, sample in enumerate(chosen, 1):
            clock.ms = sample.ts_ms
            on_sample(sample)
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(done, total)
        if end is not None:
            clock.ms = max(clock.ms, end)
            ingest.advance(end)
        gateway.commit()
        if progress is not None:
            progress(total, total)
        if gateway.drainer is not None:
            import asyncio  # noqa: PLC0415 - only the --influx path needs a loop

            flushed = asyncio.run(gateway.drainer.flush(flush_timeout_s))
    finally:
        if gateway.writer is not None:
            gateway.writer.close()
        gateway.store.close()
    return ReplayResult(
        samples=len(chosen),
        outside=len(samples) - len(chosen),
        start_ms=start,
        end_ms=end,
        events=Counter(gateway.metrics.events),
        rejected=Counter(gateway.metrics.rejected),
        elapsed_s=time.perf_counter() - started,
        store=out_store,
        stateless=_stateless(config, chosen),
        flushed=flushed,
    )


def _event_time(sample: Sample) -> int:
    return sample.ts_ms


def _stateless(config: SiteConfig, samples: Iterable[Sample]) -> list[str]:
    wanted = {
        spec.id: spec.state.signal
        for spec in config.plant_spec().machines
        if isinstance(spec.state, MappedState)
    }
    seen: set[str] = set()
    present: set[str] = set()
    for sample in samples:
        signal = wanted.get(sample.machine)
        if signal is None:
            continue
        present.add(sample.machine)
        if signal in sample.values:
            seen.add(sample.machine)
    return sorted(present - seen)
