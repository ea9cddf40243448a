"""The core's one exception: a rule set it cannot run. Bad input is an event, not an error."""

from __future__ import annotations


class RulesConfigError(ValueError):
    def __init__(self, machine: str, problem: str) -> None:
        super().__init__(f"machine {machine!r}: {problem}")
        self.machine = machine
        self.problem = problem
