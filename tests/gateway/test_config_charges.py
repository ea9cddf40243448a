"""Charge rules from the file: ``booking.charge`` under ``defaults``, an owner and a machine,
merged key by key; the defaults; wrong values refused at their key with its line."""

from __future__ import annotations

from pathlib import Path

from tests.sites import load_text, machine_config, refused, site_yaml

from pilotline.gateway.config.summary import summarize
from pilotline.rules.booking.charges import Basis, ChargeRule

M = 60_000


def test_without_any_charge_section_bookings_are_free_by_booked_time(tmp_path: Path) -> None:
    config = load_text(tmp_path, site_yaml({"z": [machine_config("a", "acme")]}))

    rule = config.charge_rule("a")

    assert rule == ChargeRule()
    assert (rule.basis, rule.rate_per_hour, rule.no_show_fraction) == (Basis.RESERVATION, 0, 1)


def test_charge_keys_merge_machine_over_owner_over_defaults(tmp_path: Path) -> None:
    text = site_yaml(
        {"z": [
            machine_config("a", "acme", booking={"charge": {"basis": "use", "minimum_s": "1h"}}),
            machine_config("b", "acme"),
            machine_config("c", "lumen"),
        ]},
        defaults={"booking": {"charge": {"rate_per_hour": 40, "step_s": "15m",
                                         "currency": "CHF"}}},
        owners={"acme": {"booking": {"charge": {"rate_per_hour": 90, "late_cancel_fee": 25,
                                                "unused_fraction": 0.5}}},
                "lumen": {}},
    )
    config = load_text(tmp_path, text)

    a, b, c = (config.charge_rule(m) for m in "abc")

    assert a == ChargeRule(basis=Basis.USE, rate_per_hour=90, step_ms=15 * M,
                           minimum_ms=60 * M, unused_fraction=0.5, late_cancel_fee=25,
                           currency="CHF")
    assert b == ChargeRule(rate_per_hour=90, step_ms=15 * M, unused_fraction=0.5,
                           late_cancel_fee=25, currency="CHF")
    assert c == ChargeRule(rate_per_hour=40, step_ms=15 * M, currency="CHF")


def test_check_says_what_a_booking_costs_where_a_rule_is_set(tmp_path: Path) -> None:
    text = site_yaml(
        {"z": [machine_config("a", "acme", booking={"charge": {
            "basis": "max", "rate_per_hour": 60, "step_s": "15m", "no_show_fraction": 0.5,
            "late_cancel_fee": 20}}), machine_config("b", "acme")]},
    )

    lines = summarize(load_text(tmp_path, text)).splitlines()

    [a] = [line for line in lines if line.strip().startswith("a: ")]
    assert a.endswith(
        " · 60.00 EUR per hour of booked or used time, whichever is more, in steps of 15m; "
        "a no-show pays 0.5 of its booked time; cancelling later than 1d before the start: "
        "20.00 EUR (waived when the slot is booked again)"
    )
    [b] = [line for line in lines if line.strip().startswith("b: ")]
    assert "EUR" not in b  # no rule: free, and nothing said


REFUSED = """\
site: s
mqtt: {url: "mqtt://127.0.0.1:1"}
owners:
  acme:
    booking:
      charge:
        basis: hourly
        rate_per_hour: -3
zones:
  - id: z
    machines:
      - id: a
        owner: acme
        mqtt: {topic: t/a}
        state: {signal: state}
        booking:
          charge:
            no_show_fraction: 1.5
            currency: "€ euro"
            per: hour
"""


def test_wrong_charge_keys_are_refused_at_their_key_with_its_line(tmp_path: Path) -> None:
    issues = {(i.path, i.line) for i in refused(tmp_path, REFUSED)}

    assert issues == {
        ("owners.acme.booking.charge.basis", 7),
        ("owners.acme.booking.charge.rate_per_hour", 8),
        ("zones[0].machines[0].booking.charge.no_show_fraction", 18),
        ("zones[0].machines[0].booking.charge.currency", 19),
        ("zones[0].machines[0].booking.charge.per", 20),
    }
