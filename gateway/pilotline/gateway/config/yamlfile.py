"""Reading a YAML file into plain data, and its node tree when lines are wanted.

``quick_data`` reads a file of plain YAML (no anchors, aliases, merge keys, explicit tags or
duplicate keys) straight from libyaml's events (``CSafeLoader``), scalars through PyYAML's own
resolver and ``SafeConstructor``, with no node tree, which is what makes a large file cheap
to read. Any other file is composed into a node tree (``compose``), by libyaml, and whatever
libyaml refuses by the pure loader, so messages and lines are the pure loader's. ``Tree``
composes the tree only when it is first asked for (to give an issue its line).

Nothing here knows what the file configures: mistakes of the file itself (unreadable, too
large, not UTF-8, not YAML) are ``ConfigError``s with the line where there is one.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Final

import yaml

from pilotline.gateway.config.errors import ConfigError, ConfigIssue

__all__ = ["MAX_FILE_BYTES", "Tree", "compose", "quick_data", "read_text"]

MAX_FILE_BYTES: Final = 4 * 1024 * 1024


def read_text(path: Path, source: str) -> str:
    """The file's text (UTF-8, a BOM dropped); ``ConfigError`` when it cannot be had."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [ConfigIssue("", None, f"cannot read the file: {reason}")], source
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(
            [ConfigIssue("", None, f"the file is larger than {MAX_FILE_BYTES} bytes")], source
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue("", line, "the file is not UTF-8 text")], source) from None


class Tree:
    """The YAML node tree, only to give issues their lines, composed when first asked for.

    A node tree keeps two marks for every key and value: with many machines, holding it
    while pydantic builds the models was most of the peak of a gateway's start (measured:
    benchmarks/README.md). A good file never needs it.
    """

    def __init__(self, text: str, source: str) -> None:
        self._text = text
        self._source = source

    @functools.cached_property
    def root(self) -> yaml.Node | None:
        return compose(self._text, self._source)[0]


_CSafeLoader: Final[Any] = getattr(yaml, "CSafeLoader", None)  # None without libyaml
_NON_PRINTABLE: Final = yaml.reader.Reader.NON_PRINTABLE


def compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for lines) and the data constructed from that same tree.

    libyaml (``CSafeLoader``) composes it much faster than the pure loader (measured:
    benchmarks/README.md), with the same marks. Whatever libyaml refuses is composed again
    by the pure loader, so mistakes are reported in its words, at its lines.
    """
    if _CSafeLoader is not None and not _NON_PRINTABLE.search(text):
        loader = _CSafeLoader(text)
        try:
            # Anything libyaml refuses: the pure loader below says what and where.
            with contextlib.suppress(Exception):
                root = loader.get_single_node()
                return root, loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, source) from None
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.reader.ReaderError as exc:  # met while reading further along the text
        raise _reader_error(exc, text, source) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise ConfigError([ConfigIssue("", line, f"YAML syntax: {problem}")], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("", None, f"YAML: {exc}")], source) from None
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        # PyYAML's constructors let a few of these through for bad explicit tags
        # (`!!timestamp 2024-13-40`); they are mistakes in the file all the same.
        raise ConfigError([ConfigIssue("", None, f"YAML value: {exc}")], source) from None
    except RecursionError:
        raise ConfigError([ConfigIssue("", None, "YAML nesting is too deep")], source) from None
    finally:
        loader.dispose()
    return root, data


class _NotPlainError(Exception):
    """The file leaves the plain subset ``quick_data`` reads: take the full path."""


_PLAIN_SCALAR_TAGS: Final = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "str", "timestamp")
)
_MAP_TAG: Final = "tag:yaml.org,2002:map"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"


def quick_data(text: str) -> dict[str, Any] | None:
    """The file's data read straight from libyaml's events, with no node tree; None when the
    file is not a mapping of plain YAML (anchors, aliases, merge keys, explicit tags, complex
    or duplicate keys), is not YAML at all, or libyaml is missing: ``compose`` reads those.

    Scalars are resolved and constructed by PyYAML's own resolver and ``SafeConstructor``,
    mappings and sequences are dicts and lists, as ``compose`` would build them. Keeping no
    node (and so no mark) per key and value is what makes a large file cheap to read.
    """
    if _CSafeLoader is None or yaml.resolver.Resolver.yaml_path_resolvers:
        return None
    if _NON_PRINTABLE.search(text):
        return None
    loader = _CSafeLoader(text)
    events = yaml.events
    resolve = loader.resolve
    constructors = loader.yaml_constructors
    get_event = loader.get_event

    def scalar(event: yaml.ScalarEvent) -> Any:
        if event.anchor is not None or event.tag not in (None, "!"):
            raise _NotPlainError
        tag = resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag not in _PLAIN_SCALAR_TAGS:  # a merge key, `=`, a tag of an added resolver
            raise _NotPlainError
        node = yaml.ScalarNode(tag, event.value, style=event.style)  # errors bail: no marks
        return constructors[tag](loader, node)

    def value(event: yaml.Event) -> Any:
        kind = type(event)
        if kind is events.ScalarEvent:
            return scalar(event)  # type: ignore[arg-type]
        if kind is events.MappingStartEvent:
            start: Any = event
            if start.anchor is not None or start.tag not in (None, "!"):
                raise _NotPlainError
            if resolve(yaml.MappingNode, None, start.implicit) != _MAP_TAG:
                raise _NotPlainError
            out: dict[Any, Any] = {}
            seen: set[str] = set()
            while type(key_event := get_event()) is not events.MappingEndEvent:
                if type(key_event) is not events.ScalarEvent:
                    raise _NotPlainError  # a complex key, or an alias
                key = scalar(key_event)
                raw = key_event.value
                if raw in seen or key in out:
                    raise _NotPlainError  # a duplicate key: reported with its line by the full path
                seen.add(raw)
                out[key] = value(get_event())
            return out
        if kind is events.SequenceStartEvent:
            start = event
            if start.anchor is not None or start.tag not in (None, "!"):
                raise _NotPlainError
            if resolve(yaml.SequenceNode, None, start.implicit) != _SEQ_TAG:
                raise _NotPlainError
            items = []
            while type(item := get_event()) is not events.SequenceEndEvent:
                items.append(value(item))
            return items
        raise _NotPlainError  # an alias

    try:
        if type(get_event()) is not events.StreamStartEvent:
            return None
        if type(get_event()) is not events.DocumentStartEvent:
            return None  # an empty file
        data = value(get_event())
        if type(get_event()) is not events.DocumentEndEvent:
            return None
        if type(get_event()) is not events.StreamEndEvent:
            return None  # a second document
    except Exception:  # noqa: BLE001 - not plain, or not YAML: the full path reports it
        return None
    finally:
        loader.dispose()
    return data if isinstance(data, dict) else None


def _reader_error(exc: yaml.reader.ReaderError, text: str, source: str) -> ConfigError:
    line = text[: exc.position].count("\n") + 1
    char = exc.character
    shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
    return ConfigError([ConfigIssue("", line, f"YAML: character {shown} is not allowed")], source)
