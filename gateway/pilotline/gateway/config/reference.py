"""The configuration reference, ``docs/configuration.md``, written from the JSON Schema
(``json_schema``), which is written from the models: ``pilotline check --reference``.

Every section of the file gets a table of its keys (type, default, bounds, description:
the field's docstring), in the order a reader meets them in a file. A test regenerates it
and fails if the committed file differs, so the reference cannot drift from the code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from pilotline.collectors.fields import DURATION_PATTERN, MAX_SECONDS
from pilotline.gateway.config.json_schema import site_schema

__all__ = ["REFERENCE_COMMAND", "reference_text"]

REFERENCE_COMMAND: Final = "pilotline check --reference > docs/configuration.md"
_ID_PATTERN: Final = "^[a-z0-9][a-z0-9._-]*$"
_ROOT: Final = "SiteConfig"

_INTRO: Final = f"""\
# Configuration reference

<!-- Generated from the models by
     `{REFERENCE_COMMAND}`: do not edit by hand.
     tests/gateway/test_config_reference.py fails when it is out of date. -->

A site is one YAML file; `pilotline check -c FILE` validates all of it at once and lists
every mistake with its line and path (`zones[0].machines[2].state.map`). A key that is not
listed here is refused (with the closest known key), so is a secret written inline.
`deploy/pilotline.yaml` is a complete example.

- **Editors.** `pilotline check --schema` prints the JSON Schema of this file
  (`docs/pilotline.schema.json` is a copy). With VS Code's YAML extension (Red Hat), put
  `# yaml-language-server: $schema=<path or URL of the schema>` as the first line of the
  file, or map it in the settings (`"yaml.schemas": {{"docs/pilotline.schema.json":
  "pilotline*.yaml"}}`): keys are completed and described, and a wrong type or an unknown
  key is underlined as you type. Checks across objects (unique ids and topics, owners that
  exist, files that exist) are `pilotline check`'s alone.
- **Durations.** A key ending in `_s` takes a number of seconds (`90`) or a duration with
  units (`90s`, `15m`, `2h`, `1h30m`, `500ms`; units `ms`, `s`, `m`, `h`, `d`); one ending
  in `_ms` a number of milliseconds or the same. Alert durations (`for`, `offered_idle_for`,
  `group_wait`...) need their units: `for: 5` could be seconds or minutes.
- **Ids** (sites, zones, machines, owners, capabilities, rules, channels) are lowercase
  letters, digits, `.`, `_` and `-`, starting with a letter or a digit: they become tag
  values and MQTT topic levels.
- **Files and secrets.** Relative paths (`store`, `*_file`) are relative to the
  configuration file. Passwords and tokens are read from their `*_file` (or an environment
  variable where one is named), never inline; `pilotline check` checks that every file the
  gateway will read exists and is readable, unless `--no-files` (a machine that does not
  have the secrets yet: the files are then listed as not checked).
