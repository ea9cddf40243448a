"""Booking notifications delivered to REAL peers: a local HTTP server (http.server in a
thread), where a tenant's booking on a machine that stays idle becomes a no-show and the
owner's desk hears of it exactly once, across a gateway stopped between queueing and delivery
and a second restart; and an SMTP server (aiosmtpd, STARTTLS and AUTH), which gets the no-show
mail once; and the reminders starting_soon and overrun, told once each to the channels that
want them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.fakes import T0, Clock
from tests.integration.test_notify_email import (  # the real SMTP server and its fixtures
    SmtpServer,
    mail_config,
    password_file,
    pki,
    server,
)
from tests.integration.test_notify_webhook import Receiver, wait_for
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml
from tests.tls import Issued
from tests.waiting import run_until

from pilotline.gateway.config import load_config
from pilotline.gateway.notify import NotificationSender
from pilotline.gateway.notify.booking import booking_payload
from pilotline.gateway.notify.email.channel import EmailChannel
from pilotline.gateway.notify.payload import dumps
from pilotline.gateway.service import Gateway
from pilotline.gateway.store import Store
from pilotline.rules import Sample
from pilotline.rules.booking import Request, Reservation, Status

pytestmark = pytest.mark.integration
__all__ = ["password_file", "pki", "server"]  # fixtures used here by name

MIN = 60_000
START = T0 + 60 * MIN


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def site(store: Path, url: str) -> str:
    return site_yaml(
        {"photonics": [machine_config("laser-01", "acme")]},
        site="it",
        influx=None,
        store=store,
        defaults={**UNIT_DEFAULTS, "offering": "always", "stale_after_s": 3600,
                  "publish_interval_s": 600},
        alerts={"webhooks": [
            {"name": "acme-desk", "url": f"{url}/acme", "alerts": False,
             "bookings": {"owners": ["acme"], "events": ["no_show"]}},
        ]},
    )


async def test_a_no_show_is_delivered_once(tmp_path: Path, receiver: Receiver) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site(tmp_path / "gw.db", receiver.url))
    clock = Clock(T0)
    gw = Gateway(load_config(path), clock_ms=clock, collectors=False)
    book = gw.store.reservations()
    held = book.request(
        Request("laser-01", "smallco", START, START + 60 * MIN),
        gw.config.booking_rules("laser-01"), [(T0, T0 + 600 * MIN)], T0,
    ).reservation
    assert held is not None
    book.confirm(held.id, T0, approval=False, by="smallco")
    # the machine stays idle through the booking's no-show grace (15 min)
    for ts in range(T0, START + 20 * MIN, 5 * MIN):
        clock.ms = ts
        gw.ingest.sample(Sample("laser-01", ts, {"state": "NotExecuting"}), None)
        gw.tick()
        gw.commit()
        gw.bookings.settle()
    assert book.get(held.id).status is Status.NO_SHOW  # type: ignore[union-attr]
    assert gw.booking_notices.run_once() == 1
    gw.store.close()  # stopped before any delivery: the row is in the outbox

    with Store(tmp_path / "gw.db") as store:
        assert store.notifications_waiting("acme-desk") == 1

    for _ in range(2):  # delivered by the first restart; the second has nothing to send
        restarted = Gateway(load_config(path), clock_ms=clock, collectors=False)
        task = asyncio.create_task(restarted.run(api=False))
        try:
            await wait_for(lambda: len(receiver.accepted) >= 1)
            await asyncio.sleep(2.5)  # longer than a notices run: nothing more comes
            assert restarted.store.notifications_waiting() == 0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    assert len(receiver.requests) == 1
    [(where, body)] = receiver.accepted
    assert where == "/acme"
    assert (body["kind"], body["event"], body["site"]) == ("booking", "no_show", "it")
    assert body["reservation"]["id"] == held.id
    assert body["reservation"]["tenant"] == "smallco"
    assert body["reservation"]["start_ms"] == START


async def test_a_no_show_mail_reaches_a_real_smtp_server_once(
    tmp_path: Path, server: SmtpServer, pki: tuple[Path, Issued, Path], password_file: Path
) -> None:
    res = Reservation("r_1", "laser-01", "smallco", START, START + 60 * MIN, Status.NO_SHOW)
    payload = booking_payload(
        "it", "oncall", event="no_show", event_id=7, at_ms=START + 15 * MIN, by="pilotline",
        note="idle, not running, by the end of the no-show grace", late=None, res=res,
        zone="photonics", owner="acme",
    )
    store = Store(tmp_path / "gw.db")
    store.commit(now_ms=T0, notifications=[("oncall", dumps(payload))])
    sender = NotificationSender(store, EmailChannel(mail_config(server, pki[0], password_file)))
    await run_until(sender, lambda: len(server.inbox.mails) == 1)
    assert server.inbox.subjects() == [
        "[pilotline it] [BOOKING no_show] laser-01 2026-11-27T01:00:00.000+00:00 (smallco)"
    ]
    text = server.inbox.mails[0][1].get_content()
    assert "Reservation r_1 of smallco on laser-01 (photonics, owner acme)" in text
    assert "was not used" in text
    assert store.notifications_waiting() == 0
    store.close()


async def test_starting_soon_and_overrun_are_delivered_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The tenant's channel hears ``starting_soon`` then ``overrun``, the owner's desk the
    overrun only, each once, across a gateway stopped between queueing and delivery and a
    restart that runs on past them."""
    path = tmp_path / "site.yaml"
    doc = yaml.safe_load(site(tmp_path / "gw.db", receiver.url))
    doc["alerts"]["webhooks"][0]["bookings"]["events"].append("overrun")  # acme-desk
    doc["alerts"]["webhooks"].append(
        {"name": "smallco", "url": f"{receiver.url}/smallco", "alerts": False,
         "bookings": {"tenants": ["smallco"], "events": ["starting_soon", "overrun"]}}
    )
    doc["alerts"]["booking_overrun"] = "10m"
    path.write_text(yaml.safe_dump(doc))
    clock = Clock(T0)
    gw = Gateway(load_config(path), clock_ms=clock, collectors=False)
    book = gw.store.reservations()
    held = book.request(
        Request("laser-01", "smallco", START, START + 60 * MIN),
        gw.config.booking_rules("laser-01"), [(T0, T0 + 600 * MIN)], T0,
    ).reservation
    assert held is not None
    book.confirm(held.id, T0, approval=False, by="smallco")
    told = 0
    # idle until 5 min before the start, then running through the end and 15 min past it
    for ts in range(T0 + MIN, START + 75 * MIN + 1, MIN):
        clock.ms = ts
        state = "Executing" if ts >= START - 5 * MIN else "NotExecuting"
        gw.ingest.sample(Sample("laser-01", ts, {"state": state}), None)
        gw.tick()
        gw.commit()
        gw.bookings.settle()
        told += gw.booking_notices.run_once()
    assert told == 3  # starting_soon to smallco; overrun to acme-desk and smallco
    gw.store.close()  # stopped before any delivery

    for _ in range(2):  # delivered by the first restart; the second has nothing to send
        restarted = Gateway(load_config(path), clock_ms=clock, collectors=False)
        task = asyncio.create_task(restarted.run(api=False))
        try:
            await wait_for(lambda: len(receiver.accepted) >= 3)
            await asyncio.sleep(2.5)  # longer than a notices run: nothing more comes
            assert restarted.store.notifications_waiting() == 0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    assert len(receiver.requests) == 3
    got = sorted((where, body["event"]) for where, body in receiver.accepted)
    assert got == [("/acme", "overrun"), ("/smallco", "overrun"), ("/smallco", "starting_soon")]
    for _, body in receiver.accepted:
        assert body["reservation"]["id"] == held.id
        assert body["event_id"] is None
