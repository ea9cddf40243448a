"""The outbox drainer against the bundled MemoryWriter: order, no loss, dead letters."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from structlog.testing import capture_logs

from pilotline.gateway.sinks.influx.drain import OutboxDrainer
from pilotline.gateway.sinks.influx.points import PRIORITY_TELEMETRY
from pilotline.gateway.sinks.influx.writer import (
    InfluxClientWriter,
    MemoryWriter,
    WriteError,
    is_retryable_status,
    translate_error,
)
from pilotline.gateway.store import Store

NOW = 1_795_740_000_000


def drainer(store: Store, writer: MemoryWriter, **kwargs: float) -> OutboxDrainer:
    options: dict[str, float] = {
        "backoff_base_s": 0.001,
        "backoff_cap_s": 0.005,
        "flush_interval_s": 0.05,
    }
    options.update(kwargs)
    return OutboxDrainer(store, writer, rng=random.Random(1), **options)  # type: ignore[arg-type]


def commit(store: Store, lines: list[str]) -> None:
    store.commit(now_ms=NOW, lines=[(PRIORITY_TELEMETRY, text) for text in lines])


@asynccontextmanager
async def running(d: OutboxDrainer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(d.run(), name="drain")
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.002)


async def test_drains_in_order_in_batches(store: Store) -> None:
    writer = MemoryWriter()
    lines = [f"m v={i}i {i}" for i in range(25)]
    commit(store, lines)
    d = drainer(store, writer, batch_size=10)
    async with running(d):
        await until(lambda: store.outbox_depth() == 0)
    assert writer.lines == lines
    assert [len(b) for b in writer.batches] == [10, 10, 5]
    stats = d.stats()
    assert (stats.written, stats.batches, stats.errors, stats.depth) == (25, 3, 0, 0)
    assert stats.healthy
    assert stats.last_success_ms is not None


async def test_order_is_kept_and_nothing_lost_across_failures(store: Store) -> None:
    writer = MemoryWriter()
    d = drainer(store, writer, batch_size=7)
    expected: list[str] = []
    with capture_logs() as logs:
        async with running(d):
            for round_ in range(10):
                batch = [f"m v={round_ * 100 + i}i {round_ * 100 + i}" for i in range(13)]
                if round_ % 3 == 0:
                    writer.fail_next(2, status=503)
                commit(store, batch)
                d.notify()
                expected += batch
                await asyncio.sleep(0)
            await until(lambda: store.outbox_depth() == 0)
    assert writer.lines == expected  # in commit order, each exactly once
    stats = d.stats()
    assert stats.retries == stats.errors == 8
    assert stats.consecutive_failures == 0
    assert stats.last_error == "injected failure"
    failed = [e for e in logs if e["event"] == "influx.write_failed"]
    assert len(failed) == 8
    assert {"status", "retry_in_s", "depth", "error"} <= failed[0].keys()
    assert failed[0]["status"] == 503
    assert failed[0]["log_level"] == "warning"
    assert any(e["event"] == "influx.recovered" for e in logs)


async def test_retries_the_same_batch(store: Store) -> None:
    writer = MemoryWriter()
    commit(store, ["a 1", "b 2", "c 3"])
    writer.fail_next(3)
    d = drainer(store, writer, batch_size=2)
    assert await d.flush(timeout_s=5)
    assert writer.attempts == 5  # 3 failures of [a, b], then [a, b] and [c]
    assert writer.batches == [["a 1", "b 2"], ["c 3"]]


async def test_health_turns_bad_after_consecutive_failures(store: Store) -> None:
    writer = MemoryWriter()
    commit(store, ["a 1"])
    writer.fail_next(1000)
    d = drainer(store, writer)
    with capture_logs():
        assert not await d.flush(timeout_s=0.2)
    stats = d.stats()
    assert stats.consecutive_failures > 3
    assert not stats.healthy
    assert stats.depth == 1
    assert store.outbox_peek(10)[0][1] == "a 1"  # kept for later


async def test_backoff_is_full_jitter_doubling_and_capped(store: Store) -> None:
    writer = MemoryWriter()
    commit(store, ["a 1"])
    writer.fail_next(8)
    d = OutboxDrainer(store, writer, backoff_base_s=0.5, backoff_cap_s=30.0)
    delays = []
    with capture_logs() as logs:
        for _ in range(8):
            delay = await d._step()
            assert delay is not None
            delays.append(delay)
    ceilings = [min(30.0, 0.5 * 2**n) for n in range(8)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert [e["retry_in_s"] for e in logs] == [round(x, 3) for x in delays]


async def test_refused_lines_go_to_dead_letter_and_the_rest_is_written(store: Store) -> None:
    writer = MemoryWriter(reject=lambda text: text.startswith("bad"))
    lines = [f"m v={i}i {i}" for i in range(40)]
    lines[3] = "bad one 3"
    lines[27] = "bad two 27"
    commit(store, lines)
    d = drainer(store, writer, batch_size=16)
    with capture_logs() as logs:
        assert await d.flush(timeout_s=5)
    good = [text for text in lines if not text.startswith("bad")]
    assert writer.lines == good
    assert [r["line"] for r in store.dead_letter()] == ["bad two 27", "bad one 3"]
    assert store.dead_letter()[0]["status"] == 400
    stats = d.stats()
    assert stats.dead_lettered == 2
    assert stats.written == 38
    assert stats.consecutive_failures == 0
    assert stats.healthy
    assert [e["event"] for e in logs].count("influx.dead_lettered") == 2
    # back to full batches once past the refused lines
    commit(store, [f"n v={i}i {i}" for i in range(40)])
    writer.batches.clear()
    assert await d.flush(timeout_s=5)
    assert [len(b) for b in writer.batches] == [16, 16, 8]


async def test_a_single_refused_line_is_dead_lettered(store: Store) -> None:
    writer = MemoryWriter()
    commit(store, ["a 1"])
    writer.fail_next(1, retryable=False, status=422)
    d = drainer(store, writer)
    with capture_logs():
        assert await d.flush(timeout_s=5)
    assert writer.lines == []
    assert store.dead_letter_count() == 1
    assert d.stats().dead_lettered == 1


async def test_notify_wakes_an_idle_drain(store: Store) -> None:
    writer = MemoryWriter()
    d = drainer(store, writer, flush_interval_s=60.0)
    async with running(d):
        await asyncio.sleep(0.01)  # idle, waiting
        commit(store, ["a 1"])
        d.notify()
        await until(lambda: writer.lines == ["a 1"], timeout_s=1.0)


async def test_idle_drain_picks_up_lines_without_notify(store: Store) -> None:
    writer = MemoryWriter()
    d = drainer(store, writer, flush_interval_s=0.02)
    async with running(d):
        await asyncio.sleep(0.01)
        commit(store, ["a 1"])
        await until(lambda: writer.lines == ["a 1"], timeout_s=1.0)


async def test_a_crashing_writer_does_not_stop_the_drain(store: Store) -> None:
    class Flaky(MemoryWriter):
        crashes = 2

        def write(self, lines: list[str]) -> None:  # type: ignore[override]
            if self.crashes:
                self.crashes -= 1
                raise RuntimeError("bug")
            super().write(lines)

    writer = Flaky()
    commit(store, ["a 1"])
    d = drainer(store, writer)
    with capture_logs():
        assert await d.flush(timeout_s=5)
    assert writer.lines == ["a 1"]
    assert d.stats().retries == 2


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (500, True),
        (503, True),
        (429, True),
        (401, True),
        (404, True),
        (400, False),
        (413, False),
        (422, False),
    ],
)
def test_status_classification(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (401, True), (503, True)])
def test_api_errors_are_translated(status: int, retryable: bool) -> None:
    from influxdb_client.rest import ApiException

    error = translate_error(ApiException(status=status, reason="Some Reason"))  # type: ignore[no-untyped-call]
    assert (error.status, error.retryable) == (status, retryable)
    assert error.message == f"HTTP {status}: Some Reason"


def test_connection_refused_is_retryable_and_token_stays_out() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    writer = InfluxClientWriter(
        f"http://127.0.0.1:{port}", "org", "bucket", "s3cret-token", timeout_s=1.0
    )
    try:
        with pytest.raises(WriteError) as caught:
            writer.write(["m f=1 1"])
        assert caught.value.retryable
        assert caught.value.status is None
        assert "s3cret-token" not in str(caught.value)
        assert "s3cret-token" not in repr(writer)
    finally:
        writer.close()
