"""Alert message templates: ``str.format_map`` over a dict of plain values, checked when the
configuration loads; no attribute or index access, no ``eval``."""

from __future__ import annotations

import string
from collections.abc import Mapping

from pilotline.rules.labels import LABELS

TEMPLATE_FIELDS = frozenset({*LABELS, "value", "state", "status"})
"""The placeholders a message template may use: the alert's labels, its ``value``, the
machine's ``state`` (a collector's: ``connected``/``disconnected``) and ``status``."""


def validate_template(template: str) -> None:
    """Raise ``ValueError`` for a template that would not render with ``TEMPLATE_FIELDS``."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"message template: {e}") from e
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            allowed = ", ".join(sorted(TEMPLATE_FIELDS))
            raise ValueError(
                f"message template: unknown placeholder {{{name}}} (allowed: {allowed})"
            )
        if conversion is not None and conversion not in "rsa":
            raise ValueError(f"message template: bad conversion !{conversion}")
        if spec and ("{" in spec):
            raise ValueError("message template: nested placeholders are not allowed")
    try:
        template.format_map(_SafeDict(_SAMPLE_VALUES))
    except (ValueError, TypeError) as e:
        raise ValueError(f"message template: {e}") from e


class _SafeDict(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


_SAMPLE_VALUES: Mapping[str, object] = {
    "rule": "r",
    "machine": "m",
    "zone": "z",
    "owner": "o",
    "severity": "warning",
    "value": 1.5,
    "state": "down",
    "status": "firing",
}


def render(template: str, values: Mapping[str, object]) -> str:
    """``str.format_map`` over plain values; never raises for a validated template."""
    try:
        return template.format_map(_SafeDict(values))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return template
