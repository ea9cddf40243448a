"""Offering fails closed: which policy applies to a machine (its own, its owner's, the site
default), an owner's name that matches no entry of ``owners:``, and what ``check`` says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.sites import UNIT_DEFAULTS, load_text, machine_config, refused, site_yaml

from pilotline.gateway.config import SiteConfig, summarize
from pilotline.rules import Capacity, Plant, Sample

T0 = 1_795_737_600_000  # 2026-11-27 00:00 UTC
EVENINGS: dict[str, Any] = {"weekly": [{"days": ["weekdays"], "from": "18:00", "to": "06:00"}]}


def capacity_after_idle(config: SiteConfig, machine: str) -> list[tuple[bool, bool]]:
    """(available, offered) of each change of ``machine``'s capacity while it is idle for
    30 s, past ``min_idle_s`` (0 in the unit defaults)."""
    plant = Plant(config.plant_spec())
    plant.receive(Sample(machine, T0, {"state": "Idle"}))
    plant.receive(Sample(machine, T0 + 30_000, {"state": "Idle"}))
    return [
        (e.available, e.offered)
        for e in plant.events()
        if isinstance(e, Capacity) and e.machine == machine and not e.periodic
    ]


# ------------------------------------------------------------------------- unknown owners

TYPO = """\
site: s
owners:
  photonics:
    offering:
      weekly: [{days: [weekdays], from: "18:00", to: "06:00"}]
zones:
  - id: z
    machines:
      - id: laser-01
        owner: photonics
        mqtt: {topic: t/laser-01}
        state: {signal: state}
      - id: laser-02
        owner: photonics-sa
        mqtt: {topic: t/laser-02}
        state: {signal: state}
mqtt: {url: "mqtt://127.0.0.1:1"}
"""


def test_an_owner_missing_from_owners_is_refused_with_its_line_and_a_suggestion(
    tmp_path: Path,
) -> None:
    issues = refused(tmp_path, TYPO)

    assert [(i.path, i.line) for i in issues] == [("zones[0].machines[1].owner", 14)]
    assert issues[0].message == "unknown owner 'photonics-sa': did you mean 'photonics'?"


def test_an_unknown_owner_far_from_any_listed_one_names_them_all(tmp_path: Path) -> None:
    text = site_yaml(
        {"z": [machine_config("a", "acme"), machine_config("b", "zenith")]},
        owners={"acme": {"offering": "always"}, "lumen": {"offering": "always"}},
    )

    issues = refused(tmp_path, text)

    # lumen is listed but has no machine: the existing check reports it too
    assert "zones[0].machines[1].owner" in {i.path for i in issues}
    message = next(i.message for i in issues if i.path == "zones[0].machines[1].owner")
    assert message == "unknown owner 'zenith': owners: lists acme, lumen"


# ------------------------------------------------------------------- which policy applies


def test_a_machine_with_no_policy_is_available_but_not_offered(tmp_path: Path) -> None:
    # no owners: section, so any owner's name is accepted
    config = load_text(tmp_path, site_yaml({"z": [machine_config("a", "whoever")]}))

    assert capacity_after_idle(config, "a") == [(True, False)]


def test_an_owner_listed_without_an_offering_gives_no_policy(tmp_path: Path) -> None:
    text = site_yaml(
        {"z": [machine_config("a", "acme")]}, owners={"acme": {"show_to_tenants": True}}
    )

    assert capacity_after_idle(load_text(tmp_path, text), "a") == [(True, False)]


def test_the_site_default_offers_a_machine_with_no_policy(tmp_path: Path) -> None:
    text = site_yaml(
        {"z": [machine_config("a")]}, defaults={**UNIT_DEFAULTS, "offering": "always"}
    )

    assert capacity_after_idle(load_text(tmp_path, text), "a") == [(True, True)]


def test_a_weekly_site_default_applies_as_an_owner_policy_would(tmp_path: Path) -> None:
    text = site_yaml(
        {"z": [machine_config("a")]},
        timezone="Europe/Paris",
        defaults={**UNIT_DEFAULTS, "offering": EVENINGS},
    )

    (spec,) = load_text(tmp_path, text).plant_spec().machines

    assert [(s.start.hour, s.end.hour if s.end else 24) for s in spec.policy.weekly] == [(18, 6)]
    assert str(spec.policy.tz) == "Europe/Paris"


def test_a_machine_s_own_policy_then_its_owner_s_come_before_the_site_default(
    tmp_path: Path,
) -> None:
    text = site_yaml(
        {
            "z": [
                machine_config("own", "acme", offering=EVENINGS),
                machine_config("owners", "acme"),
                machine_config("default", "lumen"),
            ]
        },
        owners={
            "acme": {"offering": {"blackouts": [{"from": "2026-12-24", "to": "2026-12-27"}]}},
            "lumen": {"show_to_tenants": True},
        },
        defaults={**UNIT_DEFAULTS, "offering": {"min_window_s": 60}},
    )

    own, owners, default = load_text(tmp_path, text).plant_spec().machines

    assert (len(own.policy.weekly), len(own.policy.blackouts), own.policy.min_window_ms) == (
        1, 0, 0
    )
    assert (len(owners.policy.weekly), len(owners.policy.blackouts)) == (0, 1)
    assert default.policy.min_window_ms == 60_000


def test_an_offering_is_always_or_a_mapping(tmp_path: Path) -> None:
    text = site_yaml(
        {"z": [machine_config("a", offering="sometimes")]},
        defaults={**UNIT_DEFAULTS, "offering": "allways"},
    )

    issues = {i.path: i.message for i in refused(tmp_path, text)}

    assert set(issues) == {"defaults.offering", "zones[0].machines[0].offering"}
    assert issues["defaults.offering"] == (
        "an offering is `always` or a mapping (weekly:, blackouts:, min_idle_s:, "
        "min_window_s:), got 'allways'"
    )


# -------------------------------------------------------------------------------- summary


def test_check_says_which_policy_applies_to_every_machine(tmp_path: Path) -> None:
    text = site_yaml(
        {
            "z": [
                machine_config("own", "acme", offering={**EVENINGS, "blackouts": [
                    {"from": "2026-12-24", "to": "2026-12-27"}
                ]}),
                machine_config("owners", "acme"),
                machine_config("listed", "lumen"),
            ]
        },
        owners={"acme": {"offering": "always"}, "lumen": {"show_to_tenants": True}},
    )
    with_default = site_yaml(
        {"z": [machine_config("default", "acme")]},
        defaults={**UNIT_DEFAULTS, "offering": {"weekly": [
            {"days": ["weekend"], "from": "00:00", "to": "24:00"},
            {"days": ["mon", "tue"], "from": "20:00", "to": "06:00"},
        ]}},
    )

    lines = summarize(load_text(tmp_path, text)).splitlines()
    default_lines = summarize(load_text(tmp_path, with_default)).splitlines()

    def offer_of(lines: list[str], machine: str) -> str:
        (found,) = [line for line in lines if f" {machine} [" in line]
        return found.split(" · ", 1)[1]

    assert offer_of(lines, "own") == "offered: own policy (weekdays 18:00-06:00, 1 blackout)"
    assert offer_of(lines, "owners") == "offered: owner acme's policy (any time)"
    assert offer_of(lines, "listed") == "not offered: no policy"
    assert offer_of(default_lines, "default") == (
        "offered: site default (weekend 00:00-24:00, mon tue 20:00-06:00)"
    )
