"""Topic templates: an MQTT topic filter whose levels may name the machine or the signal.

A template is a topic, a level of which may be ``+`` (any one level), the last ``#`` (any
rest), ``{machine}`` (the level is the machine's id) or, as the last level, ``{signal}`` (the
level names the one signal the message carries)::

    umh/v1/acme/+/{machine}/_historian
    plant/hall-1/{machine}/{signal}

The gateway subscribes each machine's own filter (``{machine}`` replaced by its id,
``{signal}`` by ``+``), so the broker never sends messages of machines it does not know
(nor of another shard's). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MACHINE", "SIGNAL", "TopicTemplate", "parse_template"]

MACHINE = "{machine}"
SIGNAL = "{signal}"
_MAX_TOPIC_BYTES = 65_535


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    text: str
    levels: tuple[str, ...]
    machine_level: int | None
    signal_level: int | None

    @property
    def wildcard(self) -> bool:
        """True if the template matches more than one topic."""
        return self.signal_level is not None or any(lv in ("+", "#") for lv in self.levels)

    def topic_filter(self, machine: str) -> str:
        """The filter ``machine`` is subscribed with."""
        return "/".join(
            machine if lv == MACHINE else "+" if lv == SIGNAL else lv for lv in self.levels
        )

    def matches(self, levels: list[str], machine: str) -> bool:
        """True if a topic (split at ``/``) is one of ``machine``'s under this template."""
        mine = self.levels
        if mine[-1] == "#":
            if len(levels) < len(mine) - 1:
                return False
        elif len(levels) != len(mine):
            return False
        for want, got in zip(mine, levels, strict=False):
            if want == "#":
                break
            if want in ("+", SIGNAL):
                continue
            if want == MACHINE:
                if got != machine:
                    return False
            elif want != got:
                return False
        return True

    def signal_of(self, levels: list[str]) -> str | None:
        """The signal a matching topic's ``{signal}`` level names, None without one."""
        return levels[self.signal_level] if self.signal_level is not None else None


def parse_template(text: str, *, needs_machine: bool = False) -> TopicTemplate:
    """``text`` as a template; ValueError says what is wrong with it."""
    if not text:
        raise ValueError("topic must not be empty")
    if "\x00" in text:
        raise ValueError("topic must not contain NUL characters")
    if len(text.encode("utf-8")) > _MAX_TOPIC_BYTES:
        raise ValueError(f"topic is longer than {_MAX_TOPIC_BYTES} bytes")
    levels = tuple(text.split("/"))
    machine_level: int | None = None
    signal_level: int | None = None
    for i, level in enumerate(levels):
        last = i == len(levels) - 1
        if level == MACHINE:
            if machine_level is not None:
                raise ValueError(f"{MACHINE} appears twice in {text!r}: it names one level")
            machine_level = i
        elif level == SIGNAL:
            if not last:
                raise ValueError(
                    f"{SIGNAL} must be the last level of {text!r}: the last level names the "
                    "signal of a one-value-per-topic message"
                )
            signal_level = i
        elif level == "#":
            if not last:
                raise ValueError(f"'#' must be the last level of {text!r}")
        elif "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole level, got {level!r} in {text!r}")
        elif "#" in level:
            raise ValueError(f"'#' must be a whole level, got {level!r} in {text!r}")
        elif "{" in level or "}" in level:
            raise ValueError(
                f"unknown placeholder {level!r} in {text!r}: only whole levels {MACHINE} and "
                f"{SIGNAL} (or + and # wildcards)"
            )
    if needs_machine and machine_level is None:
        raise ValueError(
            f"{text!r} has no {MACHINE} level: a site-wide topic pattern takes the machine "
            "from a level of the topic"
        )
    return TopicTemplate(text, levels, machine_level, signal_level)
