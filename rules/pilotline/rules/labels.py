"""The alert vocabulary that the core, the configuration, the API and the channels share.

An alert is known by its labels (``LABELS``): the rule, the machine's zone, the rule's
severity, the machine (a collector's name for a collector rule) and the machine's owner. The
dispatcher groups and silences by them, message templates name them, and the gateway's
configuration and API accept them. Each vocabulary is a ``Literal`` type (for pydantic
models and mypy) with its values as a tuple beside it, written once here.
"""

from __future__ import annotations

from typing import Final, Literal, Protocol, get_args

Severity = Literal["info", "warning", "critical"]
SEVERITIES: Final[tuple[Severity, ...]] = get_args(Severity)
"""The severities, least first: a channel's ``min_severity`` wants that one and those after."""

Label = Literal["rule", "zone", "severity", "machine", "owner"]
LABELS: Final[tuple[Label, ...]] = get_args(Label)
"""The labels an alert can be grouped and silenced by."""


def at_least(severity: str, minimum: str) -> bool:
    """Whether ``severity`` is ``minimum`` or above it (info < warning < critical). An
    unknown ``severity`` never is; ``minimum`` must be one of ``SEVERITIES``."""
    if severity not in SEVERITIES:
        return False
    return SEVERITIES.index(severity) >= SEVERITIES.index(minimum)


class Labelled(Protocol):
    """What carries an alert's labels: a transition, or the alert core's view of it."""

    @property
    def rule(self) -> str: ...
    @property
    def zone(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def machine(self) -> str: ...
    @property
    def owner(self) -> str: ...


def labels_of(t: Labelled) -> dict[str, str]:
    """An alert's labels (``LABELS``) from one of its transitions or its view."""
    return {
        "rule": t.rule,
        "zone": t.zone,
        "severity": t.severity,
        "machine": t.machine,
        "owner": t.owner,
    }
