"""What a signal may be called: one rule for the configuration and the MQTT payload decoder.

A signal's name becomes a field key of the ``telemetry`` measurement (InfluxDB line
protocol). Line protocol escapes commas, equals signs and spaces in a key, but a key ending
in a backslash would escape the ``=`` after it and has no escape at all, and a control
character has no way through (a newline would end the line). Such a name is refused where
it comes in (the site file, a payload) instead of failing where the line is written. The
length is bounded too: each name is repeated in every line of its machine.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_SIGNAL_CHARS", "signal_name_problem"]

MAX_SIGNAL_CHARS: Final = 128
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def signal_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a signal's name, or None if it can."""
    if not name:
        return "a signal name must not be empty"
    if len(name) > MAX_SIGNAL_CHARS:
        return f"a signal name is at most {MAX_SIGNAL_CHARS} characters (got {len(name)})"
    if name.endswith("\\"):
        return "a signal name must not end with a backslash (line protocol cannot write it)"
    if _CONTROL.search(name):
        return "a signal name must not contain control characters"
    return None
