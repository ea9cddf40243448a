"""pydantic's validation errors as ``ConfigIssue``s: each at its path and line, in words for
someone editing a YAML file (what YAML read a value as, which keys are allowed where).

Generic: it knows the root model only to list the keys allowed beside an unknown one. A
validator that knows better where its error belongs raises a ``ValidationError`` with that
location (``pilotline.collectors.fields.Secret.refuse_in``); nothing here matches messages.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pilotline.gateway.config.errors import ConfigIssue
from pilotline.gateway.config.locate import Loc, issue
from pilotline.gateway.config.schema import fields_by_key, model_at

__all__ = ["kind_of", "validation_issues"]


def validation_issues(
    exc: ValidationError, root: yaml.Node | None, model: type[BaseModel]
) -> list[ConfigIssue]:
    """The issues of ``exc``, raised validating ``model`` from the file whose tree is ``root``."""
    issues = []
    for error in exc.errors(include_url=False):
        loc: Loc = tuple(error["loc"])
        issues.append(issue(root, loc, _message(error, loc, model)))
    return issues


def _message(error: Mapping[str, Any], loc: Loc, model: type[BaseModel]) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden" and loc:
        return _unknown_key(str(loc[-1]), model_at(model, loc[:-1]))
    if kind == "missing":
        return "required key is missing"
    if kind in ("value_error", "assertion_error"):
        ctx = error.get("ctx") or {}
        return str(ctx.get("error", error["msg"]))
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, got {kind_of(value)}"
    if kind == "list_type":
        return f"expected a list, got {kind_of(value)}"
    message = str(error["msg"])
    if loc and loc[-1] == "[key]":
        message = f"key {value!r}: {message}"
    elif kind == "string_type" and isinstance(value, bool | int | float):
        message += f", got {value!r}: YAML read it as {_a(kind_of(value))}, quote it"
    elif isinstance(value, str | int | float | bool) and len(repr(value)) <= 80:
        message += f", got {value!r}"
    return message


def _unknown_key(key: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return f"unknown key {key!r}"
    allowed = [name for name, field in fields_by_key(model) if not field.exclude]
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"allowed here: {', '.join(allowed)}"
    return f"unknown key {key!r}: {hint}"


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def kind_of(value: object) -> str:
    """What YAML read ``value`` as, in its own words: null, boolean, integer, mapping..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__
