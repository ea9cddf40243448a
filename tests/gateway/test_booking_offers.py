"""``GET /api/offers`` computes per request what it once computed per machine (one query for
every machine's live reservations, each policy's hours once; benchmarks/README.md,
"Booking") and writes its JSON without a pydantic object per slot: the answer must be, slot
for slot, what the pure core gives for each machine on its own, and exactly the shape of
``OfferOut``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter
from tests.auth import bearer
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.gateway.api.app import create_app
from pilotline.gateway.api.booking import OfferOut
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.store.tokens import Role
from pilotline.rules.booking import Request, Status, allowed, free_slots
from pilotline.rules.booking.intervals import subtract

HOUR = 3_600_000
DAY = 24 * HOUR
TO = T0 + 2 * DAY + 12 * HOUR  # Sunday 2026-11-29 13:00 in Berlin: the lasers are offered
WEEKNIGHTS = {"weekly": [{"days": ["weekdays"], "from": "18:00", "to": "06:00"},
                         {"days": ["weekend"], "from": "00:00", "to": "24:00"}]}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml(
        {"z": [
            machine_config("laser-01", "acme", capabilities=["laser-cutting"],
                           booking={"buffer_s": 900}),
            machine_config("laser-02", "acme", capabilities=["laser-cutting"],
                           booking={"buffer_s": 1800},
                           maintenance=[{"from": "2026-11-28T10:00:00",
                                         "to": "2026-11-28T14:00:00"}]),
            machine_config("press-01", "umbra", capabilities=["pressing"],
                           booking={"approval": True}),
        ]},
        influx=None, store=tmp_path / "gw.db", timezone="Europe/Berlin",
        defaults=UNIT_DEFAULTS,
        owners={"acme": {"show_to_tenants": True, "offering": WEEKNIGHTS},
                "umbra": {"offering": "always"}},
    ))
    clock = Clock(T0)
    gateway = Gateway(load_config(path), clock_ms=clock)
    book = gateway.store.reservations()

    def reserve(machine: str, start: int, end: int, made_ms: int = T0) -> str:
        rules = gateway.config.booking_rules(machine)
        booked = book.request(Request(machine, "smallco", start, end), rules,
                              [(T0 - DAY, T0 + 10 * DAY)], made_ms)
        assert booked.reservation is not None, booked.verdict
        return booked.reservation.id

    book.confirm(reserve("laser-01", T0 + 18 * HOUR, T0 + 20 * HOUR), T0, approval=False,
                 by="t")
    book.cancel(reserve("laser-01", T0 + 26 * HOUR, T0 + 27 * HOUR), T0, by="t")
    # just past the window: their buffers (15 and 30 min) reach 0 and 15 min back into it
    book.confirm(reserve("laser-01", TO + 15 * 60_000, TO + HOUR), T0, approval=False, by="t")
    book.confirm(reserve("laser-02", TO + 15 * 60_000, TO + HOUR), T0, approval=False, by="t")
    book.confirm(reserve("press-01", T0 + HOUR, T0 + 3 * HOUR), T0, approval=True, by="t")
    # due at T0 but not yet expired (the lifecycle, or laser-01's next request, would)
    reserve("laser-01", T0 + 22 * HOUR, T0 + 23 * HOUR, made_ms=T0 - HOUR // 3)
    assert [r.status for r in book.list(machine="laser-01", from_ms=T0 + 22 * HOUR,
                                        to_ms=T0 + 23 * HOUR)] == [Status.HELD]
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield gateway, client
    gateway.store.close()


def one_by_one(gateway: Gateway, machine: str, from_ms: int, to_ms: int) -> list[list[int]]:
    """The machine's free slots as the route first computed them, machine by machine."""
    spec = next(m for m in gateway.plant_spec.machines if m.id == machine)
    rules = gateway.config.booking_rules(machine)
    spans = subtract(allowed(spec.policy, from_ms, to_ms), gateway.config.maintenance(machine))
    near = gateway.store.reservations().list(
        machine=machine, from_ms=from_ms - rules.buffer_ms, to_ms=to_ms + rules.buffer_ms
    )
    held = [r for r in near if r.status is not Status.HELD
            or r.hold_until_ms is None or r.hold_until_ms > gateway.clock_ms()]
    return [[a, b] for a, b in free_slots(spans, held, rules.buffer_ms)]


@pytest.mark.parametrize("role", [Role.TENANT, Role.OWNER, Role.OPERATOR])
async def test_offers_are_each_machines_own_slots_in_the_shape_of_offer_out(
    site: tuple[Gateway, httpx.AsyncClient], role: Role
) -> None:
    gateway, client = site
    subject = {Role.TENANT: "smallco", Role.OWNER: "acme", Role.OPERATOR: None}[role]
    answer = await client.get(f"/api/offers?from={T0}&to={TO}",
                              headers=bearer(gateway.store, role, subject))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    body: list[dict[str, Any]] = answer.json()
    shape = TypeAdapter(list[OfferOut])
    assert shape.dump_python(shape.validate_python(body), mode="json") == body
    expected = ["laser-01", "laser-02"] + (["press-01"] if role is not Role.OWNER else [])
    assert [o["machine"] for o in body] == expected
    for offer in body:
        slots = [[s["start_ms"], s["end_ms"]] for s in offer["slots"]]
        assert slots == one_by_one(gateway, offer["machine"], T0, TO), offer["machine"]
    laser1, laser2 = body[0]["slots"], body[1]["slots"]
    # each laser's own buffer, not the widest one the single query used
    assert laser1[-1]["end_ms"] == TO
    assert laser2[-1]["end_ms"] == TO - 15 * 60_000
    # the due hold and the cancelled booking hold nothing; the confirmed one does
    assert any(s["start_ms"] <= T0 + 22 * HOUR and s["end_ms"] >= T0 + 27 * HOUR
               for s in laser1)
    assert not any(s["start_ms"] < T0 + 20 * HOUR and s["end_ms"] > T0 + 18 * HOUR
                   for s in laser1)
    # laser-02's maintenance (Saturday 10:00-14:00 Berlin) is not offered
    assert not any(s["start_ms"] < T0 + 37 * HOUR and s["end_ms"] > T0 + 33 * HOUR
                   for s in laser2)
    assert body[0]["slots"][0]["start"] == "2026-11-27T00:00:00.000+00:00"
    if role is Role.TENANT:
        assert [o["live_state"] for o in body] == [None, None, None]
        assert [o["owner"] for o in body] == ["acme", "acme", None]
    else:
        assert all(o["owner"] is not None for o in body)
