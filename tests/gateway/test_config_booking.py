"""Booking rules from the file: ``booking:`` under ``defaults``, an owner and a machine,
merged key by key; durations and quotas; rules that cannot all be kept, refused at the key
that made them with its line; planned maintenance in the site's local time; what ``check``
says of each machine."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from tests.sites import load_text, machine_config, refused, site_yaml

from pilotline.gateway.config import SiteConfig, summarize
from pilotline.rules.booking import BookingRules

H = 3_600_000
M = 60_000
DAY = 24 * H


def epoch_ms(*parts: int) -> int:
    return round(datetime(*parts, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def site(tmp_path: Path, **keys: Any) -> SiteConfig:
    """Machines ``a`` (owner acme, with ``a_booking`` as its own section) and ``b`` (owner
    acme, none), ``c`` (owner lumen, none); ``keys`` are top-level keys."""
    a_booking = keys.pop("a_booking", None)
    a = machine_config("a", "acme", **({"booking": a_booking} if a_booking else {}))
    text = site_yaml(
        {"z": [a, machine_config("b", "acme"), machine_config("c", "lumen")]}, **keys
    )
    return load_text(tmp_path, text)


# ----------------------------------------------------------------------------- merge order


def test_without_any_booking_section_a_machine_gets_pilotline_s_defaults(tmp_path: Path) -> None:
    config = site(tmp_path)

    assert config.booking_rules("a") == BookingRules()


def test_each_key_comes_from_the_most_specific_section_that_sets_it(tmp_path: Path) -> None:
    config = site(
        tmp_path,
        defaults={"booking": {"min_length_s": "30m", "buffer_s": "5m", "horizon_s": "60d"}},
        owners={
            "acme": {"booking": {"min_length_s": "1h", "approval": True}},
            "lumen": {"show_to_tenants": True},
        },
        a_booking={"min_length_s": "2h", "late_cancel_s": "2d"},
    )

    a, b, c = (config.booking_rules(m) for m in "abc")

    def keys(r: BookingRules) -> tuple[int, bool, int, int, int]:
        return r.min_length_ms, r.approval, r.buffer_ms, r.late_cancel_ms, r.horizon_ms

    # machine > owner > defaults > BookingRules(), key by key
    assert keys(a) == (2 * H, True, 5 * M, 2 * DAY, 60 * DAY)
    assert keys(b) == (H, True, 5 * M, DAY, 60 * DAY)
    assert keys(c) == (30 * M, False, 5 * M, DAY, 60 * DAY)
    assert a.hold_ms == BookingRules().hold_ms


def test_an_unknown_machine_has_no_rules(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        site(tmp_path).booking_rules("nope")


# --------------------------------------------------------------------- durations and quotas


def test_durations_take_units_or_seconds(tmp_path: Path) -> None:
    config = site(
        tmp_path,
        a_booking={
            "min_length_s": "1h30m", "max_length_s": 36_000, "min_notice_s": "2h",
            "horizon_s": "90d", "buffer_s": "10m", "step_s": "30m", "hold_s": 120,
            "early_grace_s": "5m", "no_show_grace_s": "20m", "late_cancel_s": "1d12h",
        },
    )

    assert config.booking_rules("a") == BookingRules(
        min_length_ms=90 * M, max_length_ms=10 * H, min_notice_ms=2 * H, horizon_ms=90 * DAY,
        buffer_ms=10 * M, step_ms=30 * M, hold_ms=2 * M, early_grace_ms=5 * M,
        no_show_grace_ms=20 * M, late_cancel_ms=36 * H,
    )


@pytest.mark.parametrize(
    ("per", "period_ms"), [("day", DAY), ("week", 7 * DAY), ("month", 30 * DAY), (None, 7 * DAY)]
)
def test_a_quota_is_hours_per_period(tmp_path: Path, per: str | None, period_ms: int) -> None:
    quota: dict[str, Any] = {"hours": 7.5, **({"per": per} if per else {})}

    rules = site(tmp_path, a_booking={"quota": quota}).booking_rules("a")

    assert (rules.quota_ms, rules.quota_period_ms) == (7_500 * 3_600, period_ms)


def test_a_machine_lifts_its_owner_s_quota_with_zero_hours(tmp_path: Path) -> None:
    config = site(
        tmp_path,
        owners={
            "acme": {"booking": {"quota": {"hours": 8, "per": "week"}}},
            "lumen": {},
        },
        a_booking={"quota": {"hours": 0}},
    )

    assert config.booking_rules("a").quota_ms == 0
    assert config.booking_rules("b").quota_ms == 8 * H


# ------------------------------------------------------------------------------- refusals

REFUSED = """\
site: s
mqtt: {url: "mqtt://127.0.0.1:1"}
defaults:
  booking:
    min_notice_s: 2d
    horizon_s: 1d
owners:
  acme:
    booking:
      max_length_s: 1h
zones:
  - id: z
    machines:
      - id: a
        owner: acme
        mqtt: {topic: t/a}
        state: {signal: state}
        booking:
          min_length_s: 2h
          step_s: 20m
          buffer_s: -5
          quota: {hours: 3, per: year}
      - id: b
        owner: acme
        mqtt: {topic: t/b}
        state: {signal: state}
        booking:
          max_length_s: 50m
          quota: {hours: 0.1}
        maintenance:
          - {from: 2026-10-25T06:00:00, to: 2026-10-24T22:00:00}
