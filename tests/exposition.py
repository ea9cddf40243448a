"""Reading ``/metrics``: its samples, and the table of docs/metrics.md it must agree with."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"

Key = tuple[str, tuple[tuple[str, str], ...]]


def samples(text: str) -> dict[Key, float]:
    """(sample name, sorted labels) -> value of every sample in an exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    """Name -> (type, label names) of each row of docs/metrics.md's table of metrics."""
    rows = {}
    row = re.compile(r"^\| `([a-z_]+)` \| (counter|gauge|histogram) \|([^|]*)\|")
    for line in DOCS.read_text().splitlines():
        if match := row.match(line):
            name, kind, labels = match.groups()
            rows[name] = (kind, frozenset(re.findall(r"`([a-z_]+)`", labels)))
    return rows


def exposed(text: str) -> dict[str, tuple[str, frozenset[str] | None]]:
    """Name (a counter's with ``_total``, as queried) -> (type, label names) of each family
    of an exposition; label names None for a family without samples (nothing to see)."""
    families = {}
    for family in text_string_to_metric_families(text):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        names = {frozenset(s.labels) - {"le"} for s in family.samples}
        assert len(names) <= 1, f"{name}: samples with different labels {names}"
        families[name] = (family.type, next(iter(names)) if names else None)
    return families


def drift(text: str) -> list[str]:
    """How an exposition and docs/metrics.md disagree: families missing from the table or
    documented with another type or other labels, rows for families not exposed."""
    table = documented()
    found = exposed(text)
    problems = []
    for name, (kind, labels) in sorted(found.items()):
        if name not in table:
            problems.append(f"{name} ({kind}) is not in {DOCS.name}")
            continue
        doc_kind, doc_labels = table[name]
        if doc_kind != kind:
            problems.append(f"{name} is a {kind}, documented as a {doc_kind}")
        if labels is not None and labels != doc_labels:
            problems.append(f"{name} has labels {sorted(labels)}, documented {sorted(doc_labels)}")
    problems += [f"{name} is documented but not exposed" for name in sorted(table - found.keys())]
    return problems
