"""The simulated pilot line: deterministic, realistic enough, and in DESIGN.md's format."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml
from tests.fakes import T0

from pilotline.demo.plant import BLIP_MAX_MS, IDLE_BELOW_W, RUNNING_ABOVE_W, Plant, SimMachine
from pilotline.demo.site import demo_site_yaml
from pilotline.rules.states import DEFAULT_STATE_MAP

SECOND = 1_000


def run(plant: Plant, seconds: int, step_s: int = 1) -> dict[str, list[str]]:
    """True state of every machine at each step, starting at T0."""
    states: dict[str, list[str]] = defaultdict(list)
    for s in range(0, seconds, step_s):
        plant.payloads(T0 + s * SECOND)
        for m in plant.machines:
            states[m.id].append(plant.true_state(m.id))
    return states


def runs(seq: list[str], state: str) -> list[int]:
    """Lengths of the maximal stretches of ``state`` in ``seq``."""
    out, n = [], 0
    for s in [*seq, ""]:
        if s == state:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out


def test_standard_line_shape() -> None:
    plant = Plant()
    machines = plant.machines
    assert 8 <= len(machines) <= 10
    assert {m.zone for m in machines} == {"photonics", "imaging"}
    assert 2 <= len({m.owner for m in machines}) <= 3
    caps = {c for m in machines for c in m.capabilities}
    assert caps >= {"laser-cutting", "laser-marking", "coating", "optical-inspection", "bonding"}
    kinds = Counter(m.kind for m in machines)
    assert kinds["enum"] == kinds["power"]
    vocabs = Counter(m.state_vocabulary for m in machines)
    assert vocabs["packml"] == 1
    assert vocabs["mtconnect"] == 1
    assert vocabs["opc40001"] >= 1
    assert len({m.id for m in machines}) == len(machines)
    for m in machines:
        assert m.topic == f"pilot/{m.zone}/{m.id}/telemetry"
    assert sum(m.maintenance for m in machines) == 1


def test_topic_prefix() -> None:
    plant = Plant(topic_prefix="site-a/line")
    assert all(m.topic.startswith("site-a/line/") for m in plant.machines)
    topics = {t for t, _ in plant.payloads(T0)}
    assert topics <= {m.topic for m in plant.machines}


def test_same_seed_same_payloads() -> None:
    a, b = Plant(seed=11), Plant(seed=11)
    for s in range(0, 3600, 7):
        assert a.payloads(T0 + s * SECOND) == b.payloads(T0 + s * SECOND)


def test_different_seed_different_payloads() -> None:
    a, b = Plant(seed=1), Plant(seed=2)
    assert [a.payloads(T0 + s * SECOND) for s in range(60)] != [
        b.payloads(T0 + s * SECOND) for s in range(60)
    ]


def test_payloads_do_not_depend_on_sampling_rate() -> None:
    """A schedule is a function of the seed, not of how often the plant is asked."""
    fine, coarse = Plant(seed=3), Plant(seed=3)
    for s in range(7200):
        fine.payloads(T0 + s * SECOND)
        if s % 600 == 0:
            assert coarse.payloads(T0 + s * SECOND) == fine.payloads(T0 + s * SECOND)
            for m in fine.machines:
                assert coarse.true_state(m.id) == fine.true_state(m.id)


def test_every_machine_runs_and_idles_within_30_minutes() -> None:
    states = run(Plant(), 30 * 60)
    for machine, seq in states.items():
        assert {"running", "idle"} <= set(seq), machine


def test_some_idle_gaps_exceed_min_idle() -> None:
    states = run(Plant(), 30 * 60)
    gaps = [n for seq in states.values() for n in runs(seq, "idle")]
    assert sum(n > 60 for n in gaps) >= 5
    assert max(gaps) > 4 * 60


@pytest.mark.parametrize("seed", [7, 2])
def test_fault_and_maintenance_within_two_hours(seed: int) -> None:
    plant = Plant(seed=seed)
    states = run(plant, 2 * 3600)
    seen = Counter(s for seq in states.values() for s in seq)
    assert seen["down"] > 0
    assert seen["maintenance"] > 0
    for seq in states.values():
        for n in runs(seq, "down"):
            assert 30 <= n <= 120  # about a minute
    (maint,) = [m for m in plant.machines if m.maintenance]
    assert runs(states[maint.id], "maintenance") == [20 * 60]
    assert "down" not in states[maint.id]  # its OutOfService is mapped to maintenance


def test_time_scale_shortens_the_schedule() -> None:
    states = run(Plant(time_scale=0.1), 6 * 60)
    for machine, seq in states.items():
        assert {"running", "idle"} <= set(seq), machine
    jobs = [n for seq in states.values() for n in runs(seq, "running")]
    assert max(jobs) <= 60  # 4 min x 0.1 plus a pause


def test_payloads_are_design_json() -> None:
    plant = Plant()
    by_topic = {m.topic: m for m in plant.machines}
    for s in range(0, 2 * 3600, 5):
        now = T0 + s * SECOND
        for topic, payload in plant.payloads(now):
            m = by_topic[topic]
            doc = json.loads(payload)
            assert doc["ts"] == now
            for name, value in doc.items():
                if name == "state":
                    continue
                assert isinstance(value, int | float), (name, value)
                assert math.isfinite(value)
            assert set(doc) == {"ts", *m.signals, *(["state"] if m.kind == "enum" else [])}
            if m.kind == "enum":
                word = doc["state"]
                assert word in DEFAULT_STATE_MAP or word in dict(m.state_map)


def derived_state(m: SimMachine, doc: dict[str, object] | None, previous: str) -> str:
    """What a gateway without debounce would conclude from one payload."""
    if doc is None:
        return "offline"
    if m.kind == "enum":
        word = str(doc["state"])
        overrides = dict(m.state_map)
        return overrides[word] if word in overrides else DEFAULT_STATE_MAP[word].value
    power = doc["power_w"]
    assert isinstance(power, float)
    if power >= RUNNING_ABOVE_W:
        return "running"
    if power < IDLE_BELOW_W:
        return "idle"
    return previous


@pytest.mark.parametrize("seed", [7, 5])
def test_payloads_say_the_true_state_apart_from_short_blips(seed: int) -> None:
    """Mapped or thresholded, a payload shows the true state; blips stay under the debounce."""
    plant = Plant(seed=seed)
    by_topic = {m.topic: m for m in plant.machines}
    previous = dict.fromkeys(by_topic.values(), "offline")
    mismatch: dict[str, int] = defaultdict(int)
    blips: list[int] = []
    for s in range(2 * 3600):
        docs = {by_topic[t]: json.loads(p) for t, p in plant.payloads(T0 + s * SECOND)}
        for m in plant.machines:
            seen = derived_state(m, docs.get(m), previous[m])
            previous[m] = seen
            if seen != plant.true_state(m.id):
                mismatch[m.id] += 1
            elif mismatch[m.id]:
                blips.append(mismatch.pop(m.id))
    assert blips, "expected some noise blips"
    assert max(blips) * SECOND <= BLIP_MAX_MS
    assert BLIP_MAX_MS < 5 * SECOND  # the demo's debounce_s


def test_paused_job_counts_as_running() -> None:
    plant = Plant()
    (packml,) = [m for m in plant.machines if m.state_vocabulary == "packml"]
    held = 0
    for s in range(2 * 3600):
        for topic, payload in plant.payloads(T0 + s * SECOND):
            if topic == packml.topic and json.loads(payload)["state"] == "Held":
                held += 1
                assert plant.true_state(packml.id) == "running"
    assert held > 0


def test_power_machine_dropout_publishes_nothing() -> None:
    plant = Plant()
    offline = 0
    for s in range(2 * 3600):
        topics = {t for t, _ in plant.payloads(T0 + s * SECOND)}
        for m in plant.machines:
            if plant.true_state(m.id) == "offline":
                offline += 1
                assert m.kind == "power"
                assert m.topic not in topics
            else:
                assert m.topic in topics
    assert offline > 0
    quiet = Plant(dropouts=False)
    for s in range(0, 2 * 3600, 2):
        assert len(quiet.payloads(T0 + s * SECOND)) == len(quiet.machines)


def test_time_going_backwards_does_not_rewind_the_line() -> None:
    plant = Plant()
    plant.payloads(T0 + 600 * SECOND)
    before = {m.id: plant.true_state(m.id) for m in plant.machines}
    out = plant.payloads(T0 + 500 * SECOND)
    assert all(json.loads(p)["ts"] == T0 + 500 * SECOND for _, p in out)
    assert before == {m.id: plant.true_state(m.id) for m in plant.machines}


def test_true_state_before_any_payload_and_unknown_machine() -> None:
    plant = Plant()
    assert plant.true_state(plant.machines[0].id) == "offline"
    with pytest.raises(KeyError):
        plant.true_state("nope")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="time_scale"):
        Plant(time_scale=0)
    with pytest.raises(ValueError, match="machines"):
        Plant(machines=0)


def test_generated_line_of_500() -> None:
    plant = Plant(machines=500, dropouts=False)
    assert len(plant.machines) == 500
    assert len({m.id for m in plant.machines}) == 500
    assert {m.zone for m in plant.machines} == {"photonics", "imaging"}
    assert Counter(m.kind for m in plant.machines) == {"enum": 250, "power": 250}
    assert any(m.maintenance for m in plant.machines)
    seen: set[str] = set()
    for s in range(0, 1800, 30):
        out = plant.payloads(T0 + s * SECOND)
        assert len(out) == 500
        seen.update(plant.true_state(m.id) for m in plant.machines)
    assert {"running", "idle"} <= seen
    assert Plant(machines=500).payloads(T0) == Plant(machines=500).payloads(T0)


# -- site configuration ------------------------------------------------------------------


def site_doc(**kwargs: object) -> dict[str, object]:
    plant = Plant()
    text = demo_site_yaml(
        plant,
        mqtt_url="mqtt://127.0.0.1:1883",
        store=Path("/tmp/demo.db"),
        api="127.0.0.1:8080",
        **kwargs,  # type: ignore[arg-type]
    )
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def test_site_yaml_has_the_design_keys() -> None:
    doc = site_doc()
    assert doc["site"] == "demo-pilot"
    assert doc["mqtt"] == {"url": "mqtt://127.0.0.1:1883"}
    assert "influx" not in doc
    assert doc["store"] == "/tmp/demo.db"
    assert doc["api"] == "127.0.0.1:8080"
    assert doc["defaults"] == {
        "debounce_s": 5,
        "stale_after_s": 15,
        "min_idle_s": 60,
        "publish_interval_s": 10,
        "offering": "always",  # offering fails closed: the demo offers every machine, saying so
    }
    plant = Plant()
    zones = doc["zones"]
    assert isinstance(zones, list)
    assert [z["id"] for z in zones] == ["photonics", "imaging"]
    machines = {m["id"]: m for z in zones for m in z["machines"]}
    assert set(machines) == {m.id for m in plant.machines}
    for sim in plant.machines:
        m = machines[sim.id]
        assert m["owner"] == sim.owner
        assert m["capabilities"] == list(sim.capabilities)
        assert m["mqtt"] == {"topic": sim.topic}
        if sim.kind == "power":
            assert m["state"] == {"signal": "power_w", "running_above": 120, "idle_below": 60}
        elif sim.maintenance:
            assert m["state"] == {"signal": "state", "map": {"OutOfService": "maintenance"}}
        else:
            assert m["state"] == {"signal": "state"}


def test_site_yaml_options() -> None:
    doc = site_doc(site="other", debounce_s=2, min_idle_s=30, influx_url="http://127.0.0.1:8428")
    assert doc["site"] == "other"
    assert doc["influx"] == {"url": "http://127.0.0.1:8428", "org": "demo", "bucket": "pilotline"}
    defaults = doc["defaults"]
    assert isinstance(defaults, dict)
    assert defaults["debounce_s"] == 2
    assert defaults["min_idle_s"] == 30


def test_site_yaml_loads_with_the_gateway_config(tmp_path: Path) -> None:
    from pilotline.gateway.config import load_config

    for plant in (Plant(), Plant(machines=50)):
        path = tmp_path / "site.yaml"
        path.write_text(
            demo_site_yaml(
                plant,
                mqtt_url="mqtt://127.0.0.1:1883",
                store=tmp_path / "d.db",
                api="127.0.0.1:8080",
                influx_url="http://127.0.0.1:8428",
            )
        )
        config = load_config(path)
        machines = {m.id: m for z in config.zones for m in z.machines}
        assert set(machines) == {m.id for m in plant.machines}
        assert config.defaults.debounce_s * 1000 > BLIP_MAX_MS
