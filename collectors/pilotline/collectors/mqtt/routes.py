"""Which machine, format and signal a message's topic is: exact topics and templates.

An exact topic (no wildcard, no ``{signal}``) is one dict lookup on the topic's bytes, the
hot path as before. A topic under a template (``templates.py``) is found by trying the
templates once, then remembered by its bytes (a bounded cache: a publisher cannot grow it
without limit by inventing topics, it is only cleared and refilled).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pilotline.collectors.mqtt.formats import Format
from pilotline.collectors.mqtt.templates import TopicTemplate, parse_template

__all__ = ["Resolved", "Route", "Router"]

CACHE_MAX = 16_384

Resolved = tuple[str, str, Format | None, str | None, str]
"""(topic, machine, format (None: the default, ``parse.decode``), signal named by the topic
(None: the payload names its signals), the filter it came in on (``/health``'s key))."""


@dataclass(frozen=True, slots=True)
class Route:
    """A machine's topic template and the format of its payloads."""

    template: TopicTemplate
    machine: str
    format: Format | None = None

    @classmethod
    def of(cls, topic: str, machine: str, fmt: Format | None = None) -> Route:
        return cls(parse_template(topic), machine, None if fmt is None or fmt.default else fmt)

    @property
    def topic_filter(self) -> str:
        return self.template.topic_filter(self.machine)


class Router:
    """Topic -> ``Resolved``; ``filters`` are what the collector subscribes (filter ->
    machine)."""

    def __init__(self, topics: Mapping[str, str], routes: Sequence[Route] = ()) -> None:
        exact: dict[str, Resolved] = {t: (t, m, None, None, t) for t, m in topics.items()}
        self.filters: dict[str, str] = dict(topics)
        self._templated: list[Route] = []
        for route in routes:
            key = route.topic_filter
            self.filters[key] = route.machine
            if route.template.wildcard:
                self._templated.append(route)
            else:
                exact[key] = (key, route.machine, route.format, None, key)
        self._exact = {t.encode(): r for t, r in exact.items()}
        # Exact topics, then the templated ones met so far: the buffered reader hands topics
        # over as bytes, looked up without decoding.
        self.by_bytes: dict[bytes, Resolved] = dict(self._exact)

    def lookup(self, topic: str) -> Resolved | None:
        """The route of ``topic`` (remembered by its bytes), None if no machine's."""
        found = self.by_bytes.get(topic.encode())
        if found is not None or not self._templated:
            return found
        levels = topic.split("/")
        for route in self._templated:
            if route.template.matches(levels, route.machine):
                resolved: Resolved = (
                    topic,
                    route.machine,
                    route.format,
                    route.template.signal_of(levels),
                    route.topic_filter,
                )
                if len(self.by_bytes) >= len(self._exact) + CACHE_MAX:
                    self.by_bytes.clear()  # in place: the collector holds this dict
                    self.by_bytes.update(self._exact)
                self.by_bytes[topic.encode()] = resolved
                return resolved
        return None
