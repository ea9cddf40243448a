"""Sharding one site across gateways: the rendezvous hash, the cut configuration, the CLI.

The two-gateway run on a real broker is tests/integration/test_sharding.py.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from tests import sites
from tests.fakes import T0
from tests.sites import POWER_STATE, UNIT_MQTT, machine_config

from pilotline.gateway.cli import main
from pilotline.gateway.config import ConfigError, SiteConfig, load_config
from pilotline.gateway.config.sharding import distribution, owned_machines, restrict
from pilotline.gateway.service import Gateway
from pilotline.gateway.shard import (
    MAX_SHARDS,
    Shard,
    ShardError,
    client_id,
    parse_shard,
    shard_of,
    store_path,
    weight,
)
from pilotline.gateway.sinks.influx.points import event_lines, utilization_rows
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.rules import Sample
from pilotline.rules.events import ZoneCapacity
from pilotline.rules.utilization import Usage, Utilization, ZoneUsage

IDS = [f"machine-{i:04d}" for i in range(1000)]


# --------------------------------------------------------------------------- the hash


@pytest.mark.parametrize("count", range(1, 9))
def test_every_machine_belongs_to_exactly_one_shard(count: int) -> None:
    owners = {key: [k for k in range(1, count + 1) if shard_of(key, count) == k] for key in IDS}
    assert all(len(found) == 1 for found in owners.values())
    sizes = [sum(found == [k] for found in owners.values()) for k in range(1, count + 1)]
    assert sum(sizes) == len(IDS)
    # Not a guarantee of the scheme, a check that the hash spreads: within 25% of even.
    even = len(IDS) / count
    assert all(abs(size - even) <= 0.25 * even for size in sizes), sizes


@pytest.mark.parametrize("count", range(1, 8))
def test_adding_a_shard_moves_only_the_machines_the_new_one_takes(count: int) -> None:
    moved = 0
    for key in IDS:
        before, after = shard_of(key, count), shard_of(key, count + 1)
        if after != before:
            assert after == count + 1, f"{key} moved from {before} to old shard {after}"
            moved += 1
    expected = len(IDS) / (count + 1)
    assert abs(moved - expected) <= 0.25 * expected, (moved, expected)


def test_the_hash_is_pinned_across_processes_and_releases() -> None:
    # Every gateway of a site (other hosts, other Python builds, a later pilotline) must
    # agree, and a changed hash would reshuffle every deployed site: these values are fixed.
    pinned = {key: shard_of(key, 4) for key in ("laser-01", "cam-02", "coater-7", "photonics")}
    code = (
        "from pilotline.gateway.shard import shard_of;"
        "print([shard_of(k, 4) for k in ('laser-01', 'cam-02', 'coater-7', 'photonics')])"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    )
    assert other.stdout.strip() == str(list(pinned.values()))
    assert weight("laser-01", 1) == int.from_bytes(
        hashlib.blake2b(b"1\x00laser-01", digest_size=8).digest(), "big"
    )
    assert pinned == {"laser-01": 1, "cam-02": 1, "coater-7": 2, "photonics": 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0/4", "K must be between 1 and 4"),
        ("5/4", "K must be between 1 and 4"),
        ("3", "is not K/N"),
        ("x/y", "is not K/N"),
        ("", "is not K/N"),
        ("-1/4", "is not K/N"),
        ("1/0", "N must be between 1"),
        (f"1/{MAX_SHARDS + 1}", "N must be between 1"),
        ("2/4/8", "is not K/N"),
    ],
)
def test_bad_shards_are_refused_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ShardError, match=message):
        parse_shard(text)


def test_a_shard_reads_and_prints_as_k_of_n() -> None:
    shard = parse_shard(" 2/4 ")
    assert shard == Shard(2, 4)
    assert (str(shard), shard.label) == ("2/4", "2of4")
    assert store_path(Path("/var/lib/pilotline/pilotline.db"), shard) == Path(
        "/var/lib/pilotline/pilotline.shard-2of4.db"
    )
    assert client_id("pilotline-marseille", shard) == "pilotline-marseille-shard-2of4"
    # One shard of one is the unsharded gateway: same session, same store.
    assert store_path(Path("a.db"), Shard(1, 1)) == Path("a.db")
    assert client_id("pilotline-x", Shard(1, 1)) == "pilotline-x"


# --------------------------------------------------------------------------- the cut config


def site_yaml(
    zones: dict[str, int], extra: str = "", store: str = "./var/pilotline.db", **keys: Any
) -> str:
    """``zones[zone]`` machines in each zone (``<zone>-00``...); ``extra`` is YAML text
    appended, ``keys`` any other top-level keys."""
    machines = {
        zone: [
            machine_config(
                f"{zone}-{i:02d}",
                capabilities=["cut"],
                topic=f"plant/{zone}/{zone}-{i:02d}",
                state=POWER_STATE,
            )
            for i in range(count)
        ]
        for zone, count in zones.items()
    }
    return sites.site_yaml(machines, site="shard-site", store=store, **keys) + extra


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml({"photonics": 12, "imaging": 3, "coating": 1}))
    return path


def test_the_shards_of_a_config_split_its_machines_exactly(site: Path) -> None:
    config = load_config(site)
    everything = [m.id for _, m in config.machines()]
    for count in range(1, 6):
        cuts = [restrict(config, Shard(k, count)) for k in range(1, count + 1)
                if owned_machines(config, Shard(k, count))]
        owned = [{m.id for _, m in cut.machines()} for cut in cuts]
        assert sorted(m for part in owned for m in part) == sorted(everything)
        assert all(not (a & b) for a, b in combinations(owned, 2))
        assert distribution(config, count) == [
            len(owned_machines(config, Shard(k, count))) for k in range(1, count + 1)
        ]


def test_a_cut_config_keeps_only_its_machines_and_gets_its_own_store_and_session(
    site: Path,
) -> None:
    config = load_config(site)
    cut = restrict(config, Shard(2, 3))
    mine = owned_machines(config, Shard(2, 3))
    assert [m.id for _, m in cut.machines()] == mine
    assert {m.id for _, m in cut.machines()} < {m.id for _, m in config.machines()}
    # zones with no machine left are dropped; the others keep their order
    expected_zones = [z.id for z in config.zones if any(m.id in mine for m in z.machines)]
    assert [z.id for z in cut.zones] == expected_zones
    assert all(z.machines for z in cut.zones)
    assert cut.store == config.store.with_name("pilotline.shard-2of3.db")
    assert cut.mqtt is not None
    assert cut.mqtt.client_id == "pilotline-shard-site-shard-2of3"
    assert (cut.shard, cut.applied_shard, cut.shard_tag) == ("2/3", "2/3", "2/3")
    # the plant spec, topics and everything else follow from the cut
    assert [m.id for m in cut.plant_spec().machines] == mine
    # the whole config is left as it was
    assert config.applied_shard == ""
    assert config.shard_tag == ""
    assert restrict(cut, Shard(2, 3)) is cut  # applied once, whatever calls it again
    with pytest.raises(ShardError, match="already cut to shard 2/3"):
        restrict(cut, Shard(1, 3))


def test_an_explicit_client_id_gets_the_shard_suffix(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml({"photonics": 4}, mqtt={**UNIT_MQTT, "client_id": "gw"}))
    config = load_config(path)
    k = next(k for k in (1, 2) if owned_machines(config, Shard(k, 2)))
    cut = restrict(config, Shard(k, 2))
    assert cut.mqtt is not None
    assert cut.mqtt.client_id == f"gw-shard-{k}of2"


def test_without_a_shard_the_config_is_returned_as_is(site: Path) -> None:
    config = load_config(site)
    assert restrict(config) is config
    whole = restrict(config, Shard(1, 1))
    assert whole.machines() == config.machines()
    assert whole.store == config.store
    assert whole.shard_tag == ""  # one gateway: the contract is unchanged


def test_by_zone_whole_zones_stay_together_and_zone_points_are_not_tagged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "site.yaml"
    zones = {f"zone-{i}": 3 for i in range(10)}
    path.write_text(site_yaml(zones, extra="shard_by: zone\n"))
    config = load_config(path)
    for k in range(1, 4):
        if not owned_machines(config, Shard(k, 3)):
            continue
        cut = restrict(config, Shard(k, 3))
        assert all(len(z.machines) == 3 for z in cut.zones)  # no zone split
        assert {z.id for z in cut.zones} == {
            z for z in zones if shard_of(z, 3) == k
        }
        assert cut.shard_tag == ""


def test_a_shard_that_owns_nothing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml({"photonics": 2}))
    config = load_config(path)
    empty = next(k for k in range(1, 9) if not owned_machines(config, Shard(k, 8)))
    with pytest.raises(ShardError, match=f"shard {empty}/8 owns none of the site's 2 machines"):
        restrict(config, Shard(empty, 8))


def test_the_config_key_sets_the_shard_and_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml({"photonics": 12}, extra="shard: 2/3\n"))
    config = load_config(path)
    assert (config.shard, config.shard_by, config.applied_shard) == ("2/3", "machine", "")
    cut = restrict(config)
    assert cut.applied_shard == "2/3"
    assert restrict(config, Shard(1, 2)).applied_shard == "1/2"  # an explicit shard wins

    path.write_text(site_yaml({"photonics": 2}, extra="shard: 0/4\nshard_by: rack\n"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "shard: shard 0/4: K must be between 1 and 4" in text
    assert "shard_by: Input should be 'zone' or 'machine', got 'rack'" in text


# --------------------------------------------------------------------------- zone points


def test_zone_points_carry_the_shard_tag_only_when_given_one() -> None:
    event = ZoneCapacity("photonics", "all", T0, 5, 2, 1, 0, 2)
    [plain] = event_lines("s", event)
    [tagged] = event_lines("s", event, "2/4")
    assert plain.startswith("zone_capacity,capability=all,site=s,zone=photonics ")
    assert tagged.startswith("zone_capacity,capability=all,shard=2/4,site=s,zone=photonics ")
    report = Utilization(
        T0, T0 + 1000, T0 + 1000, (), (ZoneUsage("photonics", 2, Usage({}, 2000)),)
    )
    [zone_row] = utilization_rows("s", report, T0, "2/4")
    assert zone_row[1].startswith("utilization,shard=2/4,site=s,zone=photonics ")


def test_a_gateway_on_a_cut_config_tracks_and_writes_only_its_machines(site: Path) -> None:
    config = load_config(site)
    shard = Shard(1, 2)
    cut = restrict(config, shard)
    mine = set(owned_machines(config, shard))
    clock = [T0]
    gw = Gateway(cut, writer=MemoryWriter(), clock_ms=lambda: clock[0])
    assert {m.id for m in gw.plant_spec.machines} == mine
    assert gw.mqtt is not None
    assert set(gw.mqtt._topics.values()) == mine
    assert gw.mqtt._client_id == "pilotline-shard-site-shard-1of2"
    assert gw.store.path == cut.store
    for _, machine in config.machines():
        gw.ingest.sample(Sample(machine.id, T0, {"power_w": 300.0}), None)
    clock[0] = T0 + 61_000
    gw.ingest.advance(clock[0])
    gw.commit()
    lines = [line for _, line in gw.store.outbox_peek(10_000)]
    states = {
        part.split("=")[1]
        for line in lines
        if line.startswith("machine_state,")
        for part in line.split(" ")[0].split(",")
        if part.startswith("machine=")
    }
    assert states == mine  # other shards' machines are rejected, not written
    zone_lines = [line for line in lines if line.startswith("zone_capacity,")]
    assert zone_lines
    assert all(",shard=1/2," in line for line in zone_lines)
    counted = {
        line.split("zone=")[1].split(" ")[0]: int(line.split("machines=")[1].split("i")[0])
        for line in zone_lines
        if "capability=all" in line
    }
    assert counted == {
        z.id: len(z.machines) for z in cut.zones
    }  # each shard counts its own machines of a zone, no more


# --------------------------------------------------------------------------- the CLI


def test_check_with_a_shard_lists_what_it_owns(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(site)
    assert main(["check", "-c", str(site), "--shard", "2/3"]) == 0
    out = capsys.readouterr().out
    mine = owned_machines(config, Shard(2, 3))
    assert out.startswith(f"shard 2/3 (by machine) of site shard-site: {len(mine)} of 16 machines")
    assert "mqtt client id pilotline-shard-site-shard-2of3" in out
    assert "pilotline.shard-2of3.db" in out
    sizes = distribution(config, 3)
    assert f"machines per shard: 1/3: {sizes[0]}, 2/3: {sizes[1]}, 3/3: {sizes[2]}" in out
    for _, machine in config.machines():
        assert (f"{machine.id} [" in out) == (machine.id in mine)


@pytest.mark.parametrize(
    ("value", "message"),
    [("0/4", "K must be between 1 and 4"), ("5/4", "K must be between 1 and 4"),
     ("3", "is not K/N"), ("x/y", "is not K/N")],
)
def test_cli_refuses_bad_shards(
    site: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    for command in ("check", "run"):
        with pytest.raises(SystemExit) as exited:
            main([command, "-c", str(site), "--shard", value])
        assert exited.value.code == 2
        assert message in capsys.readouterr().err


def test_check_and_run_refuse_an_empty_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml({"photonics": 2}))
    config = load_config(path)
    empty = next(k for k in range(1, 9) if not owned_machines(config, Shard(k, 8)))
    assert main(["check", "-c", str(path), "--shard", f"{empty}/8"]) == 1
    assert "owns none of the site's 2 machines" in capsys.readouterr().err
    assert main(["run", "-c", str(path), "--shard", f"{empty}/8"]) == 1
    err = capsys.readouterr().err
    assert "owns none" in err
    assert "nothing was started" in err
    assert not (tmp_path / "var").exists()  # no store was created


def test_token_goes_to_the_shards_store(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "create", "-c", str(site), "--shard", "2/2", "--name", "ops",
                 "--role", "operator"]) == 0
    capsys.readouterr()
    assert (site.parent / "var" / "pilotline.shard-2of2.db").exists()
    assert not (site.parent / "var" / "pilotline.db").exists()
    assert main(["token", "list", "-c", str(site), "--shard", "2/2"]) == 0
    assert capsys.readouterr().out.startswith("ops\toperator")
    assert main(["token", "list", "-c", str(site), "--shard", "1/2"]) == 0
    assert capsys.readouterr().out == ""


def test_site_config_type_is_unchanged_for_unsharded_files(site: Path) -> None:
    config = load_config(site)
    assert isinstance(config, SiteConfig)
    assert (config.shard, config.shard_by, config.applied_shard) == (None, "machine", "")
