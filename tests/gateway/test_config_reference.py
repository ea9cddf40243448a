"""The configuration reference and the JSON Schema editors use: generated from the models,
committed, and kept from drifting; the schema agrees with the examples and the broken one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from pilotline.gateway.cli import main
from pilotline.gateway.config.json_schema import DIALECT, schema_text, site_schema
from pilotline.gateway.config.reference import REFERENCE_COMMAND, reference_text

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"
SCHEMA = ROOT / "docs" / "pilotline.schema.json"
DEPLOY = ROOT / "deploy"


def test_committed_reference_is_the_generated_one() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == reference_text(), (
        f"docs/configuration.md is out of date: run `{REFERENCE_COMMAND}`"
    )


def test_committed_schema_is_the_generated_one() -> None:
    assert SCHEMA.read_text(encoding="utf-8") == schema_text(), (
        "docs/pilotline.schema.json is out of date: run "
        "`pilotline check --schema > docs/pilotline.schema.json`"
    )


def test_every_key_is_described() -> None:
    # The reference is only as good as the docstrings under the fields it is made from.
    schema = site_schema()
    missing = [
        f"{model}.{key}"
        for model, obj in [("SiteConfig", schema), *schema["$defs"].items()]
        for key, prop in _properties(obj).items()
        if not prop.get("description")
    ]
    assert missing == []


def test_check_prints_the_schema_and_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check"])  # checking needs a file, printing the schema does not
    assert exited.value.code == 2
    assert "-c/--config" in capsys.readouterr().err

    assert main(["check", "--schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["$schema"] == DIALECT
    assert printed["title"] == "pilotline site configuration"
    assert printed["required"] == ["site", "zones"]
    assert printed["additionalProperties"] is False

    assert main(["check", "--reference"]) == 0
    assert capsys.readouterr().out == reference_text()


@pytest.mark.parametrize("name", ["pilotline.yaml", "pilotline-mqtt.yaml"])
def test_schema_accepts_the_examples(name: str) -> None:
    errors = _errors(DEPLOY / name)
    assert errors == []


def test_schema_rejects_the_broken_example() -> None:
    errors = _errors(DEPLOY / "broken.yaml")
    # The three mistakes of broken.yaml that a schema can see; the swapped thresholds and the
    # topic used twice are cross-checks, `pilotline check`'s alone.
    assert errors == [
        ("defaults", "additionalProperties"),  # debounce: (debounce_s)
        ("mqtt", "additionalProperties"),  # password: inline
        ("zones/0/machines/1/state/map/Fault", "enum"),  # broken: no such state
    ]


def test_schema_takes_durations_and_the_short_forms(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "site: s\napi: 127.0.0.1:8080\n"
        "defaults: {min_idle_s: 15m, debounce_s: 90, offering: always}\n"
        "alerts: {group_wait: 30s, rules: [{name: r, state: down, for: 2m}]}\n"
        "zones: [{id: z, machines: [{id: m, owner: o, mqtt: {topic: t}, state: {signal: s}}]}]\n"
    )
    assert _errors(good) == []
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "site: S 1\n"
        "defaults: {min_idle_s: 15 minutes, debounce_s: yes}\n"
        "alerts: {rules: [{name: r, state: down, for: 5}]}\n"
        "zones: [{id: z, machines: [{id: m, owner: o, mqtt: {topic: t}, state: {signal: s}}]}]\n"
    )
    assert _errors(bad) == [
        ("alerts/rules/0/for", "type"),
        ("defaults/debounce_s", "anyOf"),
        ("defaults/min_idle_s", "pattern"),
        ("site", "pattern"),
    ]


class _EditorLoader(yaml.SafeLoader):
    """YAML as an editor's language server reads it (YAML 1.2): a date stays text."""


_EditorLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _json_data(value: Any) -> Any:
    """Mapping keys as text, as in JSON (``{6: running}`` in a state map)."""
    if isinstance(value, dict):
        return {str(k): _json_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_data(v) for v in value]
    return value


def _errors(path: Path) -> list[tuple[str, str]]:
    """Where the schema finds ``path`` wrong, and which keyword says so."""
    data = _json_data(yaml.load(path.read_text(encoding="utf-8"), Loader=_EditorLoader))
    validator = Draft202012Validator(site_schema())
    found = []
    for error in validator.iter_errors(data):
        # Of a key that may also be null (or a word), the error of the branch that fits best.
        best = best_match([error])
        found.append(("/".join(str(p) for p in best.absolute_path), str(best.validator)))
    return sorted(found)


def _properties(schema: dict[str, Any]) -> dict[str, Any]:
    if "properties" in schema:
        props: dict[str, Any] = schema["properties"]
        return props
    return next((b["properties"] for b in schema.get("anyOf", []) if "properties" in b), {})
