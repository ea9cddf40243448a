"""Checks of MQTT topics across machines: the filter each machine is subscribed with, and
that a machine without a topic of its own has the site's ``mqtt.topics`` patterns to use.

On the file's plain data, which may be partly wrong (those parts are skipped), so that the
checks are reported with their lines (config/checks.py).
"""

from __future__ import annotations

from pilotline.collectors.mqtt.templates import parse_template
from pilotline.gateway.config.locate import Loc, format_loc

__all__ = ["machine_filter", "pattern_checks"]


def machine_filter(topic: object, machine: object) -> str | None:
    """The filter a machine with ``topic`` is subscribed with, None if either is unusable
    (the models report that)."""
    if not isinstance(topic, str) or not isinstance(machine, str):
        return None
    try:
        return parse_template(topic).topic_filter(machine)
    except ValueError:
        return None


def pattern_checks(
    data: dict[str, object],
    topicless: list[tuple[Loc, str]],
    topics: dict[str, tuple[Loc, str]],
    found: list[tuple[Loc, str]],
) -> None:
    """Machines of ``topicless`` (here, id) take the site's ``mqtt.topics``: there must be
    some, and the filters they expand to must not be another machine's topic (``topics``:
    filter -> (here, id) of the machines' own topics)."""
    mqtt = data.get("mqtt")
    patterns = mqtt.get("topics") if isinstance(mqtt, dict) else None
    patterns = patterns if isinstance(patterns, list) else []
    if topicless and not patterns:
        for here, _ in topicless:
            found.append(
                (
                    (*here, "mqtt"),
                    "no topic: give the machine mqtt.topic, or list patterns with a "
                    "{machine} level in the site's mqtt.topics",
                )
            )
        return
    seen: dict[str, int] = {}
    for pi, pattern in enumerate(patterns):
        text = pattern.get("topic") if isinstance(pattern, dict) else None
        if not isinstance(text, str):
            continue
        if text in seen:
            found.append(
                (("mqtt", "topics", pi, "topic"), f"{text!r} is also mqtt.topics[{seen[text]}]")
            )
            continue
        seen[text] = pi
        for here, machine in topicless:
            key = machine_filter(text, machine)
            if key is not None and key in topics:
                other, other_id = topics[key]
                found.append(
                    (
                        ("mqtt", "topics", pi, "topic"),
                        f"for machine {machine} ({format_loc(here)}) it is {key!r}, the topic "
                        f"of {other_id} ({format_loc(other)}): one topic per machine",
                    )
                )
