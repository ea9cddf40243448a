"""Silences: what they mute, and the dispatcher's book of those still to end.

Each silence in the book has a sequence number, in the order it was added; the dispatcher's
deadline heap refers to a silence by it, so a replaced or expired silence's old deadline is
recognised as stale (the heap's lazy deletion).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pilotline.rules.labels import LABELS


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes every alert whose labels equal all of ``matchers`` while
    ``starts_ms <= now < ends_ms``."""

    id: str
    matchers: Mapping[str, str]
    starts_ms: int
    ends_ms: int
    created_by: str = ""
    comment: str = ""

    def active(self, at_ms: int) -> bool:
        return self.starts_ms <= at_ms < self.ends_ms

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.matchers.items())


def check_silence(silence: Silence) -> None:
    """Raise ``ValueError`` for a silence that can never match or never be active."""
    where = f"silence {silence.id!r}"
    if not silence.id:
        raise ValueError("a silence needs an id")
    if not silence.matchers:
        raise ValueError(f"{where}: give at least one matcher")
    unknown = sorted(set(silence.matchers) - set(LABELS))
    if unknown:
        raise ValueError(f"{where}: unknown label {unknown[0]!r} (labels: {', '.join(LABELS)})")
    if silence.ends_ms <= silence.starts_ms:
        raise ValueError(f"{where}: it must end after it starts")


class SilenceBook:
    """The silences not yet ended, by id and by sequence number, in the order added."""

    __slots__ = ("_by_id", "_ids", "next_seq")

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[int, Silence]] = {}  # id -> (seq, silence)
        self._ids: dict[int, str] = {}  # seq -> id
        self.next_seq = 0

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def __iter__(self) -> Iterator[tuple[int, Silence]]:
        """(seq, silence) pairs, in the order they were added."""
        return iter(self._by_id.values())

    def add(self, silence: Silence) -> int:
        """Keep ``silence`` (its id not in the book) under the next sequence number."""
        seq = self.next_seq
        self.next_seq += 1
        self.put(seq, silence)
        return seq

    def put(self, seq: int, silence: Silence) -> None:
        """Keep ``silence`` under ``seq`` (a restored one)."""
        self._by_id[silence.id] = (seq, silence)
        self._ids[seq] = silence.id

    def pop(self, silence_id: str) -> Silence | None:
        entry = self._by_id.pop(silence_id, None)
        if entry is None:
            return None
        del self._ids[entry[0]]
        return entry[1]

    def pop_seq(self, seq: int) -> Silence:
        return self._by_id.pop(self._ids.pop(seq))[1]

    def ends_ms(self, seq: int) -> int | None:
        """When the silence of ``seq`` ends; None if it is no longer in the book."""
        silence_id = self._ids.get(seq)
        return None if silence_id is None else self._by_id[silence_id][1].ends_ms

    def upcoming(self, now_ms: int) -> list[Silence]:
        """The silences active at ``now_ms`` or still to come, in the order they were added."""
        return [s for _, s in self._by_id.values() if s.ends_ms > now_ms]

    def matching(self, labels: Mapping[str, str], at_ms: int) -> str | None:
        """The id of the first silence active at ``at_ms`` that matches ``labels``."""
        for _, s in self._by_id.values():
            if s.active(at_ms) and s.matches(labels):
                return s.id
        return None
