"""Booking throughput (issue 15): the conflict check alone, the store's one-transaction
``request``, ``GET /api/offers`` and ``POST /api/reservations`` through the real server.

Run from the repository root::

    .venv/bin/python benchmarks/booking.py                   # every section, ~4 min
    .venv/bin/python benchmarks/booking.py --quick           # a smoke run, ~1 min
    .venv/bin/python benchmarks/booking.py core store        # some sections

Sections:

- ``core``: requests checked per second by the pure core's ``check`` against a machine with
  N live reservations (N = 10, 100, 1,000; one hour each, every two hours), for a request in
  a free gap (``Accepted``) and one that overlaps (``Conflict``, with its nearest
  alternatives); best of 5 repeats.
- ``store``: ``Reservations.request`` transactions per second on a real SQLite file (WAL, as
  the gateway opens it), an empty store and one holding 100,000 past bookings: half the
  requests take a free slot, half hit a taken one.
- ``offers`` and ``api`` run on one site of 1,000 machines (10 zones, 20 owners with weekly
  offering hours in Europe/Berlin, one pattern with a holiday blackout, buffers, minimum
  lengths, approval; a maintenance window on every 7th machine), served by ``pilotline
  run`` in a child process. Its store is seeded with 100,000 past bookings over the last
  180 days on all machines (82% completed, 8% no_show, 10% cancelled) and 4 live bookings
  a machine (85% confirmed, 15% requested) inside its offer over the next 10 days.
- ``offers``: ``GET /api/offers`` for the default window (the next 7 days) over the 1,000
  machines, as a tenant and as an operator, 200 sequential requests each (or 60 s), then 10
  concurrent tenant clients: p50, p99 and max latency against issue 15's target (p99 under
  100 ms), the answer's size and slots, the server's CPU a request. Runs before ``api``,
  on the seeded book.
- ``api``: ``POST /api/reservations``, C concurrent clients (C = 1, 10, 50), each on its
  own connection: a quarter of the requests are one-hour slots starting inside a live
  booking (a conflict, answered with alternatives), the rest one-hour slots at random in
  a random machine's offer over the next 14 days: requests per second, latency p50 and
  p99, accepted (201) against conflicting (409) and any other answer.

Figures: benchmarks/README.md, "Booking".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import timeit
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # the shared _launch.py, also when imported as benchmarks.X
    sys.path.append(HERE)

import httpx  # noqa: E402

from _launch import (  # noqa: E402
    Children,
    cpu_seconds,
    machine_line,
    pilotline_command,
    print_summary,
    wait_until,
)
from pilotline.demo.broker import free_port  # noqa: E402
from pilotline.gateway.store import Store  # noqa: E402
from pilotline.gateway.store.tokens import Role  # noqa: E402
from pilotline.rules.booking import (  # noqa: E402
    Accepted,
    BookingRules,
    Conflict,
    Request,
    Reservation,
    Status,
    check,
)

HOUR = 3_600_000
DAY = 24 * HOUR
QUARTER = HOUR // 4
MACHINES = [f"m-{i:02d}" for i in range(10)]
PAST = 100_000
SIZES = (10, 100, 1000)
CLIENTS = (1, 10, 50)
BIG = 1000  # machines of the site the API sections run on
OWNERS = 20
SITE_TZ = "Europe/Berlin"
LIVE_PER_MACHINE = 4  # future live bookings seeded per machine (4,000 in all)
CONFLICT_SHARE = 0.25  # of the POSTs aimed at a live booking
OFFERS_TARGET_MS = 100  # issue 15: p99 of /api/offers for a week over 1,000 machines


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- core ------------------------------------------------------------------------------------


def core(rows: list[tuple[str, str, str, str]], repeat: int) -> None:
    rules = BookingRules()
    now = now_ms() // HOUR * HOUR
    base = now + DAY
    offered = [(now, now + 100 * DAY)]
    print("core: check() against a machine with N live reservations (best of 5)")
    print(f"  {'N':>6} {'free slot /s':>14} {'conflict /s':>14} {'free vs N=10':>13}")
    first = None
    for n in SIZES:
        book = [
            Reservation(f"r{i}", "m", f"t{i % 5}", base + 2 * i * HOUR,
                        base + (2 * i + 1) * HOUR, Status.CONFIRMED)
            for i in range(n)
        ]
        gap = n // 2  # in the middle of the book
        free = Request("m", "t0", base + (2 * gap + 1) * HOUR, base + (2 * gap + 2) * HOUR)
        taken = Request("m", "t0", base + 2 * gap * HOUR, base + (2 * gap + 1) * HOUR)
        assert isinstance(check(free, rules, book, offered, now), Accepted)
        assert isinstance(check(taken, rules, book, offered, now), Conflict)
        number = max(20, 20_000 // n)
        rate = {}
        for name, req in (("free", free), ("taken", taken)):
            def one(req: Request = req, book: list[Reservation] = book) -> object:
                return check(req, rules, book, offered, now)

            per = min(timeit.repeat(one, number=number, repeat=repeat)) / number
            rate[name] = 1 / per
        first = first or rate["free"]
        print(f"  {n:>6} {rate['free']:>14,.0f} {rate['taken']:>14,.0f} "
              f"{rate['free'] / first:>13.2f}")
        rows.append((f"`check`, {n:,} live reservations on the machine: free / conflicting",
                     "-", f"{rate['free']:,.0f} / {rate['taken']:,.0f} checks/s",
                     f"{rate['free'] / first:.2f} of N=10"))


# -- store -----------------------------------------------------------------------------------


def fill_past(path: Path, count: int) -> None:
    """``count`` completed bookings of the last year, written straight into the store's
    table (the request path would take minutes to make them)."""
    end = now_ms() // HOUR * HOUR - DAY
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO reservations (id, machine, tenant, start_ms, end_ms, status,"
            " created_ms, predecessor, purpose, hold_until_ms, updated_ms)"
            " VALUES (?, ?, ?, ?, ?, 'completed', ?, NULL, '', NULL, ?)",
            (
                (f"past-{i}", MACHINES[i % len(MACHINES)], f"t{i % 7}",
                 end - (i // len(MACHINES) + 1) * HOUR, end - (i // len(MACHINES)) * HOUR,
                 end - 365 * DAY, end)
                for i in range(count)
            ),
        )
    db.close()


def store_step(work: Path, past: int, requests: int) -> tuple[float, float, int]:
    """Accepted and conflicting ``request`` transactions per second, and how many of each."""
    path = work / f"store-{past}.db"
    Store(path).close()  # the schema
    if past:
        fill_past(path, past)
    rules = BookingRules()
    now = now_ms() // HOUR * HOUR
    offered = [(now, now + 60 * DAY)]
    took = {True: 0.0, False: 0.0}
    count: Counter[bool] = Counter()
    with Store(path) as store:
        book = store.reservations()
        for i in range(requests):
            slot = i // 2  # each free slot asked for twice: accepted, then a conflict
            machine = MACHINES[slot % len(MACHINES)]
            start = now + DAY + (slot // len(MACHINES)) * HOUR
            req = Request(machine, f"t{i % 7}", start, start + HOUR)
            began = time.perf_counter()
            booked = book.request(req, rules, offered, now)
            elapsed = time.perf_counter() - began
            accepted = booked.reservation is not None
            took[accepted] += elapsed
            count[accepted] += 1
    return count[True] / took[True], count[False] / took[False], count[True]


def store(rows: list[tuple[str, str, str, str]], requests: int, work: Path) -> None:
    print(f"store: Reservations.request, one BEGIN IMMEDIATE transaction each ({requests:,}"
          " requests, half on a free slot)")
    print(f"  {'past bookings':>14} {'accepted tx/s':>14} {'conflict tx/s':>14}")
    first = None
    for past in (0, PAST):
        ok, clash, _ = store_step(work, past, requests)
        first = first or ok
        print(f"  {past:>14,} {ok:>14,.0f} {clash:>14,.0f}")
        rows.append((f"store `request` transactions, {past:,} past bookings: accepted /"
                     " conflicting", "-", f"{ok:,.0f} / {clash:,.0f} tx/s",
                     f"{ok / first:.2f} of the empty store"))


# -- the site of 1,000 machines: its store, its server -------------------------------------


def big_site(port: int, store: Path, now: int) -> str:
    """1,000 machines in 10 zones, 20 owners with weekly offering hours in Europe/Berlin
    (four patterns, one with a holiday blackout), booking rules (buffers, minimum lengths,
    approval), a maintenance window on every 7th machine and a second on every 50th."""
    tz = ZoneInfo(SITE_TZ)
    day0 = datetime.fromtimestamp(now / 1000, tz).date()

    def local(days: int, hour: int) -> str:
        return f'"{(day0 + timedelta(days=days)).isoformat()}T{hour:02d}:00:00"'

    offerings = [
        '{weekly: [{days: [weekdays], from: "18:00", to: "06:00"},'
        ' {days: [weekend], from: "00:00", to: "24:00"}]}',
        '{weekly: [{days: [daily], from: "20:00", to: "06:00"}], min_window_s: 3600}',
        '{weekly: [{days: [weekdays], from: "12:00", to: "14:00"},'
        ' {days: [weekdays], from: "18:00", to: "22:00"}, {days: [sat], from: "08:00",'
        ' to: "18:00"}]}',
        f"{{blackouts: [{{from: {local(3, 0)}, to: {local(4, 0)}, reason: holiday}}]}}",
    ]
    bookings = ["{buffer_s: 900, min_length_s: 3600}", "{buffer_s: 1800}", "{approval: true}"]
    owners = "\n".join(
        f"  own-{o:02d}: {{show_to_tenants: {str(o % 2 == 0).lower()},"
        f" offering: {offerings[o % 4]}, booking: {bookings[o % 3]}}}"
        for o in range(OWNERS)
    )
    zones = []
    for z in range(BIG // 100):
        lines = []
        for k in range(z * 100, (z + 1) * 100):
            windows = []
            if k % 7 == 0:
                windows.append(f"{{from: {local(1 + k % 6, 8)}, to: {local(1 + k % 6, 12)}}}")
            if k % 50 == 0:
                windows.append(f"{{from: {local(5, 6)}, to: {local(5, 18)}}}")
            extra = f", maintenance: [{', '.join(windows)}]" if windows else ""
            lines.append(
                f"      - {{id: {big_id(k)}, owner: own-{k % OWNERS:02d}, capabilities:"
                f" [cap-{k % 5}], mqtt: {{topic: t/{big_id(k)}}}, state: {{signal: state}}"
                f"{extra}}}"
            )
        zones.append(f"  - id: z-{z}\n    machines:\n" + "\n".join(lines))
    return f"""\
