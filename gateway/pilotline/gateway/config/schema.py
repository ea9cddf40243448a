"""Reading a model's fields by the keys of the file: which model validates the mapping at a
place, and which of its fields a key names. Generic over any pydantic model."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = ["fields_by_key", "model_at", "unwrap"]


def fields_by_key(model: type[BaseModel]) -> Iterator[tuple[str, FieldInfo]]:
    """The model's fields, each under the key that sets it in the file (its alias)."""
    for name, field in model.model_fields.items():
        yield field.alias or name, field


def model_at(root: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` under ``root``."""
    current: Any = root
    for part in loc:
        current = unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for key, f in fields_by_key(current) if key == part), None)
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) is list and isinstance(part, int):
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return None
    current = unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def unwrap(tp: Any) -> Any:
    """``tp`` without ``Annotated`` and without ``| None``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp
