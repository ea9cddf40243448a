"""The InfluxDB 1.x retention and downsampling recipe of docs/operator-guide.md (section 8),
taken from the page and run against a real InfluxDB 1.x: the means land in the long
retention policy with their tags, and the daily delete removes old raw telemetry only."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.peers import InfluxDB1, PeerUnavailableError

pytestmark = pytest.mark.integration

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operator-guide.md"
MINUTE_NS = 60_000_000_000
DAY_NS = 86_400 * 1_000_000_000


def recipe() -> tuple[list[str], str]:
    """The page's InfluxQL statements (retention policy, continuous query) and its delete."""
    text = GUIDE.read_text()
    section = text[text.index("**InfluxDB 1.x**") :]
    sql = re.search(r"```sql\n(.*?)```", section, re.S)
    shell = re.search(r"-execute '(DELETE .*?)'", section)
    assert sql is not None
    assert shell is not None
    statements = re.split(r"\n(?=CREATE )", sql.group(1).strip())
    return statements, shell.group(1)


@pytest.fixture
def influx() -> Iterator[InfluxDB1]:
    try:
        server = InfluxDB1().start()
    except PeerUnavailableError as exc:
        pytest.fail(str(exc))  # CI installs it: a missing peer is a failure, not a skip
    try:
        yield server
    finally:
        server.close()


def test_the_guides_downsampling_and_delete_keep_what_they_say(influx: InfluxDB1) -> None:
    statements, delete = recipe()
    assert len(statements) == 2
    for statement in statements:
        influx.query(statement, method="POST")
    (shown,) = influx.query("SHOW CONTINUOUS QUERIES")[0]["series"][-1:]
    assert shown["name"] == "pilotline"
    assert shown["values"][0][0] == "telemetry_1m"

    now = time.time_ns() // MINUTE_NS * MINUTE_NS
    old = now - 40 * DAY_NS  # older than the raw telemetry is kept
    recent = now - 60 * MINUTE_NS
    lines = []
    for start in (old, recent):
        for second in range(0, 120, 10):  # two minutes, a sample each 10 s
            ts = start + second * 1_000_000_000
            lines.append(f"telemetry,site=s,zone=z1,machine=m1 power_w={100 + second} {ts}")
            lines.append(f"telemetry,site=s,zone=z1,machine=m2 power_w={second} {ts}")
    lines.append(f'machine_state,site=s,zone=z1,machine=m1,owner=o state="idle" {old}')
    influx.write(lines)

    # what the continuous query does each hour, here over everything at once
    select = re.search(r"BEGIN\s+(.*?)\s+END", statements[1], re.S)
    assert select is not None
    influx.query(select.group(1), method="POST")
    means = influx.query(
        'SELECT "mean_power_w" FROM "pilotline"."two_years"."telemetry_1m" GROUP BY "machine"'
    )[0]["series"]
    by_machine = {s["tags"]["machine"]: [v[1] for v in s["values"]] for s in means}
    # each minute: the mean of its six samples (0..50 s, then 60..110 s)
    assert by_machine == {"m1": [125, 185, 125, 185], "m2": [25, 85, 25, 85]}
    tags = influx.query('SHOW TAG KEYS FROM "pilotline"."two_years"."telemetry_1m"')
    assert [v[0] for v in tags[0]["series"][0]["values"]] == ["machine", "site", "zone"]

    influx.query(delete, method="POST")
    raw = influx.query('SELECT COUNT("power_w") FROM "telemetry" WHERE time > 0 GROUP BY "machine"')
    assert {s["tags"]["machine"]: s["values"][0][1] for s in raw[0]["series"]} == {
        "m1": 12, "m2": 12
    }  # the recent two minutes only
    kept = influx.query('SELECT COUNT("mean_power_w") FROM "pilotline"."two_years"."telemetry_1m"')
    assert kept[0]["series"][0]["values"][0][1] == 8  # the means of old minutes stay
    states = influx.query('SELECT COUNT("state") FROM "machine_state"')
    assert states[0]["series"][0]["values"][0][1] == 1  # other measurements are untouched
