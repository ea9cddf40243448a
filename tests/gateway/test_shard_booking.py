"""Booking on a sharded site (issue 15): a booking route asked about a machine that another
shard's gateway keeps answers 421 Misdirected Request naming that shard, with its URL and a
``Location`` where ``api.shard_urls`` gives them (api/shards.py). Two gateways cut from one
site file, in process; the same over two real servers: tests/integration/test_sharded_booking.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.auth import bearer
from tests.fakes import T0, Clock
from tests.sites import UNIT_DEFAULTS, machine_config, site_yaml

from pilotline.gateway.api.app import create_app
from pilotline.gateway.config import ConfigError, load_config
from pilotline.gateway.config.sharding import owned_machines, restrict
from pilotline.gateway.service import Gateway
from pilotline.gateway.shard import Shard, ShardError, shard_of
from pilotline.gateway.store.tokens import Role

HOUR = 3_600_000
START = T0 + 2 * HOUR
URLS = ["https://gw-1.plant.example:8443", "https://gw-2.plant.example:8443/pilotline"]
# machine -> (owner, offered): on each shard an offered machine of each owner, and one that
# no policy offers (which shard keeps which is pinned by test_the_file_gives_...)
MACHINES = {
    "m-00": ("acme", True), "m-01": ("acme", True), "m-06": ("umbra", True),
    "m-02": ("umbra", True), "m-03": ("umbra", False), "m-09": ("acme", False),
}


def write_site(path: Path, *, urls: list[str] | None = URLS, **keys: Any) -> Path:
    machines = [
        machine_config(m, owner, capabilities=["cut"], **({"offering": "always"} if on else {}))
        for m, (owner, on) in MACHINES.items()
    ]
    api: dict[str, Any] = {"listen": "127.0.0.1:8080"}
    if urls is not None:
        api["shard_urls"] = urls
    path.write_text(site_yaml(
        {"z": machines}, influx=None, store=path.parent / "gw.db", api=api,
        defaults=UNIT_DEFAULTS, owners={"acme": {}, "umbra": {}}, **keys,
    ))
    return path


@pytest.fixture
async def shards(tmp_path: Path) -> AsyncIterator[list[tuple[Gateway, httpx.AsyncClient]]]:
    config = load_config(write_site(tmp_path / "site.yaml"))
    out = []
    clients = []
    for k in (1, 2):
        gateway = Gateway(restrict(config, Shard(k, 2)), clock_ms=Clock(T0))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(gateway)), base_url="http://api"
        )
        clients.append(client)
        out.append((gateway, client))
    yield out
    for (gateway, _), client in zip(out, clients, strict=True):
        await client.aclose()
        gateway.store.close()


def owner_shard(machine: str) -> int:
    return shard_of(machine, 2)


def pick(*, on: int, offered: bool = True, owner: str | None = None) -> str:
    """A machine that shard ``on`` of 2 keeps."""
    return next(
        m for m, (who, o) in MACHINES.items()
        if owner_shard(m) == on and o == offered and owner in (None, who)
    )


def test_the_file_gives_machines_to_both_shards() -> None:
    # the tests below need an offered machine of each owner on each shard, and one not offered
    for k in (1, 2):
        for owner in ("acme", "umbra"):
            pick(on=k, owner=owner)
        pick(on=k, offered=False)


async def test_a_booking_sent_to_the_wrong_shard_is_told_where_to_go(
    shards: list[tuple[Gateway, httpx.AsyncClient]],
) -> None:
    machine = pick(on=2)
    (one, client_1), (two, client_2) = shards
    body = {"machine": machine, "start": START, "end": START + HOUR}
    wrong = await client_1.post(
        "/api/reservations", json=body, headers=bearer(one.store, Role.TENANT, "smallco")
    )
    assert wrong.status_code == 421, wrong.text
    assert wrong.headers["content-type"] == "application/problem+json"
    problem = wrong.json()
    assert problem["title"] == "Misdirected Request"
    assert (problem["machine"], problem["shard"], problem["url"]) == (machine, "2/2", URLS[1])
    assert wrong.headers["location"] == f"{URLS[1]}/api/reservations"
    assert "shard 2/2" in problem["detail"]
    assert one.store.reservations().list() == []  # nothing written on the wrong one

    right = await client_2.post(
        "/api/reservations", json=body, headers=bearer(two.store, Role.TENANT, "smallco")
    )
    assert right.status_code == 201, right.text
    assert right.json()["machine"] == machine


async def test_offers_and_reservations_of_a_machine_say_where_it_is(
    shards: list[tuple[Gateway, httpx.AsyncClient]],
) -> None:
    here, there = pick(on=1), pick(on=2)
    (one, client_1), _ = shards
    operator = bearer(one.store, Role.OPERATOR)
    query = f"machine={there}&from=2026-11-27T02:00:00Z"
    offers = await client_1.get(f"/api/offers?{query}", headers=operator)
    assert offers.status_code == 421, offers.text
    assert offers.json()["shard"] == "2/2"
    # the same path and query, on the owner's gateway (its base URL has a path prefix)
    assert offers.headers["location"] == f"{URLS[1]}/api/offers?{query}"
    listed = await client_1.get(f"/api/reservations?machine={there}", headers=operator)
    assert listed.status_code == 421
    assert listed.headers["location"] == f"{URLS[1]}/api/reservations?machine={there}"

    own = await client_1.get(f"/api/offers?machine={here}", headers=operator)
    assert own.status_code == 200
    assert [o["machine"] for o in own.json()] == [here]
    assert (await client_1.get(f"/api/reservations?machine={here}", headers=operator)).json() == []


async def test_an_unknown_machine_is_answered_as_before(
    shards: list[tuple[Gateway, httpx.AsyncClient]],
) -> None:
    (one, client), _ = shards
    tenant = bearer(one.store, Role.TENANT, "smallco")
    booked = await client.post(
        "/api/reservations", headers=tenant,
        json={"machine": "no-such", "start": START, "end": START + HOUR},
    )
    assert booked.status_code == 422
    assert (await client.get("/api/offers?machine=no-such", headers=tenant)).json() == []
    assert (await client.get("/api/reservations?machine=no-such", headers=tenant)).json() == []


async def test_a_machine_the_caller_may_not_know_is_not_pointed_to(
    shards: list[tuple[Gateway, httpx.AsyncClient]],
) -> None:
    (one, client), _ = shards
    # a machine no policy offers, kept by shard 2: a tenant knows nothing of it
    hidden = pick(on=2, offered=False)
    tenant = bearer(one.store, Role.TENANT, "smallco")
    refused = await client.post(
        "/api/reservations", headers=tenant,
        json={"machine": hidden, "start": START, "end": START + HOUR},
    )
    assert refused.status_code == 422
    assert "location" not in refused.headers
    # the operator is pointed to it all the same
    operator = bearer(one.store, Role.OPERATOR)
    assert (await client.get(f"/api/offers?machine={hidden}", headers=operator)).status_code \
        == 421
    # an owner is pointed to its own machines only
    umbra_there, acme_there = pick(on=2, owner="umbra"), pick(on=2, owner="acme")
    umbra = bearer(one.store, Role.OWNER, "umbra")
    assert (await client.get(f"/api/offers?machine={umbra_there}", headers=umbra)).status_code \
        == 421
    other = await client.get(f"/api/offers?machine={acme_there}", headers=umbra)
    assert (other.status_code, other.json()) == (200, [])


async def test_without_shard_urls_the_shard_is_named_without_a_location(tmp_path: Path) -> None:
    config = load_config(write_site(tmp_path / "site.yaml", urls=None))
    gateway = Gateway(restrict(config, Shard(1, 2)), clock_ms=Clock(T0))
    transport = httpx.ASGITransport(app=create_app(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        there = pick(on=2)
        answer = await client.get(
            f"/api/offers?machine={there}", headers=bearer(gateway.store, Role.OPERATOR)
        )
    gateway.store.close()
    assert answer.status_code == 421
    assert answer.json()["shard"] == "2/2"
    assert "url" not in answer.json()
    assert "location" not in answer.headers


def test_the_layout_follows_zones_with_shard_by_zone(tmp_path: Path) -> None:
    zones = {
        f"zone-{i}": [machine_config(f"zone-{i}-m{j}", offering="always") for j in range(2)]
        for i in range(6)
    }
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml(zones, influx=None, store=tmp_path / "gw.db",
                              defaults=UNIT_DEFAULTS, shard_by="zone"))
    config = load_config(path)
    k = next(k for k in (1, 2, 3) if owned_machines(config, Shard(k, 3)))
    layout = restrict(config, Shard(k, 3)).shard_layout
    assert layout is not None
    for zone, machines in zones.items():
        for m in machines:
            owner = layout.owner_of(m["id"])
            assert owner == Shard(shard_of(zone, 3), 3)  # the zone's shard, not the machine's
    assert layout.owner_of("no-such") is None
    assert load_config(path).shard_layout is None  # an uncut configuration has none


def test_shard_urls_must_be_one_per_shard(tmp_path: Path) -> None:
    config = load_config(write_site(tmp_path / "site.yaml", urls=URLS[:1]))
    with pytest.raises(ShardError, match=r"api.shard_urls: 1 URL\(s\) for 2 shards"):
        restrict(config, Shard(1, 2))
    # a single gateway needs none, and a layout of 1 with one URL is fine
    assert restrict(config, Shard(1, 1)).shard_layout is not None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("gw-1:8080", "is not an http:// or https:// URL"),
        ("ftp://gw-1", "is not an http:// or https:// URL"),
        ("https://", "is not an http:// or https:// URL with a host"),
        ("https://user:secret@gw-1", "no credentials"),
        ("https://gw-1/?x=1", "no query or fragment"),
        ("https://gw-1:99999", "is not a URL"),
    ],
)
def test_a_bad_shard_url_is_refused_at_its_path(tmp_path: Path, url: str, message: str) -> None:
    write_site(tmp_path / "site.yaml", urls=[URLS[0], url])
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "site.yaml")
    assert "site.yaml:9 api.shard_urls[1]: " in str(caught.value)
    assert message in str(caught.value)
