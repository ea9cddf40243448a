"""The notification policy core: routing, grouping, repeats, acknowledgements, silences."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pilotline.rules.alerts import AlertTransition
from pilotline.rules.dispatch import Dispatcher, Notification, Route, Silence
from pilotline.rules.errors import RulesConfigError

T0 = 1_700_000_000_000
S = 1_000
MIN = 60 * S
H = 60 * MIN
WAIT = 10 * S  # the defaults: group_wait 10 s, group_interval 1 min, repeat_interval 4 h


def alert(
    machine: str,
    firing: bool,
    at: int,
    *,
    rule: str = "down",
    zone: str = "z1",
    severity: str = "critical",
    owner: str = "acme",
) -> AlertTransition:
    return AlertTransition(
        rule, machine, zone, owner, severity, firing, 1.0, f"{machine} {rule}", at, T0
    )


def summary(notes: Sequence[Notification]) -> list[tuple[str, str, int, list[str]]]:
    """(channel, kind, time since T0, machines) of each notification."""
    return [(n.channel, n.kind, n.ts_ms - T0, [a.machine for a in n.alerts]) for n in notes]


def test_a_zone_going_down_together_is_one_notification_per_channel() -> None:
    d = Dispatcher([Route("ops"), Route("pager", "critical")])
    machines = [f"m{i}" for i in range(50)]
    d.receive(alert(m, True, T0 + i * 20) for i, m in enumerate(machines))
    d.handle_timer(T0 + WAIT - 1)
    assert d.notifications() == []
    assert d.next_deadline() == T0 + WAIT
    d.handle_timer(T0 + WAIT)
    notes = d.notifications()
    assert summary(notes) == [
        ("ops", "firing", WAIT, machines),
        ("pager", "firing", WAIT, machines),
    ]
    assert notes[0].group == (("rule", "down"), ("zone", "z1"))

    # They all come back at once: one resolution per channel, at the group's next tick.
    d.receive(alert(m, False, T0 + 5 * MIN) for m in machines)
    d.handle_timer(T0 + 5 * MIN + WAIT - 1)
    assert d.notifications() == []
    d.handle_timer(T0 + 6 * MIN)
    assert summary(d.notifications()) == [
        ("ops", "resolved", WAIT + 5 * MIN, machines),
        ("pager", "resolved", WAIT + 5 * MIN, machines),
    ]
    assert d.checkpoint()["alerts"] == []
    assert d.next_deadline() == T0 + WAIT + 6 * MIN  # the empty group lasts one more interval
    d.handle_timer(T0 + WAIT + 6 * MIN)
    assert d.next_deadline() is None
    assert d.checkpoint()["groups"] == []


def test_later_changes_wait_for_the_group_interval() -> None:
    d = Dispatcher([Route("ops")])
    d.receive([alert("m1", True, T0)])
    d.handle_timer(T0 + WAIT)
    d.receive([alert("m2", True, T0 + WAIT + 1)])
    d.receive([alert("m3", True, T0 + WAIT + 30 * S)])
    d.handle_timer(T0 + WAIT + MIN - 1)
    assert summary(d.notifications()) == [("ops", "firing", WAIT, ["m1"])]
    d.handle_timer(T0 + WAIT + MIN)
    assert summary(d.notifications()) == [("ops", "firing", WAIT + MIN, ["m2", "m3"])]
    # a change exactly on a tick that has just flushed goes to the next tick
    d.receive([alert("m4", True, T0 + WAIT + MIN)])
    d.handle_timer(T0 + WAIT + 2 * MIN)
    assert summary(d.notifications()) == [("ops", "firing", WAIT + 2 * MIN, ["m4"])]


def test_an_emptied_group_keeps_its_interval_before_it_is_dropped() -> None:
    d = Dispatcher([Route("ops")])
    d.add_silence(Silence("s1", {"machine": "m2"}, T0, T0 + H), T0)
    d.receive([alert("m1", True, T0), alert("m2", True, T0)])
    d.handle_timer(T0 + WAIT)
    d.receive([alert("m1", False, T0 + 20 * S)])
    d.handle_timer(T0 + WAIT + MIN)
    d.receive([alert("m2", False, T0 + 75 * S)])  # never sent: the group is empty now
    d.receive([alert("m3", True, T0 + 80 * S)])
    d.handle_timer(T0 + H)
    assert summary(d.notifications()) == [
        ("ops", "firing", WAIT, ["m1"]),
        ("ops", "resolved", WAIT + MIN, ["m1"]),
        ("ops", "firing", WAIT + 2 * MIN, ["m3"]),  # not 10 s after m3: one interval apart
    ]


def test_a_notification_carries_firing_alerts_first() -> None:
    d = Dispatcher([Route("ops")])
    d.receive([alert("m1", True, T0), alert("m2", True, T0)])
    d.handle_timer(T0 + WAIT)
    d.notifications()
    d.receive([alert("m1", False, T0 + MIN), alert("m3", True, T0 + MIN)])
    d.handle_timer(T0 + WAIT + MIN)
    [note] = d.notifications()
    assert note.kind == "firing"
    assert [(a.machine, a.firing) for a in note.alerts] == [("m3", True), ("m1", False)]


def test_groups_follow_group_by() -> None:
    d = Dispatcher([Route("ops")], group_by=("zone",))
    d.receive(
        [
            alert("m1", True, T0, rule="down"),
            alert("m2", True, T0, rule="stale"),
            alert("m3", True, T0, rule="down", zone="z2"),
        ]
    )
    d.handle_timer(T0 + WAIT)
    notes = d.notifications()
    assert [(n.group, [a.machine for a in n.alerts]) for n in notes] == [
        ((("zone", "z1"),), ["m1", "m2"]),
        ((("zone", "z2"),), ["m3"]),
    ]


def test_a_flap_within_group_wait_sends_nothing() -> None:
    d = Dispatcher([Route("ops")])
    d.receive([alert("m1", True, T0), alert("m1", False, T0 + 3 * S)])
    d.handle_timer(T0 + 10 * H)
    assert d.notifications() == []
    assert d.next_deadline() is None
    assert d.alert_state("down", "m1") is None


def test_the_same_condition_never_notifies_twice() -> None:
    d = Dispatcher([Route("ops")])
    d.receive([alert("m1", True, T0), alert("m1", True, T0 + 1)])  # a duplicate firing
    d.handle_timer(T0 + WAIT)
    assert summary(d.notifications()) == [("ops", "firing", WAIT, ["m1"])]
    # resolved and firing again between two ticks: the recipients' picture is unchanged
    d.receive([alert("m1", False, T0 + 20 * S), alert("m1", True, T0 + 30 * S)])
    d.handle_timer(T0 + H)
    assert d.notifications() == []
    d.receive([alert("m1", False, T0 + H + 1)])
    d.handle_timer(T0 + 2 * H)
    assert summary(d.notifications()) == [("ops", "resolved", WAIT + H, ["m1"])]


def test_repeat_after_repeat_interval_and_not_before() -> None:
    d = Dispatcher([Route("ops")])
    d.receive([alert("m1", True, T0)])
    d.handle_timer(T0 + WAIT)
    d.notifications()
    assert d.next_deadline() == T0 + WAIT + 4 * H
    d.handle_timer(T0 + WAIT + 4 * H - 1)
    assert d.notifications() == []
    d.handle_timer(T0 + WAIT + 8 * H)
    assert summary(d.notifications()) == [
        ("ops", "repeat", WAIT + 4 * H, ["m1"]),
        ("ops", "repeat", WAIT + 8 * H, ["m1"]),
    ]


def test_each_alert_repeats_on_its_own_clock() -> None:
    d = Dispatcher([Route("ops")], repeat_interval_ms=H)
    d.receive([alert("m1", True, T0)])
    d.handle_timer(T0 + WAIT)
    d.receive([alert("m2", True, T0 + 30 * MIN)])
    d.handle_timer(T0 + WAIT + 2 * H)
    assert summary(d.notifications()) == [
        ("ops", "firing", WAIT, ["m1"]),
        ("ops", "firing", WAIT + 30 * MIN, ["m2"]),
        ("ops", "repeat", WAIT + H, ["m1"]),
        ("ops", "repeat", WAIT + 90 * MIN, ["m2"]),
        ("ops", "repeat", WAIT + 2 * H, ["m1"]),
    ]


def test_a_repeat_interval_off_the_grid_rounds_up_to_the_next_tick() -> None:
    d = Dispatcher([Route("ops")], repeat_interval_ms=90 * S)
    d.receive([alert("m1", True, T0)])
    d.handle_timer(T0 + WAIT)
    d.handle_timer(T0 + WAIT + 2 * MIN)
    assert summary(d.notifications()) == [
        ("ops", "firing", WAIT, ["m1"]),
        ("ops", "repeat", WAIT + 2 * MIN, ["m1"]),
    ]


def test_an_acknowledgement_stops_repeats_until_the_alert_resolves() -> None:
    d = Dispatcher([Route("ops")])
    assert not d.acknowledge("down", "m1", "ana", T0)  # not firing
    d.receive([alert("m1", True, T0), alert("m2", True, T0)])
    d.handle_timer(T0 + WAIT)
    d.notifications()
    assert d.acknowledge("down", "m1", "ana", T0 + H)
    state = d.alert_state("down", "m1")
    assert state is not None
    assert (state.acked_by, state.acked_ms, state.silenced_by) == ("ana", T0 + H, None)
    d.handle_timer(T0 + WAIT + 8 * H)
    assert summary(d.notifications()) == [
        ("ops", "repeat", WAIT + 4 * H, ["m2"]),
        ("ops", "repeat", WAIT + 8 * H, ["m2"]),
    ]
    assert d.acknowledge("down", "m2", "ana", T0 + 9 * H)
    d.handle_timer(T0 + 20 * H)
    assert d.notifications() == []

    # The resolution still goes out; the next episode is a new alert, without the ack.
    d.receive([alert("m1", False, T0 + 20 * H)])
    d.receive([alert("m1", True, T0 + 21 * H)])
    d.handle_timer(T0 + 21 * H + 2 * MIN)
    assert summary(d.notifications()) == [
        ("ops", "resolved", WAIT + 20 * H, ["m1"]),
        ("ops", "firing", WAIT + 21 * H, ["m1"]),
    ]
    state = d.alert_state("down", "m1")
    assert state is not None
    assert state.firing
    assert state.acked_by is None
    d.handle_timer(T0 + 26 * H)
    assert summary(d.notifications()) == [("ops", "repeat", WAIT + 25 * H, ["m1"])]


def test_an_acknowledgement_ends_with_its_episode_even_between_two_ticks() -> None:
    d = Dispatcher([Route("ops")], repeat_interval_ms=H)
    d.receive([alert("m1", True, T0)])
    d.handle_timer(T0 + WAIT)
    assert d.acknowledge("down", "m1", "ana", T0 + MIN)
    d.receive([alert("m1", False, T0 + 2 * MIN), alert("m1", True, T0 + 2 * MIN + S)])
    state = d.alert_state("down", "m1")
    assert state is not None
    assert state.acked_by is None
    d.handle_timer(T0 + 2 * H + WAIT)
    assert summary(d.notifications()) == [
        ("ops", "firing", WAIT, ["m1"]),
        ("ops", "repeat", WAIT + H, ["m1"]),
        ("ops", "repeat", WAIT + 2 * H, ["m1"]),
    ]


def test_a_new_episode_after_a_resolution_notifies_again() -> None:
    d = Dispatcher([Route("ops")])
    d.receive([alert("m1", True, T0)])
    d.handle_timer(T0 + WAIT)
    d.receive([alert("m1", False, T0 + MIN)])
    d.handle_timer(T0 + 5 * MIN)  # resolved; the group is gone
    d.receive([alert("m1", True, T0 + 10 * MIN)])
    d.handle_timer(T0 + 10 * MIN + WAIT)  # a new group: group_wait again
    assert summary(d.notifications()) == [
        ("ops", "firing", WAIT, ["m1"]),
        ("ops", "resolved", WAIT + MIN, ["m1"]),
        ("ops", "firing", 10 * MIN + WAIT, ["m1"]),
    ]


def test_a_silence_mutes_and_its_end_notifies_what_is_still_firing() -> None:
    d = Dispatcher([Route("ops")])
    d.add_silence(Silence("s1", {"zone": "z1"}, T0, T0 + H, "ana", "maintenance"), T0)
    d.receive([alert("m1", True, T0), alert("m3", True, T0, zone="z2"), alert("m2", True, T0 + S)])
    d.handle_timer(T0 + H - 1)
    assert summary(d.notifications()) == [("ops", "firing", WAIT, ["m3"])]
    state = d.alert_state("down", "m1")
    assert state is not None
    assert state.silenced_by == "s1"
    assert [s.id for s in d.silences(T0 + H - 1)] == ["s1"]
    d.receive([alert("m2", False, T0 + 30 * MIN)])  # never sent: never resolved either
    d.handle_timer(T0 + 2 * H)
    assert summary(d.notifications()) == [("ops", "firing", WAIT + H, ["m1"])]
    assert d.silences(T0 + H) == []
    state = d.alert_state("down", "m1")
    assert state is not None
    assert state.silenced_by is None


def test_an_expired_silence_notifies_at_the_next_tick() -> None:
    d = Dispatcher([Route("ops")])
    d.add_silence(Silence("s1", {"machine": "m1", "rule": "down"}, T0, T0 + 10 * H), T0)
    d.receive([alert("m1", True, T0)])
    d.handle_timer(T0 + 20 * MIN)
    assert d.notifications() == []
    assert d.expire_silence("s1", T0 + 20 * MIN + 5 * S)
    assert not d.expire_silence("s1", T0 + 20 * MIN + 6 * S)
    assert d.next_deadline() == T0 + WAIT + 20 * MIN
    d.handle_timer(T0 + H)
    assert summary(d.notifications()) == [("ops", "firing", WAIT + 20 * MIN, ["m1"])]


def test_a_silence_mutes_repeats_but_not_the_resolution_of_a_sent_alert() -> None:
    d = Dispatcher([Route("ops")], repeat_interval_ms=H)
    d.receive([alert("m1", True, T0)])
    d.handle_timer(T0 + WAIT)
    d.add_silence(Silence("s1", {"rule": "down"}, T0 + 30 * MIN, T0 + 3 * H), T0 + MIN)
    d.handle_timer(T0 + 3 * H - 1)
    assert summary(d.notifications()) == [("ops", "firing", WAIT, ["m1"])]
    # The silence ends with the repeat overdue: it resumes at the next tick.
    d.handle_timer(T0 + 3 * H + MIN)
    assert summary(d.notifications()) == [("ops", "repeat", WAIT + 3 * H, ["m1"])]
    d.add_silence(Silence("s2", {"severity": "critical"}, T0 + 4 * H, T0 + 9 * H), T0 + 4 * H)
    d.receive([alert("m1", False, T0 + 5 * H)])
    d.handle_timer(T0 + 6 * H)
    assert summary(d.notifications()) == [("ops", "resolved", WAIT + 5 * H, ["m1"])]


def test_a_future_silence_is_listed_and_mutes_from_its_start() -> None:
    d = Dispatcher([Route("ops")])
    d.add_silence(Silence("later", {"zone": "z1"}, T0 + H, T0 + 2 * H), T0)
    assert [s.id for s in d.silences(T0)] == ["later"]
    d.receive([alert("m1", True, T0 + H)])
    d.handle_timer(T0 + 90 * MIN)
    assert d.notifications() == []
    assert d.expire_silence("later", T0 + 90 * MIN)
    d.handle_timer(T0 + 92 * MIN)
    assert summary(d.notifications()) == [("ops", "firing", 90 * MIN + WAIT, ["m1"])]


def test_routing_by_severity_and_zone() -> None:
    d = Dispatcher(
        [Route("pager", "critical"), Route("z2-team", zones=frozenset({"z2"})), Route("all")]
    )
    d.receive(
        [
            alert("a", True, T0, severity="warning", zone="z1"),
            alert("b", True, T0, severity="critical", zone="z2"),
            alert("c", True, T0, severity="info", zone="z2"),
        ]
    )
    d.handle_timer(T0 + WAIT)
    got = {(n.channel, a.machine) for n in d.notifications() for a in n.alerts}
    assert got == {
        ("all", "a"),
        ("pager", "b"),
        ("z2-team", "b"),
        ("all", "b"),
        ("z2-team", "c"),
        ("all", "c"),
    }


def test_view_lists_firing_alerts() -> None:
    d = Dispatcher([Route("ops")])
    d.receive([alert("m1", True, T0), alert("m2", True, T0), alert("m2", False, T0 + S)])
    assert [(v.machine, v.firing) for v in d.view()] == [("m1", True)]
    assert d.matching_silence({"zone": "z1"}, T0) is None


@pytest.mark.parametrize(
    ("silence", "problem"),
    [
        (Silence("", {"zone": "z1"}, 0, 1), "needs an id"),
        (Silence("s", {}, 0, 1), "at least one matcher"),
        (Silence("s", {"host": "x"}, 0, 1), "unknown label 'host'"),
        (Silence("s", {"zone": "z1"}, 5, 5), "end after it starts"),
    ],
)
def test_bad_silences_are_refused(silence: Silence, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Dispatcher([Route("ops")]).add_silence(silence)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"routes": [Route("a"), Route("a")]}, "routed twice"),
        ({"routes": [Route("a", "page")]}, "min_severity"),
        ({"group_by": ("zone", "zone")}, "group_by"),
        ({"group_by": ("site",)}, "group_by"),
        ({"group_wait_ms": -1}, "group_wait"),
        ({"group_interval_ms": 0}, "group_interval must be positive"),
        ({"repeat_interval_ms": 30 * S}, "repeat_interval"),
    ],
)
def test_bad_configurations_raise(kwargs: dict[str, object], problem: str) -> None:
    routes = kwargs.pop("routes", [Route("ops")])
    with pytest.raises(RulesConfigError, match=problem):
        Dispatcher(routes, **kwargs)  # type: ignore[arg-type]


# -- properties ------------------------------------------------------------------------------

ROUTES = [Route("all"), Route("pager", "critical"), Route("z2", zones=frozenset({"z2"}))]
GROUP_INTERVAL = 30 * S


def dispatcher(wait: int = 10 * S) -> Dispatcher:
    return Dispatcher(
        ROUTES, group_wait_ms=wait, group_interval_ms=GROUP_INTERVAL, repeat_interval_ms=2 * MIN
    )


RULES = {"down": "critical", "stale": "warning"}
MACHINES = {"m1": "z1", "m2": "z1", "m3": "z2"}
MATCHERS: list[dict[str, str]] = [
    {"zone": "z1"},
    {"rule": "down"},
    {"machine": "m3", "rule": "stale"},
    {"severity": "warning"},
]

Op = tuple[int, str, int, int, bool]  # (gap s, kind, a, b, flag)

op_strategy: st.SearchStrategy[Op] = st.tuples(
    st.sampled_from([0, 0, 1, 5, 20, 45, 90, 200]),
    st.sampled_from(["t", "t", "t", "t", "ack", "silence", "expire"]),
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=0, max_value=5),
    st.booleans(),
)
ops_strategy = st.lists(op_strategy, min_size=1, max_size=60)


def _apply(d: Dispatcher, op: Op, t: int, batch: list[AlertTransition]) -> None:
    """One op at time ``t``; transitions go into ``batch`` (the caller chooses the chunks)."""
    _, kind, a, b, flag = op
    rule = sorted(RULES)[a % len(RULES)]
    machine = sorted(MACHINES)[b % len(MACHINES)]
    if kind == "t":
        batch.append(
            AlertTransition(
                rule, machine, MACHINES[machine], "acme", RULES[rule], flag, float(a), "", t, t
            )
        )
        return
    if batch:
        d.receive(batch)
        batch.clear()
    if kind == "ack":
        d.acknowledge(rule, machine, "op", t)
    elif kind == "silence":
        start = t + (0 if flag else b * 20 * S)
        d.add_silence(
            Silence(f"s{b % 3}", MATCHERS[a % len(MATCHERS)], start, start + a * MIN + S), t
        )
    else:
        d.expire_silence(f"s{b % 3}", t)


def _times(ops: Sequence[Op]) -> list[int]:
    t, out = T0, []
    for op in ops:
        t += op[0] * S
        out.append(t)
    return out


def _run(
    ops: Sequence[Op], mode: str, tick_ms: int = 0, wait: int = 10 * S
) -> tuple[list[Notification], object]:
    """``whole``: no timer calls, transitions in as few receive calls as possible; ``ticks``:
    a timer every ``tick_ms``, one receive per transition; ``live``: a timer at each
    deadline, as the gateway does."""
    d = dispatcher(wait)
    times = _times(ops)
    batch: list[AlertTransition] = []
    now = T0
    for op, t in zip(ops, times, strict=True):
        if mode == "ticks":
            while now + tick_ms <= t:
                now += tick_ms
                d.handle_timer(now)
        elif mode == "live":
            while (due := d.next_deadline()) is not None and due <= t:
                assert d.now_ms is None or due >= d.now_ms  # never a deadline in the past
                d.handle_timer(due)
        _apply(d, op, t, batch)
        if mode != "whole" and batch:
            d.receive(batch)
            batch.clear()
    d.receive(batch)
    d.handle_timer(times[-1] + H)
    return d.notifications(), d.checkpoint()


@settings(max_examples=200, deadline=None)
@given(ops_strategy, st.sampled_from([1_000, 7_000, 30_000, 61_000]), st.sampled_from([0, 10 * S]))
def test_any_chunking_gives_the_same_notifications(ops: list[Op], tick_ms: int, wait: int) -> None:
    whole = _run(ops, "whole", wait=wait)
    assert _run(ops, "ticks", tick_ms, wait) == whole
    assert _run(ops, "live", wait=wait) == whole


@settings(max_examples=200, deadline=None)
@given(ops_strategy, st.integers(min_value=0, max_value=60), st.booleans())
def test_checkpoint_through_json_and_restore_continue_the_same(
    ops: list[Op], cut: int, drain: bool
) -> None:
    expected = _run(ops, "live")
    cut = min(cut, len(ops))
    times = _times(ops)
    d = dispatcher()
    batch: list[AlertTransition] = []
    got: list[Notification] = []
    for i, (op, t) in enumerate(zip(ops, times, strict=True)):
        if i == cut:
            if drain:
                got += d.notifications()
            text = json.dumps(d.checkpoint(), allow_nan=False)
            d = dispatcher()
            d.restore(json.loads(text))
        while (due := d.next_deadline()) is not None and due <= t:
            d.handle_timer(due)
        _apply(d, op, t, batch)
        d.receive(batch)
        batch.clear()
    d.handle_timer(times[-1] + H)
    got += d.notifications()
    assert (got, d.checkpoint()) == expected


@settings(max_examples=100, deadline=None)
@given(ops_strategy)
def test_notifications_tell_a_consistent_story(ops: list[Op]) -> None:
    notes, _ = _run(ops, "whole")
    sent: dict[tuple[str, str, str], bool] = {}  # (channel, rule, machine) -> last told firing
    last: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[int, str]] = {}
    for n in notes:
        assert n.alerts
        # one flush per group_interval (a flush may send its changes, then its repeats)
        previous = last.get((n.channel, n.group))
        assert (
            previous is None
            or n.ts_ms - previous[0] >= GROUP_INTERVAL
            or (n.ts_ms == previous[0] and previous[1] != "repeat" and n.kind == "repeat")
        )
        last[(n.channel, n.group)] = (n.ts_ms, n.kind)
        for a in n.alerts:
            key = (n.channel, a.rule, a.machine)
            if n.kind == "repeat":
                assert sent.get(key) is True
            elif a.firing:
                assert not sent.get(key)  # never twice
            else:
                assert sent.get(key) is True  # a resolution only for a sent firing
            sent[key] = a.firing
        assert (n.kind == "firing") == any(a.firing for a in n.alerts if n.kind != "repeat")


def test_restore_under_a_new_configuration_regroups() -> None:
    d = Dispatcher([Route("ops"), Route("old")])
    d.receive([alert("m1", True, T0)])
    d.handle_timer(T0 + WAIT)
    d.notifications()
    state = json.loads(json.dumps(d.checkpoint()))

    same = Dispatcher([Route("ops"), Route("old")])
    same.restore(state)
    same.handle_timer(T0 + H)
    assert same.notifications() == []

    changed = Dispatcher([Route("ops"), Route("new")])
    changed.restore(state)
    assert changed.next_deadline() == T0 + WAIT + WAIT  # the new channel's group_wait
    changed.handle_timer(T0 + H)
    assert summary(changed.notifications()) == [("new", "firing", 2 * WAIT, ["m1"])]

    regrouped = Dispatcher([Route("ops")], group_by=("zone",))
    regrouped.restore(state)
    regrouped.handle_timer(T0 + H)
    [note] = regrouped.notifications()
    assert (note.group, note.kind) == ((("zone", "z1"),), "firing")


def test_restore_refuses_garbage_and_a_running_dispatcher() -> None:
    with pytest.raises(ValueError, match="not a dispatcher checkpoint"):
        Dispatcher([Route("ops")]).restore({"version": 1})
    with pytest.raises(ValueError, match="version"):
        Dispatcher([Route("ops")]).restore({"version": 99})
    d = Dispatcher([Route("ops")])
    d.handle_timer(T0)
    with pytest.raises(ValueError, match="before its first input"):
        d.restore(Dispatcher([Route("ops")]).checkpoint())
