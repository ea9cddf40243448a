"""Booking throughput (issue 15): the conflict check alone, the store's one-transaction
``request``, and ``POST /api/reservations`` through the real server.

Run from the repository root::

    .venv/bin/python benchmarks/booking.py            # every section, ~1.5 min
    .venv/bin/python benchmarks/booking.py --quick    # a smoke run, ~30 s
    .venv/bin/python benchmarks/booking.py core store # some sections

Sections:

- ``core``: requests checked per second by the pure core's ``check`` against a machine with
  N live reservations (N = 10, 100, 1,000; one hour each, every two hours), for a request in
  a free gap (``Accepted``) and one that overlaps (``Conflict``, with its nearest
  alternatives); best of 5 repeats.
- ``store``: ``Reservations.request`` transactions per second on a real SQLite file (WAL, as
  the gateway opens it), an empty store and one holding 100,000 past bookings: half the
  requests take a free slot, half hit a taken one.
- ``api``: ``POST /api/reservations`` through the real uvicorn server (``pilotline run`` in a
  child process, its store holding 100,000 past bookings), C concurrent clients (C = 1, 10,
  50), each on its own connection, posting one-hour slots at random on the 15-minute grid
  of a week on 10 machines (a week of its own per C): requests per second, latency p50 and
  p99, and how many were accepted (201) against conflicting (409). The book fills as the
  step runs, so the share of conflicts grows with the requests made.

Figures: benchmarks/README.md, "Booking".
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import timeit
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

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


# -- api -------------------------------------------------------------------------------------


def site(port: int, store: Path) -> str:
    machines = "\n".join(
        f"      - {{id: {m}, owner: acme, mqtt: {{topic: t/{m}}}, state: {{signal: state}}}}"
        for m in MACHINES
    )
    return f"""\
site: bench-booking
mqtt: {{url: "mqtt://127.0.0.1:1"}}
store: {store}
api: {{listen: "127.0.0.1:{port}", max_connections_per_client: 256}}
defaults: {{debounce_s: 5, stale_after_s: 60, min_idle_s: 60, publish_interval_s: 60,
  offering: always}}
zones:
  - id: z
    machines:
{machines}
"""


async def api_step(url: str, tokens: Sequence[str], clients: int, seconds: float,
                   week: int) -> tuple[list[float], Counter[int]]:
    """``clients`` tasks posting for ``seconds``; latencies (s) and answers by status."""
    first = (now_ms() // DAY + 1 + 8 * week) * DAY
    starts = 7 * 24 * 4 - 4  # quarter hours of the week where a one-hour slot fits
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    stop = time.monotonic() + seconds

    async def client(k: int) -> None:
        rng = random.Random(k)
        headers = {"Authorization": f"Bearer {tokens[k % len(tokens)]}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            while time.monotonic() < stop:
                start = first + rng.randrange(starts) * QUARTER
                body = {"machine": rng.choice(MACHINES), "start": start, "end": start + HOUR}
                began = time.perf_counter()
                answer = await http.post("/api/reservations", json=body)
                latencies.append(time.perf_counter() - began)
                codes[answer.status_code] += 1

    await asyncio.gather(*(client(k) for k in range(clients)))
    return latencies, codes


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]


def api(rows: list[tuple[str, str, str, str]], seconds: float, work: Path) -> None:
    port = free_port()
    db = work / "api.db"
    config = work / "site.yaml"
    config.write_text(site(port, db))
    Store(db).close()
    fill_past(db, PAST)
    with Store(db) as opened:
        tokens = [opened.tokens().create(f"bench-{i}", Role.TENANT, f"co-{i}", now_ms=now_ms())
                  for i in range(10)]
    url = f"http://127.0.0.1:{port}"
    print(f"api: POST /api/reservations through `pilotline run` ({PAST:,} past bookings),"
          f" {seconds:g} s per step")
    print(f"  {'clients':>7} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'201':>6} "
          f"{'409':>6} {'other':>6} {'201:409':>8} {'server CPU/req':>15}")
    with Children() as children:
        proc = children.start([*pilotline_command(), "run", "-c", str(config)],
                              work / "gateway.log")

        def up() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code in (200, 503)
            except httpx.HTTPError:
                return False

        wait_until(up, 60, "the gateway's API")
        first = None
        for week, clients in enumerate(CLIENTS):
            cpu0 = cpu_seconds(proc.pid) or 0.0
            began = time.perf_counter()
            latencies, codes = asyncio.run(api_step(url, tokens, clients, seconds, week))
            elapsed = time.perf_counter() - began
            cpu = (cpu_seconds(proc.pid) or 0.0) - cpu0
            n = len(latencies)
            rate = n / elapsed
            first = first or rate
            p50, p99 = pct(latencies, 50) * 1000, pct(latencies, 99) * 1000
            other = n - codes[201] - codes[409]
            ratio = codes[201] / codes[409] if codes[409] else float("inf")
            print(f"  {clients:>7} {rate:>11,.0f} {p50:>8.1f} {p99:>8.1f} {codes[201]:>6} "
                  f"{codes[409]:>6} {other:>6} {ratio:>8.2f} {cpu / n * 1000:>12.2f} ms")
            rows.append((f"POST /api/reservations, {clients} client(s), {PAST:,} past bookings",
                         "-", f"{rate:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
                         f"{codes[201]:,} accepted : {codes[409]:,} conflicting"
                         + (f", {other} other" if other else ""),
                         f"{rate / first:.2f} of 1 client"))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sections", nargs="*", help="core, store, api (default: all)")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args(argv)
    args.sections = args.sections or ["core", "store", "api"]
    unknown = set(args.sections) - {"core", "store", "api"}
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
        if "api" in args.sections:
            api(rows, 3.0 if args.quick else 15.0, work)
    print_summary(rows, "booking.py", argv, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
