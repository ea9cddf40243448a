"""From a place in the data to a place in the file: a pydantic ``loc`` to a path and a line.

A ``Loc`` is a pydantic error location, ``("zones", 0, "machines", 2, "state", "map")``; its
path is ``zones[0].machines[2].state.map``. Its line comes from walking the YAML node tree
alongside it: a mapping key gives the key's own line (a missing key its mapping's), a list
index the item's. Nothing here knows what the file configures.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

import yaml

from pilotline.gateway.config.errors import ConfigIssue

__all__ = ["Loc", "duplicate_keys", "format_loc", "issue", "line", "locate"]

Loc = tuple[str | int, ...]

_SIMPLE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
# pydantic-core schema tags that can appear in a loc (unions, validators), never user keys.
_LOC_TAG_RE: Final = re.compile(r"[a-z][a-z0-9-]*\[.*\]", re.DOTALL)
_LOC_TAGS: Final = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "literal"})
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


def issue(root: yaml.Node | None, loc: Loc, message: str) -> ConfigIssue:
    path, at = locate(root, loc)
    return ConfigIssue(path, at, message)


def format_loc(loc: Loc) -> str:
    """The path of ``loc`` alone, with no file to find its line in."""
    return locate(None, loc)[0]


def locate(root: yaml.Node | None, loc: Loc) -> tuple[str, int | None]:
    """``zones[0].machines[2].state.map`` for a pydantic loc, and the line it starts at.

    Schema tags are dropped; past the end of the tree the path goes on with the line of the
    last node found.
    """
    node = root
    at = line(root)
    text = ""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = _find_key(node, part)
            if pair is not None:
                text += _key_text(part, text)
                at = line(pair[0])
                node = pair[1]
                continue
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            text += f"[{part}]"
            node = node.value[part]
            at = line(node)
            continue
        if isinstance(part, str) and (part in _LOC_TAGS or _LOC_TAG_RE.fullmatch(part)):
            continue
        node = None
        if part == "[key]":
            continue
        text += f"[{part}]" if isinstance(part, int) else _key_text(part, text)
    return text, at


def line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _key_text(part: str | int, text: str) -> str:
    key = str(part)
    if not _SIMPLE_KEY_RE.fullmatch(key):
        return f"[{key!r}]"
    return f".{key}" if text else key


def _find_key(node: yaml.MappingNode, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    wanted = str(part)
    found = None
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value == wanted and key.tag != _MERGE_TAG:
            found = (key, value)
    if found is not None:
        return found
    for key, value in node.value:  # keys brought in by `<<: *anchor`
        if key.tag == _MERGE_TAG:
            merged = value.value if isinstance(value, yaml.SequenceNode) else [value]
            for source in merged:
                if isinstance(source, yaml.MappingNode):
                    hit = _find_key(source, part)
                    if hit is not None:
                        return hit
    return None


def duplicate_keys(root: yaml.Node | None) -> Iterator[ConfigIssue]:
    """A key given twice in one mapping (PyYAML would silently keep the last one)."""
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:  # aliases share nodes; visit each once
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int | None] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                    continue
                here = path + _key_text(key.value, path)
                if key.value in first:
                    yield ConfigIssue(
                        here,
                        line(key),
                        f"duplicate key {key.value!r} (first at line {first[key.value]})",
                    )
                else:
                    first[key.value] = line(key)
                stack.append((value, here))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
