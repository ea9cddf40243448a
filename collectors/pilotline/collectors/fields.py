"""Field types that every component's configuration shares: ids, signals, seconds, secrets.

They sit here, in the lowest part that has a configuration, because both sides need them:
the collectors may import nothing of the gateway, and the gateway's own components (the
InfluxDB sink, the notification channels) are imported by the site model, so they cannot
take them from ``pilotline.gateway.config`` either. The site's own types (capabilities,
state names, alert durations that must have units) are in ``pilotline.gateway.config.fields``.

Durations. Every ``*_s`` key takes a number of seconds or a duration with units (``90s``,
``15m``, ``2h``, ``1h30m``, ``500ms``), and every ``*_ms`` key a number of milliseconds or
the same; one parser (``duration_ms``) reads them all, alert rules' durations included.

Secrets. A secret never sits in the configuration file: the key that would hold it inline
(``password``, ``token``) is refused with a message saying where it goes instead, and the
secret is read when it is needed, from its ``<key>_file`` or an environment variable, so a
rotated secret is picked up without a restart. ``Secret`` describes one such secret and
reads it; ``SecretFile``, ``PrivateFile`` and ``ReadFile`` mark the files a running gateway
reads (secrets, certificates, keys) in a ``Connection``'s section, which ``pilotline check``
checks exist and are readable (and, for the secret ones, that others cannot read them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationError,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError

from pilotline.collectors.signals import signal_name_problem

__all__ = [
    "DURATION_PATTERN",
    "MAX_SECONDS",
    "Connection",
    "FileToRead",
    "Id",
    "Milliseconds",
    "Model",
    "PositiveSeconds",
    "PrivateFile",
    "ReadFile",
    "Seconds",
    "Secret",
    "SecretFile",
    "Signal",
    "Threshold",
    "WholeSeconds",
    "duration_ms",
    "reject_bool",
]

MAX_SECONDS: Final = 10 * 365 * 86_400.0


class Model(BaseModel):
    """A configuration section: a misspelt key is an error, and a loaded section never
    changes (so sections can be shared between machines)."""

    # A field's docstring is its description: in the JSON Schema editors read, and in
    # docs/configuration.md, which is generated from the models.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Connection(Model):
    """The section of a peer the gateway connects to (a broker, a server, a receiver of
    notifications), where the files such a connection needs (secrets, certificates) are
    named. ``pilotline check`` checks every file key of any connection in each of them, so
    one misplaced from another section (``token_file`` under ``mqtt:``) is found missing
    as well as unknown."""


_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]*")


def _check_id(value: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid id: use lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or a digit (ids become tag values and MQTT topic levels)"
        )
    return value


def _check_signal(value: str) -> str:
    if not value or any(ch.isspace() for ch in value):
        raise ValueError(f"{value!r} is not a valid signal name: non-empty, without spaces")
    problem = signal_name_problem(value)
    if problem is not None:
        raise ValueError(f"{value[:40]!r} is not a valid signal name: {problem}")
    return value


def reject_bool(value: Any) -> Any:
    """pydantic's lax mode reads True as 1.0; in YAML that is `yes`/`on`, always a slip."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


Id = Annotated[
    str, AfterValidator(_check_id), Field(json_schema_extra={"pattern": f"^{_ID_RE.pattern}$"})
]
Signal = Annotated[str, AfterValidator(_check_signal)]
Threshold = Annotated[float, BeforeValidator(reject_bool), Field(allow_inf_nan=False)]


# --------------------------------------------------------------------------- durations

_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_MS: Final = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
DURATION_PATTERN: Final = r"^\s*(\d+(\.\d+)?(ms|s|m|h|d))+\s*$"
"""A duration with units, as the JSON Schema says it (``duration_ms`` reads it)."""


def duration_ms(text: str) -> float:
    """``"30s"``, ``"2m"``, ``"1h"``, ``"1h30m"``, ``"500ms"`` -> milliseconds (not rounded);
    ``ValueError`` if ``text`` is not one, or is longer than ``MAX_SECONDS``."""
    stripped = text.strip()
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(stripped):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if not stripped or pos != len(stripped):
        raise ValueError(f"not a duration (like 90s, 15m, 2h or 1h30m): {text!r}")
    if total > MAX_SECONDS * 1000:
        raise ValueError(f"duration {text!r} is too long")
    return total


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _in_unit(unit_ms: int) -> Any:
    """A before-validator: a number is in the field's unit as it is; a duration with units
    (``"15m"``) is converted to it; a boolean (YAML's yes/on) is refused."""

    def convert(value: Any) -> Any:
        value = reject_bool(value)
        if isinstance(value, str) and not _is_number(value):
            try:
                return duration_ms(value) / unit_ms
            except ValueError as exc:
                unit = "seconds" if unit_ms == 1000 else "milliseconds"
                raise ValueError(f"{exc}, or a number of {unit}") from None
        return value

    return convert