"""


@dataclass
class _Section:
    name: str
    schema: dict[str, Any]
    paths: list[str] = field(default_factory=list)


def reference_text() -> str:
    """The text of ``docs/configuration.md``."""
    schema = site_schema()
    defs: dict[str, Any] = schema.get("$defs", {})
    sections: dict[str, _Section] = {}
    _collect(_ROOT, _object_of(schema), "", defs, sections)
    out = [_INTRO, "## Sections", ""]
    out.extend(
        f"- [{_heading(s)}](#{_anchor(s.name)}) ({s.name})" for s in sections.values()
    )
    for section in sections.values():
        out.extend(["", f'<a id="{_anchor(section.name)}"></a>', ""])
        out.append(f"## {_heading(section)}")
        out.append("")
        description = _object_of(section.schema).get("description")
        if description:
            out.extend([_text(description), ""])
        if len(section.paths) > 1:
            also = ", ".join(f"`{p}`" for p in section.paths[1:])
            out.extend([f"Also at {also}.", ""])
        if "anyOf" in section.schema and any("const" in b for b in section.schema["anyOf"]):
            words = " or ".join(f"`{b['const']}`" for b in section.schema["anyOf"] if "const" in b)
            out.extend([f"Instead of the mapping, the word {words} may be given.", ""])
        out.extend(_table(_object_of(section.schema), defs))
    return "\n".join(out) + "\n"


def _collect(
    name: str, obj: dict[str, Any], path: str, defs: dict[str, Any], into: dict[str, _Section]
) -> None:
    """The sections under ``obj`` (the model ``name`` at ``path``), depth first in key order."""
    seen = name in into
    section = into.setdefault(name, _Section(name, defs.get(name, obj)))
    section.paths.append(path or "the file")
    if seen:
        return
    for key, prop in obj.get("properties", {}).items():
        here = f"{path}.{key}" if path else key
        for ref, suffix in _refs(prop):
            _collect(ref, _object_of(defs[ref]), here + suffix, defs, into)


def _refs(prop: dict[str, Any], suffix: str = "") -> list[tuple[str, str]]:
    """The models a key holds, each with what follows the key in its path (``[]``: items
    of a list, ``.<id>``: values of a mapping)."""
    if "$ref" in prop:
        return [(prop["$ref"].rsplit("/", 1)[-1], suffix)]
    found = []
    for branch in prop.get("anyOf", []):
        found.extend(_refs(branch, suffix))
    if isinstance(prop.get("items"), dict):
        found.extend(_refs(prop["items"], suffix + "[]"))
    values = _mapping_values(prop)
    if values is not None:
        found.extend(_refs(values, f"{suffix}.<{_key_kind(prop)}>"))
    return found


def _object_of(schema: dict[str, Any]) -> dict[str, Any]:
    """The object schema of a model (an ``anyOf`` of a word and the mapping: the mapping)."""
    if "properties" in schema:
        return schema
    return next((b for b in schema.get("anyOf", []) if "properties" in b), schema)


def _heading(section: _Section) -> str:
    first = section.paths[0]
    return "The file (top-level keys)" if first == "the file" else f"`{first}`"


def _anchor(name: str) -> str:
    return name.lower()


def _table(obj: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    required = set(obj.get("required", []))
    rows = [
        "| key | type | default | bounds | description |",
        "|---|---|---|---|---|",
    ]
    for key, prop in obj.get("properties", {}).items():
        default = "**required**" if key in required else _default(prop)
        rows.append(
            f"| `{key}` | {_type(prop, defs)} | {default} | {_bounds(prop)} "
            f"| {_text(prop.get('description', ''))} |"
        )
    return rows


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    if "anyOf" in prop:
        branches = [b for b in prop["anyOf"] if b.get("type") != "null"]
        kinds = list(dict.fromkeys(_type(b, defs) for b in branches))
        if kinds[-1] == "duration" and len(kinds) == 2 and kinds[0] in ("number", "integer"):
            return f"{'whole ' if kinds[0] == 'integer' else ''}number or duration"
        return " or ".join(kinds)
    if "const" in prop:
        return f"`{prop['const']}`"
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    kind = prop.get("type")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}), defs)}"
    if kind == "object":
        values = _mapping_values(prop)
        if values is None:
            return "mapping"
        return f"mapping of {_key_kind(prop)} to {_type(values, defs)}"
    if kind == "string":
        if prop.get("pattern") == _ID_PATTERN:
            return "id"
        if prop.get("pattern") == DURATION_PATTERN:
            return "duration"
        return {"path": "path", "date-time": "date and time"}.get(prop.get("format", ""), "text")
    return str(kind) if kind else "any"


def _mapping_values(prop: dict[str, Any]) -> dict[str, Any] | None:
    if isinstance(prop.get("additionalProperties"), dict):
        values: dict[str, Any] = prop["additionalProperties"]
        return values
    patterns = prop.get("patternProperties")
    if isinstance(patterns, dict) and len(patterns) == 1:
        only: dict[str, Any] = next(iter(patterns.values()))
        return only
    return None


def _key_kind(prop: dict[str, Any]) -> str:
    patterns = prop.get("patternProperties") or {}
    return "id" if _ID_PATTERN in patterns else "name"


def _default(prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return ""
    value = prop["default"]
    if value is None:
        return "none"
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"`{_number(value)}`"
    if isinstance(value, str):
        return f"`{value}`"
    return f"`{json.dumps(value)}`"


_BOUND_WORDS: Final = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
    ("minItems", "at least {} items"),
    ("minProperties", "at least {} entries"),
)


def _bounds(prop: dict[str, Any]) -> str:
    found = []
    for schema in [prop, *prop.get("anyOf", [])]:
        for key, words in _BOUND_WORDS:
            if key not in schema:
                continue
            if key in ("minLength", "minItems", "minProperties") and schema[key] == 1:
                found.append("not empty")
            elif key == "maximum" and schema[key] == MAX_SECONDS:
                found.append("≤ 10 years")  # a sanity bound, not a setting's
            else:
                found.append(words.format(_number(schema[key])))
    return ", ".join(found)


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}".replace(",", " ") if abs(value) >= 10_000 else str(value)


def _text(description: str) -> str:
    """A docstring as one line of Markdown: reST's ``code`` as `code`, no table breaks."""
    text = re.sub(r"``([^`]+)``", r"`\1`", description)
    return " ".join(text.split()).replace("|", "\\|")
