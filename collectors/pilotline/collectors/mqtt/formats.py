"""Payload formats: where a JSON payload keeps its time, its signals and its quality.

``payload:`` (of a machine's ``mqtt:`` or of a site-wide topic pattern) is a preset's name or
a section whose keys override a preset's::

    payload: telegraf                          # Telegraf's JSON output serializer
    payload: {preset: telegraf, time_unit: ms} # ... with json_timestamp_units = "1ms"
    payload: {time: fields.time, time_unit: iso8601, signals: fields}

Presets (``PRESETS``):

- ``pilotline`` (the default): ``{"ts": <ms or ISO 8601>, "<signal>": value, "quality":
  "good"}``; a payload without ``ts`` is stamped at its arrival (heartbeats ``{}``).
- ``umh``: the United Manufacturing Hub historian, ``{"timestamp_ms": <ms>, "<tag>":
  value}``; booleans are numbers (as UMH reads them); no ``timestamp_ms``: quarantined.
- ``telegraf``: ``{"fields": {...}, "name": ..., "tags": {...}, "timestamp": <s>}`` (seconds:
  Telegraf's ``json_timestamp_units`` default, "1s"); no ``timestamp``: quarantined.

``Format`` is the compiled form the decoder reads (``mapped.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from pilotline.collectors.fields import Model

__all__ = [
    "DEFAULT_FORMAT",
    "PRESETS",
    "Format",
    "PayloadFormat",
    "PayloadSection",
    "payload_section",
]

PresetName = Literal["pilotline", "umh", "telegraf"]
TimeUnit = Literal["ms", "s", "us", "ns", "iso8601"]
ROOT = "."

PRESETS: dict[str, dict[str, Any]] = {
    "pilotline": {
        "time": "ts",
        "time_unit": "ms",
        "missing_time": "arrival",
        "signals": ROOT,
        "value": "value",
        "quality": "quality",
        "booleans": "refuse",
    },
    "umh": {
        "time": "timestamp_ms",
        "time_unit": "ms",
        "missing_time": "quarantine",
        "signals": ROOT,
        "value": "value",
        "quality": None,
        "booleans": "number",
    },
    "telegraf": {
        "time": "timestamp",
        "time_unit": "s",
        "missing_time": "quarantine",
        "signals": "fields",
        "value": "value",
        "quality": None,
        "booleans": "number",
    },
}


def _path(text: str) -> tuple[str, ...]:
    return () if text == ROOT else tuple(text.split("."))


def _check_path(value: str) -> str:
    if value != ROOT and any(not part for part in value.split(".")):
        raise ValueError(
            f"{value!r} is not a key path: keys joined by dots (fields.time), or '.' for the "
            "payload itself"
        )
    return value


@dataclass(frozen=True, slots=True)
class Format:
    """A compiled ``payload:``: paths as tuples of keys (``()`` is the payload itself)."""

    name: str
    time: tuple[str, ...]
    time_unit: str
    missing_time: str
    signals: tuple[str, ...]
    value: tuple[str, ...]
    quality: tuple[str, ...] | None
    booleans: bool
    skip: frozenset[str]
    """Keys of the signals' object that are not signals (the time, the quality)."""
    default: bool
    """The ``pilotline`` preset unchanged: the collector's fast decoder (``parse.py``)."""


class PayloadFormat(Model):
    """``payload:``: where a JSON payload keeps its time, signals and quality. Give a preset's
    name (``pilotline``, ``umh``, ``telegraf``), or this section: its keys override the
    preset's."""

    preset: PresetName = "pilotline"
    """The preset the other keys start from: ``pilotline`` (``ts`` in ms, flat), ``umh``
    (``timestamp_ms``, flat, booleans as numbers), ``telegraf`` (``timestamp`` in seconds,
    signals in ``fields``)."""
    time: str = Field(default="ts", min_length=1)
    """The key of the time, or a path of keys joined by dots (``fields.time``); default: the
    preset's."""
    time_unit: TimeUnit = "ms"
    """A numeric time's unit: ``ms``, ``s``, ``us``, ``ns``; a string is read as ISO 8601 with
    ``Z`` or an offset whatever the unit; ``iso8601`` refuses numbers. Default: the preset's."""
    missing_time: Literal["quarantine", "arrival"] = "arrival"
    """A payload without its time: ``quarantine`` (reason ``missing_time``), or ``arrival``:
    stamped at its arrival (the ``pilotline`` preset's heartbeats). Default: the preset's,
    but ``quarantine`` wherever the section names ``time``."""
    signals: str = Field(default=ROOT, min_length=1)
    """Where the signals are: ``.`` (the payload itself, every key but the time and quality)
    or the path of a nested object (``fields``). Default: the preset's."""
    value: str = Field(default="value", min_length=1)
    """For a ``{signal}`` topic (one value per topic) whose payload is an object: the path of
    the value (a bare JSON number or string is the value itself). Default: ``value``."""
    quality: str | None = "quality"
    """The key (path) of the quality (``good``, ``uncertain``, ``bad``), or null for none: the
    key is then a signal like any other. Default: the preset's."""
    booleans: Literal["refuse", "number"] = "refuse"
    """A boolean signal: ``refuse`` (quarantined as ``wrong_type``) or ``number`` (true is 1,
    false 0, as UMH and InfluxDB read them). Default: the preset's."""

    @model_validator(mode="before")
    @classmethod
    def _from_preset(cls, data: Any) -> Any:
        # Keys the file leaves out come from the preset it names (an unknown preset is
        # reported at ``preset`` by the field's own check).
        if isinstance(data, dict):
            base = PRESETS.get(str(data.get("preset", "pilotline")))
            if base is not None:
                # A time key the file names is one the payload must carry.
                named = {"missing_time": "quarantine"} if "time" in data else {}
                return {**base, **named, **data}
        return data

    @field_validator("time", "signals", "value", "quality")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return value if value is None else _check_path(value)

    @model_validator(mode="after")
    def _time_not_a_signal_object(self) -> PayloadFormat:
        if self.time == ROOT:
            raise ValueError("time must name a key, not '.' (the payload itself)")
        return self

    def compiled(self) -> Format:
        signals = _path(self.signals)
        quality = None if self.quality is None else _path(self.quality)
        time = _path(self.time)
        # The time or quality key inside the signals' object is not a signal.
        skip = frozenset(
            path[-1]
            for path in (time, quality)
            if path is not None and path[:-1] == signals
        )
        return Format(
            name=self.preset,
            time=time,
            time_unit=self.time_unit,
            missing_time=self.missing_time,
            signals=signals,
            value=_path(self.value),
            quality=quality,
            booleans=self.booleans == "number",
            skip=skip,
            default=self.model_dump() == PayloadFormat(preset="pilotline").model_dump(),
        )


def payload_section(value: Any) -> Any:
    """``payload: umh`` is ``payload: {preset: umh}``."""
    if isinstance(value, str):
        return {"preset": value}
    return value


PayloadSection = Annotated[
    PayloadFormat,
    BeforeValidator(payload_section, json_schema_input_type=PresetName | PayloadFormat),
]
"""A ``payload:`` key: a preset's name or a ``PayloadFormat`` section."""


DEFAULT_FORMAT = PayloadFormat().compiled()
"""The ``pilotline`` preset, for a ``{signal}`` topic that names no format."""
