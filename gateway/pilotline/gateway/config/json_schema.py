"""The JSON Schema of the site configuration, for editors: ``pilotline check --schema``.

It is the models' own schema (``SiteConfig.model_json_schema``), so it says what they accept:
every key, its type, bounds and description (the field's docstring), ``additionalProperties:
false`` where a misspelt key is refused. Checks that run across objects (unique ids and
topics, owners that exist, files that exist) are ``pilotline check``'s alone.

A copy is kept in the repository (``docs/pilotline.schema.json``, which the example files
name in their ``# yaml-language-server: $schema=`` line); a test regenerates it and fails
if the copy differs.
"""

from __future__ import annotations

import json
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import CoreSchema, core_schema

from pilotline.gateway.config.site import SiteConfig

__all__ = ["DIALECT", "TITLE", "schema_text", "site_schema"]

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
TITLE: Final = "pilotline site configuration"

# pydantic writes the bounds of a number it validates after a before-validator (a duration,
# a boolean refused) under their Python names; JSON Schema's names are these.
_BOUNDS: Final = {
    "ge": "minimum",
    "le": "maximum",
    "gt": "exclusiveMinimum",
    "lt": "exclusiveMaximum",
}


class _Generator(GenerateJsonSchema):
    def field_title_should_be_set(self, schema: CoreSchema) -> bool:
        return False  # "Debounce S" says less than the key itself

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        # A list or mapping made by a factory (``Field(default_factory=list)``) is shown;
        # a section made by one has its defaults in its own keys.
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()  # type: ignore[call-arg]
            if isinstance(value, list | dict) and not any(
                isinstance(v, BaseModel) for v in value
            ):
                return value
        return super().get_default_value(schema)


def site_schema() -> dict[str, Any]:
    """The schema of a site configuration file, with its dialect and title."""
    schema = SiteConfig.model_json_schema(schema_generator=_Generator)
    _standard_bounds(schema)
    schema.pop("title", None)
    return {"$schema": DIALECT, "title": TITLE, **schema}


def schema_text() -> str:
    """``site_schema()`` as the text ``pilotline check --schema`` prints."""
    return json.dumps(site_schema(), indent=2, ensure_ascii=False) + "\n"


def _standard_bounds(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") in ("number", "integer"):
            for python, standard in _BOUNDS.items():
                if python in node:
                    node[standard] = node.pop(python)
        for value in node.values():
            _standard_bounds(value)
    elif isinstance(node, list):
        for item in node:
            _standard_bounds(item)