"""


def test_rules_that_cannot_all_be_kept_are_refused_at_their_key_with_its_line(
    tmp_path: Path,
) -> None:
    issues = {(i.path, i.line): i.message for i in refused(tmp_path, REFUSED)}

    assert issues == {
        ("defaults.booking.min_notice_s", 5): (
            "min_notice_s 2d is not shorter than horizon_s 1d: no start could keep both"
        ),
        # the machine's minimum against its owner's maximum: at the machine's key
        ("zones[0].machines[0].booking.min_length_s", 19): (
            "min_length_s 2h is longer than max_length_s 1h: no booking could keep both "
            "(owners.acme.booking.max_length_s)"
        ),
        ("zones[0].machines[0].booking.buffer_s", 21): (
            "Input should be greater than or equal to 0, got -5"
        ),
        ("zones[0].machines[0].booking.quota.per", 22): (
            "Input should be 'day', 'week' or 'month', got 'year'"
        ),
        ("zones[0].machines[1].booking.max_length_s", 28): (
            "max_length_s 50m is not a multiple of step_s 15m: bookings start and end on "
            "that grid (pilotline's default)"
        ),
        ("zones[0].machines[1].booking.quota", 29): (
            "the quota of 6m is shorter than min_length_s 15m: no booking would fit in it "
            "(pilotline's default)"
        ),
        ("zones[0].machines[1].maintenance[0]", 31): (
            "a maintenance period's `to` must come after its `from`"
        ),
    }


def test_a_minimum_off_the_step_s_grid_is_refused(tmp_path: Path) -> None:
    text = site_yaml(
        {"z": [machine_config("a", booking={"min_length_s": "45m", "step_s": "30m"})]}
    )

    (issue,) = refused(tmp_path, text)

    assert issue.path == "zones[0].machines[0].booking.min_length_s"
    assert issue.message == (
        "min_length_s 45m is not a multiple of step_s 30m: bookings start and end on that grid"
    )


def test_an_owner_s_mistake_is_reported_once_for_all_its_machines(tmp_path: Path) -> None:
    text = site_yaml(
        {"z": [machine_config("a"), machine_config("b")]},
        owners={"acme": {"booking": {"min_length_s": "2h", "max_length_s": "1h"}}},
    )

    issues = refused(tmp_path, text)

    assert [(i.path, i.message) for i in issues] == [
        (
            "owners.acme.booking.min_length_s",
            "min_length_s 2h is longer than max_length_s 1h: no booking could keep both",
        )
    ]


def test_a_configuration_built_in_code_is_refused_too() -> None:
    data = {
        "site": "s",
        "mqtt": {"url": "mqtt://127.0.0.1:1"},
        "zones": [{"id": "z", "machines": [
            machine_config("a", booking={"min_length_s": "2h", "max_length_s": "1h"})
        ]}],
    }

    with pytest.raises(ValidationError, match=r"zones\[0\]\.machines\[0\]\.booking\.min_length_s"):
        SiteConfig.model_validate(data)


# ---------------------------------------------------------------------------- maintenance


def test_maintenance_without_an_offset_is_the_site_s_local_time_across_a_dst_change(
    tmp_path: Path,
) -> None:
    periods = [
        # the night the clocks go back in Paris (03:00 CEST -> 02:00 CET): nine hours
        {"from": "2026-10-24T22:00:00", "to": "2026-10-25T06:00:00", "reason": "service"},
        # the night they go forward (02:00 CET -> 03:00 CEST): seven hours
        {"from": "2027-03-27T22:00:00", "to": "2027-03-28T06:00:00"},
        # an offset given is kept
        {"from": "2026-12-01T08:00:00+00:00", "to": "2026-12-01T09:00:00+00:00"},
    ]
    text = site_yaml(
        {"z": [machine_config("a", maintenance=periods), machine_config("b")]},
        timezone="Europe/Paris",
    )

    config = load_text(tmp_path, text)

    assert config.maintenance("a") == (
        (epoch_ms(2026, 10, 24, 20), epoch_ms(2026, 10, 25, 5)),
        (epoch_ms(2027, 3, 27, 21), epoch_ms(2027, 3, 28, 4)),
        (epoch_ms(2026, 12, 1, 8), epoch_ms(2026, 12, 1, 9)),
    )
    assert config.maintenance("b") == ()


# -------------------------------------------------------------------------------- summary


def test_check_s_summary_states_each_machine_s_rules_in_one_line(tmp_path: Path) -> None:
    text = site_yaml(
        {"z": [
            machine_config(
                "a",
                booking={
                    "min_length_s": "1h", "step_s": "30m", "quota": {"hours": 20, "per": "month"}
                },
                maintenance=[{"from": "2026-10-24T22:00:00", "to": "2026-10-25T06:00:00"}],
            ),
            machine_config("b"),
        ]},
        owners={"acme": {"booking": {"max_length_s": "4h", "approval": True, "buffer_s": "10m"}}},
    )

    lines = summarize(load_text(tmp_path, text)).splitlines()

    start = lines.index("  booking rules (machine > owner > defaults.booking > pilotline's):")
    assert lines[start + 1 : start + 3] == [
        "    a: 1h-4h /30m, notice 0, horizon 90d, buffer 10m, approval, quota 20h/month, "
        "hold 10m, grace -15m/+15m, late cancel 1d · 1 maintenance period",
        "    b: 15m-4h /15m, notice 0, horizon 90d, buffer 10m, approval, no quota, "
        "hold 10m, grace -15m/+15m, late cancel 1d",
    ]
