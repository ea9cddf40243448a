"""The files a configuration names: those the gateway will read exist, and relative paths are
relative to the configuration file.

Which keys name a file to read is said by the fields themselves (``SecretFile`` and
``ReadFile`` of ``pilotline.collectors.fields``), so this works for any model: every
component's secrets and certificates are checked without being listed here. In the section
of a ``Connection`` every such key of any connection is checked (a misplaced one too).

A file whose content is secret (``SecretFile``, ``PrivateFile``) that others than its owner
may read is a warning, not a refusal: a container's secrets are often mounted readable by
all, inside a folder that only their owner can enter.
"""

from __future__ import annotations

import functools
import os
import shlex
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

from pydantic import BaseModel

from pilotline.collectors.fields import Connection, FileToRead
from pilotline.gateway.config.errors import ConfigIssue
from pilotline.gateway.config.locate import Loc, format_loc, issue
from pilotline.gateway.config.schema import fields_by_key, unwrap
from pilotline.gateway.config.yamlfile import Tree

__all__ = ["exposed_files", "file_issues", "named_files", "resolve_paths"]


def file_issues(
    model: type[BaseModel], data: object, tree: Tree, base: Path
) -> list[ConfigIssue]:
    """Files the gateway will read secrets or certificates from must exist (not read here).

    ``data`` is the file's plain data, which ``model`` may refuse in part: what is not where
    the model expects it is skipped.
    """
    issues = []
    for loc, value in _named_files(model, data, (), _file_keys(model)):
        file = base / value
        if not file.exists():
            problem = f"file not found: {file}"
        elif not file.is_file():
            problem = f"not a file: {file}"
        elif not os.access(file, os.R_OK):
            problem = f"file not readable: {file}"
        else:
            continue
        issues.append(issue(tree.root, loc, problem))
    return issues


def named_files(config: BaseModel) -> list[tuple[str, Path]]:
    """The files a loaded configuration names for the gateway to read (secrets, certificates,
    keys), each with its path in the file: what ``pilotline check --no-files`` did not check."""
    model = type(config)
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    return [
        (format_loc(loc), Path(value))
        for loc, value in _named_files(model, data, (), _file_keys(model))
    ]


def exposed_files(
    model: type[BaseModel], data: object, tree: Tree, base: Path
) -> list[ConfigIssue]:
    """Secret files (passwords, tokens, private keys) that the group or others may read,
    each with its mode and the fix. Files that are missing are left to ``file_issues``."""
    private = _private_keys(model)
    found = []
    for loc, value in _named_files(model, data, (), _file_keys(model)):
        if loc[-1] not in private:
            continue
        file = base / value
        try:
            mode = file.stat().st_mode
        except OSError:
            continue
        readers = [who for who, bit in (("group", stat.S_IRGRP), ("others", stat.S_IROTH))
                   if mode & bit]
        if stat.S_ISREG(mode) and readers:
            found.append(issue(
                tree.root, loc,
                f"{file} is readable by {' and '.join(readers)} (mode "
                f"{stat.S_IMODE(mode):04o}): chmod 600 {shlex.quote(str(file))}",
            ))
    return found


def _named_files(
    model: type[BaseModel], data: object, loc: Loc, keys: tuple[str, ...]
) -> Iterator[tuple[Loc, str]]:
    if not isinstance(data, dict):
        return
    own, nested = _plan(model)
    for key in keys if issubclass(model, Connection) else (k for k in keys if k in own):
        value = data.get(key)
        if isinstance(value, str) and value:
            yield (*loc, key), value
    for key, tp in nested:
        yield from _named_in(tp, data.get(key), (*loc, key), keys)


def _named_in(
    tp: Any, value: object, loc: Loc, keys: tuple[str, ...]
) -> Iterator[tuple[Loc, str]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield from _named_files(tp, value, loc, keys)
    elif get_origin(tp) is list and isinstance(value, list):
        item = unwrap(get_args(tp)[0])
        for i, entry in enumerate(value):
            yield from _named_in(item, entry, (*loc, i), keys)
    elif get_origin(tp) is dict and isinstance(value, dict):
        item = unwrap(get_args(tp)[1])
        for key, entry in value.items():
            yield from _named_in(item, entry, (*loc, key), keys)


@functools.cache
def _file_keys(root: type[BaseModel]) -> tuple[str, ...]:
    """Every key that names a file under ``root``, in the order they are checked in one
    section: credentials first, then the other files, each as first met in the model."""
    credentials: dict[str, None] = {}
    others: dict[str, None] = {}
    for key, marker in _all_markers(root):
        (credentials if marker.credential else others).setdefault(key)
    return (*credentials, *others)


@functools.cache
def _private_keys(root: type[BaseModel]) -> frozenset[str]:
    """The keys under ``root`` that name a file whose content is secret."""
    return frozenset(key for key, marker in _all_markers(root) if marker.private)


def _all_markers(root: type[BaseModel]) -> Iterator[tuple[str, FileToRead]]:
    """The file keys of ``root`` and of every model under it, as first met."""
    stack = [root]
    seen: set[type[BaseModel]] = set()
    while stack:
        model = stack.pop(0)
        if model in seen:
            continue
        seen.add(model)
        yield from _markers(model)
        stack[:0] = [m for _, tp in _plan(model)[1] for m in _models_in(tp)]


@functools.cache
def _plan(model: type[BaseModel]) -> tuple[frozenset[str], tuple[tuple[str, Any], ...]]:
    """The keys of ``model`` that name files, and the keys under which a section that
    names files may be found deeper down (with their types)."""
    own = frozenset(key for key, _ in _markers(model))
    nested = []
    for key, field in fields_by_key(model):
        tp = unwrap(field.annotation)
        if key not in own and any(_names_files(m) for m in _models_in(tp)):
            nested.append((key, tp))
    return own, tuple(nested)


def _names_files(model: type[BaseModel]) -> bool:
    own, nested = _plan(model)
    return issubclass(model, Connection) or bool(own or nested)


def _markers(model: type[BaseModel]) -> list[tuple[str, FileToRead]]:
    found = []
    for key, field in fields_by_key(model):
        marker = next((m for m in field.metadata if isinstance(m, FileToRead)), None)
        if marker is not None:
            found.append((key, marker))
    return found


def _models_in(tp: Any) -> list[type[BaseModel]]:
    """The models a field's type holds: itself, or the items of its list or dict."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    if get_origin(tp) is list:
        return _models_in(unwrap(get_args(tp)[0]))
    if get_origin(tp) is dict:
        return _models_in(unwrap(get_args(tp)[1]))
    return []


M = TypeVar("M", bound=BaseModel)


def resolve_paths(model: M, base: Path) -> M:
    """A copy of ``model`` with every relative ``Path`` field made relative to ``base``."""
    changes: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        new = _resolve_value(value, base)
        if new is not value:
            changes[name] = new
    return model.model_copy(update=changes) if changes else model


def _resolve_value(value: Any, base: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else base / value
    if isinstance(value, BaseModel):
        return resolve_paths(value, base)
    if isinstance(value, list):
        items = [_resolve_value(item, base) for item in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value