site: bench-booking-1000
timezone: {SITE_TZ}
mqtt: {{url: "mqtt://127.0.0.1:1"}}
store: {store}
api: {{listen: "127.0.0.1:{port}", max_connections_per_client: 256}}
defaults: {{debounce_s: 5, stale_after_s: 60, min_idle_s: 60, publish_interval_s: 60}}
owners:
{owners}
zones:
{chr(10).join(zones)}
"""


def big_id(k: int) -> str:
    return f"m-{k:04d}"


class Offered:
    """Each machine's offered time (its policy minus maintenance, the pure core's functions
    as the API calls them) over the next ``days``, from the configuration the server runs."""

    def __init__(self, config_path: Path, now: int, days: int) -> None:
        from pilotline.gateway.config import load_config
        from pilotline.rules.booking import allowed
        from pilotline.rules.booking.intervals import subtract

        config = load_config(config_path)
        self.spans: dict[str, list[tuple[int, int]]] = {}
        lo, hi = now + DAY, now + days * DAY
        for spec in config.plant_spec().machines:
            spans = subtract(allowed(spec.policy, lo, hi), config.maintenance(spec.id))
            self.spans[spec.id] = [(a, b) for a, b in spans if b - a >= 2 * HOUR]
        self.machines = [m for m, spans in self.spans.items() if spans]

    def slot(self, rng: random.Random, machine: str, length: int) -> tuple[int, int]:
        """A random slot of ``length`` on the 15-minute grid inside the machine's offer."""
        a, b = rng.choice(self.spans[machine])
        first = -(-a // QUARTER)
        last = (b - length) // QUARTER
        start = rng.randint(first, max(first, last)) * QUARTER
        return start, start + length


def fill_site(path: Path, offered: Offered, now: int, past: int,
              live_per_machine: int) -> list[tuple[str, int, int]]:
    """``past`` finished bookings of the last 180 days spread over the machines (82%
    completed, 8% no_show, 10% cancelled), and up to ``live_per_machine`` live ones (85%
    confirmed, 15% requested) per machine inside its offer over the next 10 days, apart by
    more than any buffer; written straight into the table. Returns the live ones."""
    rng = random.Random(15)
    ids = [big_id(k) for k in range(BIG)]
    per = past // len(ids)
    stride = 180 * DAY // per
    rows = []
    for n in range(past):
        machine, j = ids[n % len(ids)], n // len(ids)
        length = rng.randint(4, 16) * QUARTER
        start = (now - 180 * DAY + j * stride) // QUARTER * QUARTER \
            + rng.randrange((stride - length - HOUR) // QUARTER) * QUARTER
        status = rng.choices(("completed", "no_show", "cancelled"), (82, 8, 10))[0]
        created = start - rng.randint(1, 20) * DAY
        rows.append((f"past-{n}", machine, f"co-{rng.randrange(50)}", start, start + length,
                     status, created, None, created + length))
    live: list[tuple[str, int, int]] = []
    for machine in offered.machines:
        taken: list[tuple[int, int]] = []
        for _ in range(live_per_machine * 10):
            if len(taken) == live_per_machine:
                break
            start, end = offered.slot(rng, machine, rng.randint(4, 12) * QUARTER)
            if end > now + 10 * DAY or any(start < e + HOUR and s < end + HOUR
                                           for s, e in taken):
                continue
            taken.append((start, end))
            rid = f"live-{len(live)}"
            status = "confirmed" if rng.random() < 0.85 else "requested"
            rows.append((rid, machine, f"co-{rng.randrange(50)}", start, end, status,
                         now - DAY, None, now - DAY))
            live.append((machine, start, end))
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO reservations (id, machine, tenant, start_ms, end_ms, status,"
            " created_ms, predecessor, purpose, hold_until_ms, updated_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', NULL, ?)", rows,
        )
    db.close()
    return live


@dataclass
class Served:
    url: str
    pid: int
    tenants: list[str]
    operator: str
    offered: Offered
    live: list[tuple[str, int, int]]
    now: int


@contextlib.contextmanager
def served(work: Path) -> Iterator[Served]:
    """``pilotline run`` on the 1,000-machine site, its store seeded."""
    port = free_port()
    db = work / "site1000.db"
    config = work / "site1000.yaml"
    now = now_ms() // HOUR * HOUR
    config.write_text(big_site(port, db, now))
    Store(db).close()
    began = time.perf_counter()
    offered = Offered(config, now, 14)
    live = fill_site(db, offered, now, PAST, LIVE_PER_MACHINE)
    with Store(db) as opened:
        tenants = [opened.tokens().create(f"bench-{i}", Role.TENANT, f"co-{i}", now_ms=now_ms())
                   for i in range(10)]
        operator = opened.tokens().create("bench-op", Role.OPERATOR, None, now_ms=now_ms())
    print(f"site: {BIG:,} machines, {OWNERS} owners, {PAST:,} past bookings and {len(live):,}"
          f" live ones seeded in {time.perf_counter() - began:.1f} s")
    url = f"http://127.0.0.1:{port}"
    with Children() as children:
        proc = children.start([*pilotline_command(), "run", "-c", str(config)],
                              work / "gateway1000.log")

        def up() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code in (200, 503)
            except httpx.HTTPError:
                return False

        wait_until(up, 180, "the gateway's API")
        cpu0, began = cpu_seconds(proc.pid) or 0.0, time.perf_counter()
        time.sleep(3)
        rest = ((cpu_seconds(proc.pid) or 0.0) - cpu0) / (time.perf_counter() - began)
        print(f"  the gateway at rest (no request, no MQTT broker): {rest:.0%} of a core")
        yield Served(url, proc.pid, tenants, operator, offered, live, now)


# -- offers ----------------------------------------------------------------------------------


async def offers_step(url: str, token: str, clients: int, count: int,
                      budget: float) -> tuple[list[float], int, int]:
    """``clients`` tasks asking ``GET /api/offers`` (the default window: the next 7 days)
    ``count`` times in all or until ``budget`` s pass; latencies (s), the last answer's
    size in bytes and its slots."""
    latencies: list[float] = []
    last = b""
    stop = time.monotonic() + budget

    async def client() -> None:
        nonlocal last
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            while len(latencies) < count and time.monotonic() < stop:
                began = time.perf_counter()
                answer = await http.get("/api/offers")
                latencies.append(time.perf_counter() - began)
                answer.raise_for_status()
                last = answer.content  # read after the step: parsing takes the server's CPU

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, len(last), sum(len(o["slots"]) for o in json.loads(last))


def offers(rows: list[tuple[str, str, str, str]], srv: Served, count: int,
           budget: float) -> None:
    print(f"offers: GET /api/offers, a week over {BIG:,} machines ({len(srv.live):,} live"
          f" bookings), {count} requests or {budget:g} s per step; target p99 <"
          f" {OFFERS_TARGET_MS} ms")
    print(f"  {'caller':>8} {'clients':>7} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'p99/target':>10} {'KiB':>7} {'slots':>6} {'server CPU/req':>15}")
    for caller, token, clients in (("tenant", srv.tenants[0], 1),
                                   ("operator", srv.operator, 1),
                                   ("tenant", srv.tenants[0], 10)):
        cpu0 = cpu_seconds(srv.pid) or 0.0
        latencies, size, slots = asyncio.run(offers_step(srv.url, token, clients, count,
                                                         budget))
        cpu = (cpu_seconds(srv.pid) or 0.0) - cpu0
        n = len(latencies)
        p50, p99, top = pct(latencies, 50) * 1000, pct(latencies, 99) * 1000, \
            max(latencies) * 1000
        ratio = p99 / OFFERS_TARGET_MS
        print(f"  {caller:>8} {clients:>7} {n:>8} {p50:>8.1f} {p99:>8.1f} {top:>8.1f} "
              f"{ratio:>10.2f} {size / 1024:>7.0f} {slots:>6} {cpu / n * 1000:>12.1f} ms")
        how = "sequential" if clients == 1 else f"{clients} concurrent clients"
        rows.append((f"GET /api/offers, a week over {BIG:,} machines, as {caller}, {how}",
                     f"p99 < {OFFERS_TARGET_MS} ms",
                     f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {top:.1f} ms ({n} requests);"
                     f" {size / 1024:,.0f} KiB, {slots:,} slots; server CPU"
                     f" {cpu / n * 1000:.1f} ms a request", f"{ratio:.2f} of the target"))


# -- api -------------------------------------------------------------------------------------


async def api_step(srv: Served, clients: int, seconds: float,
                   seed: int) -> tuple[list[float], Counter[int]]:
    """``clients`` tasks posting for ``seconds``: a quarter of the requests overlap a live
    booking (a one-hour slot starting inside it), the rest are one-hour slots at random
    inside a random machine's offer over the next 14 days. Latencies (s), answers by
    status."""
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    stop = time.monotonic() + seconds

    async def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        headers = {"Authorization": f"Bearer {srv.tenants[k % len(srv.tenants)]}"}
        async with httpx.AsyncClient(base_url=srv.url, headers=headers, timeout=30) as http:
            while time.monotonic() < stop:
                if rng.random() < CONFLICT_SHARE:
                    machine, start, end = rng.choice(srv.live)
                    start += rng.randrange((end - start) // QUARTER) * QUARTER
                else:
                    machine = rng.choice(srv.offered.machines)
                    start, _ = srv.offered.slot(rng, machine, HOUR)
                body = {"machine": machine, "start": start, "end": start + HOUR}
                began = time.perf_counter()
                answer = await http.post("/api/reservations", json=body)
                latencies.append(time.perf_counter() - began)
                codes[answer.status_code] += 1

    await asyncio.gather(*(client(k) for k in range(clients)))
    return latencies, codes


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]


def api(rows: list[tuple[str, str, str, str]], srv: Served, seconds: float) -> None:
    print(f"api: POST /api/reservations through `pilotline run` ({BIG:,} machines, {PAST:,}"
          f" past bookings, {len(srv.live):,} live; {CONFLICT_SHARE:.0%} of the requests"
          f" overlap a live one), {seconds:g} s per step")
    print(f"  {'clients':>7} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'201':>6} "
          f"{'409':>6} {'other':>6} {'201:409':>8} {'server CPU/req':>15}")
    first = None
    for seed, clients in enumerate(CLIENTS):
        cpu0 = cpu_seconds(srv.pid) or 0.0
        began = time.perf_counter()
        latencies, codes = asyncio.run(api_step(srv, clients, seconds, seed))
        elapsed = time.perf_counter() - began
        cpu = (cpu_seconds(srv.pid) or 0.0) - cpu0
        n = len(latencies)
        rate = n / elapsed
        first = first or rate
        p50, p99 = pct(latencies, 50) * 1000, pct(latencies, 99) * 1000
        other = n - codes[201] - codes[409]
        ratio = codes[201] / codes[409] if codes[409] else float("inf")
        print(f"  {clients:>7} {rate:>11,.0f} {p50:>8.1f} {p99:>8.1f} {codes[201]:>6} "
              f"{codes[409]:>6} {other:>6} {ratio:>8.2f} {cpu / n * 1000:>12.2f} ms")
        others = ", ".join(f"{c}: {k}" for c, k in sorted(codes.items()) if c not in (201, 409))
        rows.append((f"POST /api/reservations, {clients} client(s), {BIG:,} machines, "
                     f"{PAST:,} past bookings", "-",
                     f"{rate:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
                     f"{codes[201]:,} accepted : {codes[409]:,} conflicting"
                     + (f" ({others})" if others else ""),
                     f"{rate / first:.2f} of 1 client"))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sections", nargs="*", help="core, store, offers, api (default: all)")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args(argv)
    args.sections = args.sections or ["core", "store", "offers", "api"]
    unknown = set(args.sections) - {"core", "store", "offers", "api"}
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    print(f"booking benchmark on {machine_line()}")
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="pilotline-bench-booking-") as tmp:
        work = Path(tmp)
        if "core" in args.sections:
            core(rows, 2 if args.quick else 5)
        if "store" in args.sections:
            store(rows, 400 if args.quick else 4000, work)
        if "offers" in args.sections or "api" in args.sections:
            with served(work) as srv:
                # offers first: on the seeded book, before the POSTs add their holds
                if "offers" in args.sections:
                    offers(rows, srv, 30 if args.quick else 200, 10.0 if args.quick else 60.0)
                if "api" in args.sections:
                    api(rows, srv, 3.0 if args.quick else 15.0)
    print_summary(rows, "booking.py", argv, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
