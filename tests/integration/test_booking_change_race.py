"""No double booking through changes either (issue 15): two confirmed bookings with a free gap
between them, and 60 concurrent changes through the gateway's real uvicorn server (each on a
connection of its own) — extensions of the first into the gap and moves of the second's start
into it, every pair overlapping — give exactly one 201; every other answer is a 409 (a
conflict with the winner, or its booking already changed), and the store holds two live
reservations that do not overlap."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from tests.auth import bearer
from tests.integration.test_booking_race import serving

from pilotline.gateway.store.tokens import Role
from pilotline.rules.booking import LIVE

pytestmark = pytest.mark.integration

HOUR = 3_600_000
QUARTER = HOUR // 4
CHANGES = 60


async def test_concurrent_changes_into_one_gap_let_exactly_one_win(tmp_path: Path) -> None:
    async with serving(tmp_path) as (gateway, url):
        a_tokens = [bearer(gateway.store, Role.TENANT, "co-a") for _ in range(CHANGES // 2)]
        b_tokens = [bearer(gateway.store, Role.TENANT, "co-b") for _ in range(CHANGES // 2)]
        base = (int(time.time() * 1000) // HOUR + 24) * HOUR
        async with httpx.AsyncClient(timeout=30) as client:
            async def confirmed(who: dict[str, str], start: int, end: int) -> str:
                held = await client.post(f"{url}/api/reservations", headers=who,
                                         json={"machine": "laser-01", "start": start,
                                               "end": end})
                assert held.status_code == 201, held.text
                rid: str = held.json()["id"]
                done = await client.post(f"{url}/api/reservations/{rid}/confirm", headers=who)
                assert done.status_code == 200, done.text
                return rid

            first = await confirmed(a_tokens[0], base, base + HOUR)
            second = await confirmed(b_tokens[0], base + 3 * HOUR, base + 4 * HOUR)

        async def change(i: int) -> httpx.Response:
            k = i // 2 % 4
            async with httpx.AsyncClient(timeout=30) as client:
                if i % 2 == 0:  # the first ends at 2:15 to 3:00
                    return await client.post(
                        f"{url}/api/reservations/{first}/extend", headers=a_tokens[i // 2],
                        json={"end": base + 2 * HOUR + (k + 1) * QUARTER},
                    )
                return await client.post(  # the second starts at 2:00 to 1:15
                    f"{url}/api/reservations/{second}/move", headers=b_tokens[i // 2],
                    json={"start": base + 2 * HOUR - k * QUARTER, "end": base + 4 * HOUR},
                )

        answers = await asyncio.gather(*(change(i) for i in range(CHANGES)))
        codes = Counter(a.status_code for a in answers)
        assert codes == {201: 1, 409: CHANGES - 1}, codes
        won = next(a.json() for a in answers if a.status_code == 201)
        for lost in (a for a in answers if a.status_code == 409):
            assert lost.headers["content-type"] == "application/problem+json"
        live = sorted((r for r in gateway.store.reservations().list(machine="laser-01")
                       if r.status in LIVE), key=lambda r: r.start_ms)
        assert won["id"] in [r.id for r in live]
        assert len(live) == 2
        assert live[0].end_ms <= live[1].start_ms
        assert {r.predecessor for r in live} == {None, won["predecessor"]}