@dataclass(frozen=True, slots=True)
class _OrDurationText:
    """The JSON Schema of a duration field: its number, or a duration with units."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        number = handler(core_schema)
        text = {"type": "string", "pattern": DURATION_PATTERN}
        return {"anyOf": [number, text]}


_SECONDS: Final = BeforeValidator(_in_unit(1000))
Seconds = Annotated[
    float, _SECONDS, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False), _OrDurationText()
]
"""Seconds: a number (``90``) or a duration with units (``90s``, ``15m``, ``2h``)."""
# At least a millisecond: these become positive integer milliseconds in the core.
PositiveSeconds = Annotated[
    float, _SECONDS, Field(ge=0.001, le=MAX_SECONDS, allow_inf_nan=False), _OrDurationText()
]
"""Seconds, at least a millisecond: a number or a duration with units."""
WholeSeconds = Annotated[int, _SECONDS, _OrDurationText()]
"""Whole seconds (MQTT and HTTP count in them): a number or a duration with units that comes
to whole seconds (``90s``, ``2m``; not ``1.5s``)."""
Milliseconds = Annotated[int, BeforeValidator(_in_unit(1)), _OrDurationText()]
"""Whole milliseconds: a number or a duration with units (``500ms``, ``2s``)."""


# --------------------------------------------------------------------------- files and secrets


@dataclass(frozen=True, slots=True)
class FileToRead:
    """Marks a ``Path`` field whose file the running gateway reads; ``credential``: it holds
    a password or a token (checked first, then the other files); ``private``: its content is
    secret, so ``pilotline check`` warns when others than its owner may read it."""

    credential: bool = False
    private: bool = False


SecretFile = Annotated[Path | None, FileToRead(credential=True, private=True)]
"""A file a credential is read from (``password_file``, ``token_file``)."""
PrivateFile = Annotated[Path | None, FileToRead(private=True)]
"""A file whose content is secret though no credential: a private key, a URL with a token."""
ReadFile = Annotated[Path | None, FileToRead()]
"""Any other file the gateway reads: certificates (``ca_file``, ``cert_file``...)."""


@dataclass(frozen=True, slots=True)
class Secret:
    """One secret of a component: never inline under ``key``, read from ``<key>_file`` or,
    when that is not set, from the environment variable ``env`` (None: a file only).

    ``strip``: a token or a URL is stripped of surrounding whitespace; a password keeps it
    (only the line end is cut: a password may begin or end with a space).
    """

    key: str
    env: str | None = None
    strip: bool = False

    @property
    def file_key(self) -> str:
        return f"{self.key}_file"

    @property
    def advice(self) -> str:
        """Where the secret goes instead: ``put the token in a file and set token_file...``."""
        alternative = f", or set {self.env}" if self.env else ""
        return f"put the {self.key} in a file and set {self.file_key}{alternative}"

    @property
    def refusal(self) -> str:
        return f"secrets are not accepted inline: {self.advice}"

    def refuse(self, _value: object) -> NoReturn:
        """A validator for the inline key's field: ``BeforeValidator(SECRET.refuse)``."""
        raise ValueError(self.refusal)

    def refuse_in(self, data: Any) -> Any:
        """A model's ``mode="before"`` validator that refuses the whole section when it holds
        the secret inline (nothing else of it is checked), located at the inline key."""
        if isinstance(data, dict) and self.key in data:
            # The message and type a ValueError would give, at the inline key's location.
            error = PydanticCustomError(
                "value_error", "Value error, {error}", {"error": self.refusal}
            )
            raise ValidationError.from_exception_data(
                "secret", [InitErrorDetails(type=error, loc=(self.key,), input=data)]
            )
        return data

    def read(self, file: Path | None, environ: Mapping[str, str] | None = None) -> str | None:
        """The secret from ``file`` (preferred) or the environment; None when neither is set.

        Raises OSError if the file cannot be read. An empty variable is no token (a token or
        URL is then None), while an empty password is still a password.
        """
        if file is not None:
            return self.read_file(file)
        if self.env is None:
            return None
        value = (os.environ if environ is None else environ).get(self.env)
        if value is None or (self.strip and not value):
            return None
        return self._clean(value)

    def read_file(self, file: Path) -> str:
        """The secret in ``file``; raises OSError if it cannot be read."""
        return self._clean(file.read_text(encoding="utf-8"))

    def _clean(self, text: str) -> str:
        return text.strip() if self.strip else text.rstrip("\r\n")
