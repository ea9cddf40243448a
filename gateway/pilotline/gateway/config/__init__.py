"""The site configuration: one YAML file, validated all at once, every mistake with its line.

Theory of operation. ``load_config`` reads the file into plain data: straight from libyaml's
events when it is plain YAML (``_quick_data``), else through PyYAML's node tree (which keeps
line marks; ``_compose``). Four kinds of check run on it, and all their findings are gathered
before anything is raised:

1. duplicate keys in any mapping (PyYAML would silently keep the last one);
2. the pydantic models below (``extra="forbid"`` everywhere, so a misspelt key is an error),
   each error turned into a ``ConfigIssue`` whose path is rebuilt from pydantic's ``loc``;
3. site-wide checks across objects (duplicate ids and topics, a machine's source, an MQTT
   machine without a broker, an OPC UA state signal that is not a node), run on the raw data
   so they report even when some other part of the file is broken;
4. the files that secrets and certificates are read from exist and are readable (their
   content is never read here).

Each issue's line comes from walking the node tree along its path; the tree is composed (again)
only when there is an issue to locate (``_Tree``). ``ConfigError`` carries
the issues; ``str()`` of it lists them one per line, ``file:line path: message``.

Relative paths in the file (``store``, ``*_file``) are relative to the directory of the
configuration file, so ``pilotline check`` and ``pilotline run`` agree wherever they are
started from; ``load_config`` returns them resolved.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import ipaddress
import os
import re
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from datetime import time as dt_time
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pilotline.collectors.mqtt.config import (
    INLINE_SECRET_MESSAGE as MQTT_INLINE_SECRET_MESSAGE,
)
from pilotline.collectors.mqtt.config import MqttBrokerConfig, MqttMachineSource
from pilotline.collectors.opcua.config import CONNECTION_FIELDS, OpcuaSource
from pilotline.gateway.shard import ShardBy, check_shard_text, zone_shard_tag
from pilotline.rules.alerts import (
    AlertRule,
    CapacityCondition,
    CollectorCondition,
    Condition,
    OfflineCondition,
    SignalCondition,
    StateCondition,
    validate_template,
)
from pilotline.rules.dispatch import Dispatcher, Route
from pilotline.rules.plant import ALL_CAPABILITIES
from pilotline.rules.policy import ALWAYS, OfferingPolicy, WeeklySlot
from pilotline.rules.spec import MachineSpec, MappedState, PlantSpec, StateRule, ThresholdState
from pilotline.rules.states import DEFAULT_STATE_MAP, State

__all__ = [
    "INFLUX_TOKEN_ENV",
    "ConfigError",
    "ConfigIssue",
    "Defaults",
    "InfluxConfig",
    "LogConfig",
    "Machine",
    "OpcuaSource",
    "OwnerPolicy",
    "SiteConfig",
    "StateConfig",
    "StateName",
    "Zone",
    "load_config",
    "summarize",
]

INFLUX_TOKEN_ENV: Final = "PILOTLINE_INFLUX_TOKEN"  # noqa: S105 (a variable name, not a secret)
_MAX_FILE_BYTES: Final = 4 * 1024 * 1024
_MAX_SECONDS: Final = 10 * 365 * 86_400.0
_CROSS_CHECKED: Final = "pilotline.config.cross_checked"


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One mistake: where (``zones[0].machines[2].state.map``, 1-based line) and what."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line} " if self.line is not None else ""
        what = f"{self.path}: {self.message}" if self.path else self.message
        return f"{where}{what}"


class ConfigError(Exception):
    """A configuration that cannot be used; ``issues`` lists every mistake found."""

    def __init__(self, issues: Sequence[ConfigIssue], source: str | None = None) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        return "\n".join(_render_issue(issue, self.source) for issue in self.issues)

    def __str__(self) -> str:
        return self._render()


def _render_issue(issue: ConfigIssue, source: str | None) -> str:
    if source is None:
        return str(issue)
    where = f"{source}:{issue.line}" if issue.line is not None else source
    what = f"{issue.path}: {issue.message}" if issue.path else issue.message
    return f"{where} {what}"


# --------------------------------------------------------------------------- field types

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
    return value


def _reject_bool(value: Any) -> Any:
    # pydantic's lax mode reads True as 1.0; in YAML that is `yes`/`on`, always a slip.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


def _refuse_inline(secret: str, file_key: str, env: str | None) -> Callable[[Any], Any]:
    alternative = f", or set {env}" if env else ""

    def refuse(_value: Any) -> Any:
        raise ValueError(
            f"secrets are not accepted inline: put the {secret} in a file and set "
            f"{file_key}{alternative}"
        )

    return refuse


Id = Annotated[str, AfterValidator(_check_id)]
Signal = Annotated[str, AfterValidator(_check_signal)]
Seconds = Annotated[
    float, BeforeValidator(_reject_bool), Field(ge=0, le=_MAX_SECONDS, allow_inf_nan=False)
]
# At least a millisecond: these become positive integer milliseconds in the core.
PositiveSeconds = Annotated[
    float, BeforeValidator(_reject_bool), Field(ge=0.001, le=_MAX_SECONDS, allow_inf_nan=False)
]
Threshold = Annotated[float, BeforeValidator(_reject_bool), Field(allow_inf_nan=False)]
StateName = Literal["offline", "running", "idle", "down", "maintenance"]


def _dedupe(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _check_capability(value: str) -> str:
    if value == ALL_CAPABILITIES:
        raise ValueError(
            f"{ALL_CAPABILITIES!r} is reserved: it tags the zone-wide row of zone_capacity"
        )
    return value


Capability = Annotated[Id, AfterValidator(_check_capability)]


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InfluxConfig(_Model):
    """``influx:``: where points go besides the embedded store. The token never sits here."""

    url: str
    org: str = Field(min_length=1)
    bucket: str = Field(min_length=1)
    token_file: Path | None = None
    ca_file: Path | None = None
    """CA certificate(s) (PEM) an https:// server's certificate must chain to."""
    batch_size: int = Field(default=5000, ge=1, le=1_000_000)
    flush_interval_s: PositiveSeconds = 1.0
    timeout_s: PositiveSeconds = 10.0
    outbox_max_points: int = Field(default=5_000_000, ge=1_000)
    """Most lines the durable outbox keeps while InfluxDB is away (about 200-300 bytes each
    on disk); beyond it raw telemetry is dropped first, oldest first, then events."""
    inline_token: Annotated[
        None, BeforeValidator(_refuse_inline("token", "token_file", INFLUX_TOKEN_ENV))
    ] = Field(default=None, alias="token", exclude=True, repr=False)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "url must not carry credentials: put the token in a file and set "
                f"token_file, or set {INFLUX_TOKEN_ENV}"
            )
        if not parts.hostname:
            raise ValueError(f"url has no host: {url!r}")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError(f"url has an invalid port: {url!r}") from None
        return url

    @model_validator(mode="after")
    def _ca_needs_https(self) -> InfluxConfig:
        if self.ca_file is not None and urlsplit(self.url).scheme != "https":
            raise ValueError("ca_file is set but the url is http:// (no TLS): use https://")
        return self

    def token(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The token from ``token_file`` (preferred) or ``PILOTLINE_INFLUX_TOKEN``.

        None when neither is set (a store without authentication). Raises OSError if the
        file cannot be read; read on each call, so a rotated token is picked up.
        """
        if self.token_file is not None:
            return self.token_file.read_text(encoding="utf-8").strip()
        env = os.environ if environ is None else environ
        value = env.get(INFLUX_TOKEN_ENV)
        return value.strip() if value else None


class StateConfig(_Model):
    """``state:``: which signal gives the state, through a map or thresholds.

    Without ``map`` or thresholds, the signal goes through the default map alone (OPC
    40001-1, PackML, MTConnect and SEMI E10 names); a ``map`` is laid over those defaults.
    """

    signal: Signal
    map: dict[str, StateName] | None = None
    running_above: Threshold | None = None
    idle_below: Threshold | None = None

    @field_validator("map", mode="before")
    @classmethod
    def _map_keys(cls, value: Any) -> Any:
        # OPC UA and PackML enumerations arrive as integers, which the core looks up as text.
        if not isinstance(value, dict):
            return value
        out: dict[Any, Any] = {}
        for key, state in value.items():
            if isinstance(key, bool):
                raise ValueError(
                    f"key {str(key).lower()!r} is a boolean to YAML (yes/no/on/off/true/false "
                    "are): quote it, e.g. 'on': running"
                )
            out[str(key) if isinstance(key, int) else key] = state
        return out

    @model_validator(mode="after")
    def _one_rule(self) -> StateConfig:
        thresholds = (self.running_above, self.idle_below)
        if self.map is not None and thresholds != (None, None):
            raise ValueError("use either map or running_above/idle_below, not both")
        if (self.running_above is None) != (self.idle_below is None):
            raise ValueError("running_above and idle_below go together: set both")
        if (
            self.running_above is not None
            and self.idle_below is not None
            and self.idle_below > self.running_above
        ):
            raise ValueError(
                f"idle_below ({self.idle_below:g}) must not exceed running_above "
                f"({self.running_above:g})"
            )
        return self

    def rule(self) -> StateRule:
        """The core's rule: thresholds, or this map laid over ``DEFAULT_STATE_MAP``."""
        if self.running_above is not None and self.idle_below is not None:
            return ThresholdState(self.signal, self.running_above, self.idle_below)
        return _mapped_state(self.signal, tuple((self.map or {}).items()))


@functools.lru_cache(maxsize=1024)
def _mapped_state(signal: str, overrides: tuple[tuple[str, str], ...]) -> MappedState:
    """One (immutable) rule for every machine with the same signal and map: a copy of the
    default map per machine was ~0.9 KiB each, 9 MiB with 10,000 machines."""
    mapping: dict[str, State] = dict(DEFAULT_STATE_MAP)
    mapping.update({key: State(name) for key, name in overrides})
    return MappedState(signal, types.MappingProxyType(mapping))


class Defaults(_Model):
    """``defaults:``: timings every machine gets unless it sets its own."""

    debounce_s: Seconds = 20.0
    stale_after_s: PositiveSeconds = 60.0
    min_idle_s: Seconds = 900.0
    publish_interval_s: PositiveSeconds = 60.0


_DAY_NAMES: Final = {
    "mon": (0,), "tue": (1,), "wed": (2,), "thu": (3,), "fri": (4,), "sat": (5,), "sun": (6,),
    "weekdays": (0, 1, 2, 3, 4), "weekend": (5, 6), "daily": (0, 1, 2, 3, 4, 5, 6),
}
DayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun", "weekdays", "weekend", "daily"]


def _clock_time(value: Any) -> Any:
    """``"18:00"``; YAML 1.1 reads an unquoted 18:00 as the base-60 number 1080."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        value = f"{value // 60:02d}:{value % 60:02d}"
    if isinstance(value, str):
        hours, sep, minutes = value.partition(":")
        if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
            raise ValueError(f"a time of day is HH:MM, like \"18:00\", got {value!r}")
        if not (0 <= int(hours) <= 24 and int(minutes) < 60) or (
            int(hours) == 24 and int(minutes) != 0
        ):
            raise ValueError(f"{value!r} is not a time of day (00:00 to 24:00)")
        return f"{int(hours):02d}:{minutes}"
    return value


ClockTime = Annotated[str, BeforeValidator(_clock_time)]


class WeeklyHours(_Model):
    """``{days: [weekdays], from: "18:00", to: "06:00"}``: ``to`` at or before ``from`` runs
    into the next day; ``to: "24:00"`` is the end of the day."""

    days: list[DayName] = Field(min_length=1)
    from_: ClockTime = Field(alias="from")
    to: ClockTime

    def slot(self) -> WeeklySlot:
        days = frozenset(d for name in self.days for d in _DAY_NAMES[name])
        start = _time_of(self.from_)
        end = None if self.to == "24:00" else _time_of(self.to)
        return WeeklySlot(days, start if start is not None else dt_time(0), end)


def _time_of(text: str) -> dt_time | None:
    hours, minutes = (int(part) for part in text.split(":"))
    return None if hours == 24 else dt_time(hours, minutes)


class Blackout(_Model):
    """A period when nothing is offered (planned production, holidays); a time without an
    offset is the facility's local time."""

    from_: datetime = Field(alias="from")
    to: datetime
    reason: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Blackout:
        if self.to <= self.from_:
            raise ValueError("a blackout's `to` must come after its `from`")
        return self

    def interval(self, tz: tzinfo) -> tuple[int, int]:
        def ms(moment: datetime) -> int:
            local = moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)
            return round(local.timestamp() * 1000)

        return ms(self.from_), ms(self.to)


class Offering(_Model):
    """``offering:``: when an owner (or one machine) lets available idle time be offered."""

    weekly: list[WeeklyHours] = Field(default_factory=list)
    """Hours of the week when idle time may be offered; none listed: any time."""
    blackouts: list[Blackout] = Field(default_factory=list)
    min_idle_s: Seconds | None = None
    """Idle this long before it is offered (overrides defaults.min_idle_s)."""
    min_window_s: Seconds = 0.0
    """Offer only while the allowed hours still have this long to run."""

    def policy(self, tz: tzinfo) -> OfferingPolicy:
        return OfferingPolicy(
            tz=tz,
            weekly=tuple(hours.slot() for hours in self.weekly),
            blackouts=tuple(b.interval(tz) for b in self.blackouts),
            min_window_ms=_ms(self.min_window_s),
        )


def _zone_name(value: Any) -> Any:
    if isinstance(value, str):
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name like Europe/Paris or UTC"
            ) from None
    return value


class Machine(_Model):
    id: Id
    owner: Id
    capabilities: Annotated[list[Capability], AfterValidator(_dedupe)] = Field(default_factory=list)
    mqtt: MqttMachineSource | None = None
    opcua: OpcuaSource | None = None
    state: StateConfig
    debounce_s: Seconds | None = None
    stale_after_s: PositiveSeconds | None = None
    min_idle_s: Seconds | None = None
    publish_interval_s: PositiveSeconds | None = None
    offering: Offering | None = None
    """This machine's own offering policy, replacing its owner's."""

    @property
    def source(self) -> Literal["mqtt", "opcua"]:
        return "mqtt" if self.mqtt is not None else "opcua"

    def signals(self) -> tuple[str, ...]:
        """Signals this machine is known to deliver: its OPC UA nodes, or its state signal."""
        if self.opcua is not None:
            return tuple(self.opcua.nodes)
        return (self.state.signal,)

    def spec(
        self,
        zone: str,
        defaults: Defaults,
        owner_offering: Offering | None = None,
        tz: tzinfo = UTC,
    ) -> MachineSpec:
        def pick(own: float | None, default: float) -> int:
            return _ms(default if own is None else own)

        offering = self.offering or owner_offering
        min_idle_s = self.min_idle_s
        if min_idle_s is None and offering is not None:
            min_idle_s = offering.min_idle_s
        return MachineSpec(
            id=self.id,
            zone=zone,
            owner=self.owner,
            state=self.state.rule(),
            capabilities=tuple(self.capabilities),
            debounce_ms=pick(self.debounce_s, defaults.debounce_s),
            stale_after_ms=pick(self.stale_after_s, defaults.stale_after_s),
            min_idle_ms=pick(min_idle_s, defaults.min_idle_s),
            publish_interval_ms=pick(self.publish_interval_s, defaults.publish_interval_s),
            policy=offering.policy(tz) if offering is not None else ALWAYS,
        )


class Zone(_Model):
    id: Id
    machines: list[Machine] = Field(min_length=1)


class LogConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class OwnerPolicy(_Model):
    """``owners: {acme-optics: {...}}``: what an owner lets tenants see of its machines."""

    show_to_tenants: bool = False
    """Tenants see this owner's name beside its offered capacity (default: hidden)."""
    offering: Offering | None = None
    """When this owner's machines may be offered (default: whenever they are available)."""


def _check_api(value: str) -> str:
    host, port = _split_api(value)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def _split_api(value: str) -> tuple[str, int]:
    shape = "api must be host:port, like 127.0.0.1:8080 or [::1]:8080"
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{shape}, got {value!r}")
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"api port must be 1-65535, got {port_text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{shape}: {host!r} is not an IPv6 address") from None
    elif re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{shape}: {host!r} is not an IPv4 address") from None
    elif not _HOSTNAME_RE.fullmatch(host):
        raise ValueError(f"{shape}: {host!r} is not a host name or an address")
    return host, int(port_text)


# --------------------------------------------------------------------------- alerts

_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS: Final = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _duration_ms(value: Any) -> Any:
    """``"30s"``, ``"2m"``, ``"1h"``, ``"1h30m"``, ``"500ms"`` -> milliseconds."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"a duration needs a unit, like 30s, 2m or 1h, got {value!r}"
        )
    text = value.strip()
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"not a duration (like 30s, 2m, 1h or 1h30m): {value!r}")
    if total > _MAX_SECONDS * 1000:
        raise ValueError(f"duration {value!r} is too long")
    return round(total)


def duration_ms(text: str) -> int:
    """A duration written with units, in milliseconds; ``ValueError`` if it is not one."""
    return int(_duration_ms(text))


DurationMs = Annotated[int, BeforeValidator(_duration_ms)]
"""A duration written with units (``30s``, ``2m``, ``1h``), held in milliseconds."""


def _check_template(value: str) -> str:
    validate_template(value)
    return value


class AlertRuleConfig(_Model):
    """One ``alerts.rules`` entry: exactly one of ``state``, ``signal`` (with ``above`` or
    ``below``), ``offered_idle_for`` and ``collector: disconnected`` (one alert per collector,
    which holds back its machines' offline and state alerts while it is down).
    ``suppress_in_maintenance`` (default true): a signal, capacity or state rule is silent
    while the machine is in maintenance (see rules/alerts.py)."""

    name: Id
    severity: Literal["info", "warning", "critical"] = "warning"
    message: Annotated[str, AfterValidator(_check_template)] = (
        "{rule}: {machine} ({zone}) {status}"
    )
    state: StateName | None = None
    signal: Signal | None = None
    above: Threshold | None = None
    below: Threshold | None = None
    clear: Threshold | None = None
    offered_idle_for: DurationMs | None = None
    collector: Literal["disconnected"] | None = None
    for_: DurationMs = Field(default=0, alias="for")
    machines: list[Id] | None = None
    zones: list[Id] | None = None
    suppress_in_maintenance: bool = True

    @field_validator("collector", mode="before")
    @classmethod
    def _collector_disconnected(cls, value: Any) -> Any:
        if value is not None and value != "disconnected":
            raise ValueError(
                f"a collector rule alerts while the collector is disconnected: write "
                f"collector: disconnected (got {value!r})"
            )
        return value

    @model_validator(mode="after")
    def _one_condition(self) -> AlertRuleConfig:
        kinds = [
            k
            for k in ("state", "signal", "offered_idle_for", "collector")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one condition: state, signal (with above or below), "
                "offered_idle_for or collector"
                f"{'' if not kinds else ', not ' + ' and '.join(kinds)}"
            )
        if "suppress_in_maintenance" in self.model_fields_set and (
            self.collector is not None or self.state in ("offline", "maintenance")
        ):
            raise ValueError(
                "suppress_in_maintenance only goes with signal, offered_idle_for and state "
                "rules other than offline and maintenance"
            )
        if self.signal is None:
            extra = [k for k in ("above", "below", "clear") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)} only go with signal:")
        elif (self.above is None) == (self.below is None):
            raise ValueError("a signal rule needs exactly one of above and below")
        elif self.clear is not None:
            if self.above is not None and self.clear > self.above:
                raise ValueError(
                    f"clear ({self.clear:g}) must not exceed above ({self.above:g})"
                )
            if self.below is not None and self.clear < self.below:
                raise ValueError(f"clear ({self.clear:g}) must not be under below ({self.below:g})")
        if self.offered_idle_for is not None and self.for_:
            raise ValueError("offered_idle_for is the rule's duration: drop for:")
        return self

    def rule(self) -> AlertRule:
        condition: Condition
        if self.state == "offline":
            condition = OfflineCondition(self.for_)
        elif self.state is not None:
            condition = StateCondition(State(self.state), self.for_)
        elif self.signal is not None:
            condition = SignalCondition(self.signal, self.above, self.below, self.clear, self.for_)
        elif self.collector is not None:
            condition = CollectorCondition(self.for_)
        else:
            assert self.offered_idle_for is not None
            condition = CapacityCondition(self.offered_idle_for)
        return AlertRule(
            self.name,
            self.severity,
            self.message,
            condition,
            frozenset(self.machines) if self.machines is not None else None,
            frozenset(self.zones) if self.zones is not None else None,
            suppress_in_maintenance=self.suppress_in_maintenance,
        )


SEVERITIES: Final = ("info", "warning", "critical")


class _ChannelConfig(_Model):
    """What every alert channel has (``alerts.webhooks``, ``alerts.email``, ``alerts.mqtt``):
    a ``name`` unique across all of them (it keys the channel's rows in the store), the least
    severity it wants, and the zones it serves (None: all)."""

    name: Id
    min_severity: Literal["info", "warning", "critical"] = "info"
    zones: list[Id] | None = None

    def wants(self, severity: str) -> bool:
        return SEVERITIES.index(severity) >= SEVERITIES.index(self.min_severity)

    def route(self) -> Route:
        """What the dispatcher (rules/dispatch.py) sends to this channel."""
        zones = frozenset(self.zones) if self.zones is not None else None
        return Route(self.name, self.min_severity, zones)


class WebhookConfig(_ChannelConfig):
    """One ``alerts.webhooks`` entry: an HTTP(S) endpoint that receives each grouped alert
    notification, as JSON (``format: json``) or as Slack/Mattermost text (``format: slack``).
    A URL that carries a secret (a Slack hook) goes in ``url_file``."""

    url: str | None = None
    url_file: Path | None = None
    format: Literal["json", "slack"] = "json"
    timeout_s: PositiveSeconds = 10.0

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        return None if url is None else check_webhook_url(url)

    @model_validator(mode="after")
    def _one_url(self) -> WebhookConfig:
        if (self.url is None) == (self.url_file is None):
            raise ValueError("give exactly one of url and url_file")
        return self

    def resolved_url(self) -> str:
        """``url``, or the first line of ``url_file`` (read on each call, so a rotated URL is
        picked up). Raises OSError if the file cannot be read, ValueError if it is no URL."""
        if self.url is not None:
            return self.url
        assert self.url_file is not None
        return check_webhook_url(self.url_file.read_text(encoding="utf-8").strip())


def check_webhook_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("a webhook url must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("a webhook url has no host")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("a webhook url has an invalid port") from None
    return url


def _check_address(value: str) -> str:
    # Header injection and typos: one plain address (optionally "Name <a@b>"), no line breaks.
    _, address = parseaddr(value)
    local, _, domain = address.rpartition("@")
    if (
        any(ch in value for ch in "\r\n")
        or not local
        or not domain
        or any(ch.isspace() for ch in address)
    ):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


def _check_host(value: str) -> str:
    if not value or any(ch.isspace() or ch in "/@" for ch in value):
        raise ValueError(f"{value!r} is not a host name or address (no scheme, no port)")
    return value


Address = Annotated[str, AfterValidator(_check_address)]


class EmailConfig(_ChannelConfig):
    """One ``alerts.email`` entry: an SMTP submission server that mails each grouped
    notification to ``to``. STARTTLS by default (port 587), ``tls: true`` for implicit TLS
    (port 465); credentials only over TLS, the password from ``password_file``."""

    host: Annotated[str, AfterValidator(_check_host)]
    port: int | None = Field(default=None, ge=1, le=65_535)
    """Default: 465 with ``tls: true``, else 587."""
    starttls: bool = True
    tls: bool = False
    """Implicit TLS from the first byte (SMTPS, port 465) instead of STARTTLS."""
    username: str | None = Field(default=None, min_length=1)
    password_file: Path | None = None
    ca_file: Path | None = None
    """CA certificate(s) (PEM) the server's certificate must chain to; default: the system's."""
    sender: Address = Field(alias="from")
    to: list[Address] = Field(min_length=1)
    timeout_s: PositiveSeconds = 30.0
    inline_password: Annotated[
        None, BeforeValidator(_refuse_inline("password", "password_file", None))
    ] = Field(default=None, alias="password", exclude=True, repr=False)

    @model_validator(mode="after")
    def _check_security(self) -> EmailConfig:
        if self.tls and self.starttls and "starttls" in self.model_fields_set:
            raise ValueError("tls: true is implicit TLS: drop starttls (it is for port 587)")
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together: set both, or neither")
        if not self.encrypted:
            if self.username is not None:
                raise ValueError(
                    "credentials are only sent over TLS: set starttls: true or tls: true"
                )
            if self.ca_file is not None:
                raise ValueError("ca_file is set but starttls and tls are both off")
        return self

    @property
    def encrypted(self) -> bool:
        return self.tls or self.starttls

    @property
    def smtp_port(self) -> int:
        return self.port if self.port is not None else (465 if self.tls else 587)

    def password(self) -> str | None:
        """The password from ``password_file``, read on each call (a rotated one is picked
        up without a restart). Raises OSError if the file cannot be read."""
        if self.password_file is None:
            return None
        return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")


def _check_topic_prefix(value: str) -> str:
    if not value or value.startswith("/") or value.endswith("/"):
        raise ValueError(f"{value!r}: a topic prefix is non-empty, without a leading or "
                         "trailing /")
    if any(ch in value for ch in "+#\x00"):
        raise ValueError(f"{value!r}: a topic prefix has no wildcards (+, #) or NUL")
    return value


class AlertMqttConfig(_ChannelConfig):
    """One ``alerts.mqtt`` entry: publishes to the site's broker (the ``mqtt:`` section) with
    its own client, QoS 1: each notification on ``<topic_prefix>/notifications`` and each
    alert's current state, retained, on ``<topic_prefix>/state/<rule>/<machine>``."""

    topic_prefix: Annotated[str, AfterValidator(_check_topic_prefix)] | None = None
    """Default: ``pilotline/<site>/alerts``."""
    timeout_s: PositiveSeconds = 10.0
    """How long to wait for the connection and for the broker's acknowledgements."""

    def prefix(self, site: str) -> str:
        return self.topic_prefix or f"pilotline/{site}/alerts"


AlertChannelConfig = WebhookConfig | EmailConfig | AlertMqttConfig


GroupLabel = Literal["rule", "zone", "severity", "machine", "owner"]  # dispatch.GROUP_LABELS


def _default_group_by() -> list[GroupLabel]:
    return ["rule", "zone"]


class AlertsConfig(_Model):
    """``alerts:``: the rules (see rules/alerts.py for their lifecycle) and the channels that
    are notified of them (webhooks, e-mail, MQTT: see gateway/notify/)."""

    rules: list[AlertRuleConfig] = Field(default_factory=list)
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    email: list[EmailConfig] = Field(default_factory=list)
    mqtt: list[AlertMqttConfig] = Field(default_factory=list)
    # Notification policy (rules/dispatch.py): alerts of the same group_by values make one
    # notification per channel, first group_wait after the group's first alert, then at most
    # once per group_interval; a firing alert not acknowledged is sent again every
    # repeat_interval.
    group_by: list[GroupLabel] = Field(default_factory=_default_group_by)
    group_wait: DurationMs = 10_000
    group_interval: DurationMs = 60_000
    repeat_interval: DurationMs = 4 * 3_600_000

    @field_validator("group_by")
    @classmethod
    def _unique_labels(cls, labels: list[str]) -> list[str]:
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"label {twice[0]!r} is listed twice")
        return labels

    @field_validator("group_interval")
    @classmethod
    def _positive_interval(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("group_interval must be positive")
        return value

    @field_validator("repeat_interval")
    @classmethod
    def _repeat_after_interval(cls, value: int, info: ValidationInfo) -> int:
        interval = info.data.get("group_interval")
        if interval is not None and value < interval:
            raise ValueError(
                f"repeat_interval ({value / 1000:g} s) must not be shorter than "
                f"group_interval ({interval / 1000:g} s)"
            )
        return value

    def channels(self) -> list[AlertChannelConfig]:
        """Every channel, webhooks then e-mail then MQTT, each in file order."""
        return [*self.webhooks, *self.email, *self.mqtt]

    def routes(self) -> tuple[Route, ...]:
        return tuple(channel.route() for channel in self.channels())

    def dispatcher(self) -> Dispatcher:
        """The notification policy core for these channels and settings."""
        return Dispatcher(
            self.routes(),
            group_by=tuple(self.group_by),
            group_wait_ms=self.group_wait,
            group_interval_ms=self.group_interval,
            repeat_interval_ms=self.repeat_interval,
        )


class SiteConfig(_Model):
    """The whole file."""

    site: Id
    mqtt: MqttBrokerConfig | None = None
    influx: InfluxConfig | None = None
    store: Path = Path("./var/pilotline.db")
    api: Annotated[str, AfterValidator(_check_api)] = "127.0.0.1:8080"
    defaults: Defaults = Field(default_factory=Defaults)
    zones: list[Zone] = Field(min_length=1)
    log: LogConfig = Field(default_factory=LogConfig)
    owners: dict[Id, OwnerPolicy] = Field(default_factory=dict)
    timezone: Annotated[str, BeforeValidator(_zone_name)] = "UTC"
    """The facility's IANA time zone: offering hours and blackouts are in it."""
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    shard: Annotated[str | None, BeforeValidator(check_shard_text)] = None
    """``K/N``: this gateway owns the K-th of N shares of the machines (gateway/shard.py,
    docs/scaling.md); ``pilotline run --shard K/N`` overrides it."""
    shard_by: ShardBy = "machine"
    """What a share is made of: machines (an even spread, even in one large zone; zone-level
    points then carry a ``shard`` tag), or whole zones (zone-level points stay whole)."""
    _applied_shard: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _site_checks(self, info: ValidationInfo) -> SiteConfig:
        # load_config runs these on the raw data itself, to report them with their lines
        # and alongside field errors; here they guard configurations built in code.
        if isinstance(info.context, dict) and info.context.get(_CROSS_CHECKED):
            return self
        found = _cross_checks(self.model_dump(by_alias=True))
        if found:
            raise ValueError("; ".join(f"{_format_loc(loc)}: {msg}" for loc, msg in found))
        return self

    @property
    def api_host(self) -> str:
        return _split_api(self.api)[0]

    @property
    def api_port(self) -> int:
        return _split_api(self.api)[1]

    @property
    def applied_shard(self) -> str:
        """``"K/N"`` once ``gateway.shard.restrict`` cut this configuration to one shard."""
        return self._applied_shard

    @property
    def shard_tag(self) -> str:
        """The ``shard`` tag of this gateway's zone-level points, ``""`` for none."""
        return zone_shard_tag(self._applied_shard, self.shard_by)

    def machines(self) -> list[tuple[Zone, Machine]]:
        return [(zone, machine) for zone in self.zones for machine in zone.machines]

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def plant_spec(self) -> PlantSpec:
        tz = self.tz

        def offering_of(owner: str) -> Offering | None:
            policy = self.owners.get(owner)
            return policy.offering if policy is not None else None

        return PlantSpec(
            machines=tuple(
                m.spec(zone.id, self.defaults, offering_of(m.owner), tz)
                for zone, m in self.machines()
            ),
            publish_interval_ms=_ms(self.defaults.publish_interval_s),
        )


    def alert_rules(self) -> tuple[AlertRule, ...]:
        return tuple(r.rule() for r in self.alerts.rules)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


# --------------------------------------------------------------------------- site checks

Loc = tuple[str | int, ...]


def _cross_checks(data: object) -> list[tuple[Loc, str]]:
    """Checks across objects, on plain data that may be partly wrong (those parts are skipped)."""
    found: list[tuple[Loc, str]] = []
    if not isinstance(data, dict):
        return found
    has_broker = data.get("mqtt") is not None
    zone_ids: dict[str, Loc] = {}
    machine_ids: dict[str, Loc] = {}
    topics: dict[str, tuple[Loc, str]] = {}
    endpoints: dict[str, tuple[str, dict[str, object]]] = {}
    zones = data.get("zones")
    for zi, zone in enumerate(zones if isinstance(zones, list) else []):
        if not isinstance(zone, dict):
            continue
        _unique(zone.get("id"), ("zones", zi), zone_ids, "zone id", found)
        machines = zone.get("machines")
        for mi, machine in enumerate(machines if isinstance(machines, list) else []):
            if not isinstance(machine, dict):
                continue
            here: Loc = ("zones", zi, "machines", mi)
            _unique(machine.get("id"), here, machine_ids, "machine id", found)
            mqtt, opcua = machine.get("mqtt"), machine.get("opcua")
            if mqtt is None and opcua is None:
                found.append((here, "no source: give the machine an mqtt: or an opcua: section"))
            elif mqtt is not None and opcua is not None:
                found.append((here, "both mqtt: and opcua: are set: a machine has one source"))
            if mqtt is not None and not has_broker:
                found.append(
                    ((*here, "mqtt"), "an MQTT machine needs the site's mqtt: broker section")
                )
            if isinstance(mqtt, dict):
                topic = mqtt.get("topic")
                if isinstance(topic, str):
                    if topic in topics:
                        other, other_id = topics[topic]
                        found.append(
                            (
                                (*here, "mqtt", "topic"),
                                f"topic {topic!r} is already the topic of {other_id} "
                                f"({_format_loc(other)}): one topic per machine",
                            )
                        )
                    else:
                        topics[topic] = (here, str(machine.get("id")))
            if isinstance(opcua, dict) and isinstance(opcua.get("endpoint"), str):
                # Machines on one endpoint share one connection, so one set of its settings.
                first_id, first = endpoints.setdefault(
                    opcua["endpoint"], (str(machine.get("id")), opcua)
                )
                for key in CONNECTION_FIELDS:
                    if first is not opcua and opcua.get(key) != first.get(key):
                        found.append(
                            (
                                (*here, "opcua", key),
                                f"{opcua.get(key)!r} differs from {first.get(key)!r} of "
                                f"{first_id} on the same endpoint: machines on one endpoint "
                                "share its connection and its settings",
                            )
                        )
            state = machine.get("state")
            if isinstance(opcua, dict) and isinstance(state, dict):
                nodes, signal = opcua.get("nodes"), state.get("signal")
                if (
                    isinstance(nodes, dict)
                    and nodes
                    and isinstance(signal, str)
                    and (signal not in nodes)
                ):
                    found.append(
                        (
                            (*here, "state", "signal"),
                            f"{signal!r} is not one of opcua.nodes "
                            f"({', '.join(str(k) for k in nodes)})",
                        )
                    )
    _alert_checks(data, zone_ids, machine_ids, found)
    owners = data.get("owners")
    for owner in owners if isinstance(owners, dict) else {}:
        machine_owners = {
            m.get("owner")
            for z in (zones if isinstance(zones, list) else [])
            if isinstance(z, dict) and isinstance(z.get("machines"), list)
            for m in z["machines"]
            if isinstance(m, dict)
        }
        if isinstance(owner, str) and owner not in machine_owners:
            found.append(
                (("owners", owner), f"no machine has the owner {owner!r}: a typo? "
                 f"owners of machines: {', '.join(sorted(str(o) for o in machine_owners))}")
            )
    return found


def _alert_checks(
    data: dict[Any, Any],
    zone_ids: dict[str, Loc],
    machine_ids: dict[str, Loc],
    found: list[tuple[Loc, str]],
) -> None:
    """Alert rule names are unique; rules' ``machines:`` and ``zones:`` exist; channels are
    checked by ``_channel_checks``."""
    alerts = data.get("alerts")
    if isinstance(alerts, dict):
        _channel_checks(alerts, data.get("mqtt") is not None, zone_ids, found)
    rules = alerts.get("rules") if isinstance(alerts, dict) else None
    names: dict[str, Loc] = {}
    for ri, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict):
            continue
        here: Loc = ("alerts", "rules", ri)
        name = rule.get("name")
        if isinstance(name, str):
            if name in names:
                also = _format_loc(names[name])
                found.append(((*here, "name"), f"duplicate alert rule {name!r}: also {also}"))
            else:
                names[name] = here
        for key, known in (("machines", machine_ids), ("zones", zone_ids)):
            listed = rule.get(key)
            for i, item in enumerate(listed if isinstance(listed, list) else []):
                if isinstance(item, str) and item not in known:
                    close = difflib.get_close_matches(item, list(known), n=1)
                    hint = f": did you mean {close[0]!r}?" if close else ""
                    found.append(((*here, key, i), f"no {key[:-1]} {item!r}{hint}"))


ALERT_CHANNEL_KINDS: Final = ("webhooks", "email", "mqtt")
"""The lists under ``alerts:`` that hold notification channels."""


def _channel_checks(
    alerts: dict[Any, Any],
    has_broker: bool,
    zone_ids: dict[str, Loc],
    found: list[tuple[Loc, str]],
) -> None:
    """Channel names are unique across all kinds (each keys its rows in the store), their
    ``zones:`` exist, and an MQTT channel has the site's broker to publish to."""
    names: dict[str, Loc] = {}
    for kind in ALERT_CHANNEL_KINDS:
        entries = alerts.get(kind)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            if not isinstance(entry, dict):
                continue
            here: Loc = ("alerts", kind, i)
            name = entry.get("name")
            if isinstance(name, str):
                if name in names:
                    also = _format_loc(names[name])
                    found.append(
                        ((*here, "name"), f"duplicate channel name {name!r}: also {also}")
                    )
                else:
                    names[name] = here
            zones = entry.get("zones")
            for zi, zone in enumerate(zones if isinstance(zones, list) else []):
                if isinstance(zone, str) and zone not in zone_ids:
                    close = difflib.get_close_matches(zone, list(zone_ids), n=1)
                    hint = f": did you mean {close[0]!r}?" if close else ""
                    found.append(((*here, "zones", zi), f"no zone {zone!r}{hint}"))
            if kind == "mqtt" and not has_broker:
                found.append(
                    (here, "an MQTT alert channel publishes to the site's mqtt: broker: "
                     "add an mqtt: section")
                )


def _unique(
    value: object, here: Loc, seen: dict[str, Loc], what: str, found: list[tuple[Loc, str]]
) -> None:
    if not isinstance(value, str):
        return
    if value in seen:
        also = _format_loc(seen[value])
        found.append(((*here, "id"), f"duplicate {what} {value!r}: also {also}"))
    else:
        seen[value] = here


# --------------------------------------------------------------------------- loading


def load_config(path: Path, *, check_files: bool = True) -> SiteConfig:
    """Read, validate and resolve a site configuration; ``ConfigError`` lists every mistake.

    ``check_files=False`` skips checking that secret and certificate files exist (to check a
    production file on another machine).
    """
    source = str(path)
    text = _read(path, source)
    issues: list[ConfigIssue] = []
    data = _quick_data(text)
    if data is None:  # not the plain subset (or a mistake): compose the node tree
        root, data = _compose(text, source)
        issues.extend(_duplicate_keys(root))
        if not isinstance(data, dict):
            kind = "empty" if data is None else f"a {_kind(data)}"
            raise ConfigError(
                [
                    *issues,
                    ConfigIssue(
                        "",
                        _line(root),
                        f"the file is {kind}: expected a mapping "
                        "with site:, zones: and the other sections",
                    ),
                ],
                source,
            )
        del root  # see _Tree: not kept while the models are built
    tree = _Tree(text, source)
    config: SiteConfig | None = None
    try:
        config = SiteConfig.model_validate(data, context={_CROSS_CHECKED: True})
    except ValidationError as exc:
        issues.extend(_validation_issues(exc, tree.root))
    issues.extend(_issue(tree.root, loc, msg) for loc, msg in _cross_checks(data))
    base = path.absolute().parent
    if check_files:
        issues.extend(_file_issues(data, tree, base))
    if issues or config is None:
        raise ConfigError(_ordered(issues), source)
    del data
    config = _resolve_paths(config, base)
    _share_fields_sets(config)
    return config


def _share_fields_sets(config: SiteConfig) -> None:
    """Let equal ``model_fields_set`` of frozen models be one set object.

    pydantic keeps a set of the fields given for every model instance: 1.1 KiB of a
    machine's 2.3 KiB of models (11 MiB with 10,000 machines), the same few sets over and
    over. A frozen model never changes its set (``model_copy`` copies it first), so sharing
    is safe; models that are not frozen keep their own.
    """
    shared: dict[frozenset[str], set[str]] = {}
    stack: list[BaseModel] = [config]
    while stack:
        model = stack.pop()
        if model.model_config.get("frozen"):
            own = model.__pydantic_fields_set__
            own = shared.setdefault(frozenset(own), own)
            object.__setattr__(model, "__pydantic_fields_set__", own)
        for value in model.__dict__.values():
            if isinstance(value, BaseModel):
                stack.append(value)
            elif isinstance(value, list | tuple):
                stack.extend(v for v in value if isinstance(v, BaseModel))


def _read(path: Path, source: str) -> str:
    try:
        with path.open("rb") as stream:
            raw = stream.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [ConfigIssue("", None, f"cannot read the file: {reason}")], source
        ) from None
    if len(raw) > _MAX_FILE_BYTES:
        raise ConfigError(
            [ConfigIssue("", None, f"the file is larger than {_MAX_FILE_BYTES} bytes")], source
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue("", line, "the file is not UTF-8 text")], source) from None


class _Tree:
    """The YAML node tree, only to give issues their lines, composed when first asked for.

    A node tree keeps two marks for every key and value (about 6 KiB per machine with
    libyaml, 10 KiB with the pure loader): with 10,000 machines, holding it while pydantic
    builds the models was most of the peak of a gateway's start. A good file never needs it.
    """

    def __init__(self, text: str, source: str) -> None:
        self._text = text
        self._source = source

    @functools.cached_property
    def root(self) -> yaml.Node | None:
        return _compose(self._text, self._source)[0]


_CSafeLoader: Final[Any] = getattr(yaml, "CSafeLoader", None)  # None without libyaml
_NON_PRINTABLE: Final = yaml.reader.Reader.NON_PRINTABLE


def _compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for lines) and the data constructed from that same tree.

    libyaml (``CSafeLoader``) composes it about six times faster than the pure loader, with
    the same marks. Whatever libyaml refuses is composed again by the pure loader, so
    mistakes are reported in its words, at its lines, as before.
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
    """The file leaves the plain subset ``_quick_data`` reads: take the full path."""


_PLAIN_SCALAR_TAGS: Final = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "str", "timestamp")
)
_MAP_TAG: Final = "tag:yaml.org,2002:map"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"


def _quick_data(text: str) -> dict[str, Any] | None:
    """The file's data read straight from libyaml's events, with no node tree; None when the
    file is not a mapping of plain YAML (anchors, aliases, merge keys, explicit tags, complex
    or duplicate keys), is not YAML at all, or libyaml is missing: ``_compose`` reads those.

    Scalars are resolved and constructed by PyYAML's own resolver and ``SafeConstructor``,
    mappings and sequences are dicts and lists, as ``_compose`` would build them. Keeping no
    node (and so no mark) per key and value is what makes a 10,000-machine file cheap to read.
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


def _ordered(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: (i.line is None, i.line or 0))


_SECRET_FILE_KEYS: Final = (
    "password_file",
    "token_file",
    "ca_file",
    "cert_file",
    "key_file",
    "certificate_file",
    "private_key_file",
    "server_certificate_file",
    "url_file",
)


def _file_issues(data: dict[str, Any], tree: _Tree, base: Path) -> list[ConfigIssue]:
    """Files the gateway will read secrets or certificates from must exist (not read here)."""
    sections: list[tuple[Loc, Any]] = [
        (("mqtt",), data.get("mqtt")),
        (("influx",), data.get("influx")),
    ]
    zones = data.get("zones")
    for zi, zone in enumerate(zones if isinstance(zones, list) else []):
        machines = zone.get("machines") if isinstance(zone, dict) else None
        for mi, machine in enumerate(machines if isinstance(machines, list) else []):
            if isinstance(machine, dict):
                sections.append((("zones", zi, "machines", mi, "opcua"), machine.get("opcua")))
    alerts = data.get("alerts")
    for kind in ALERT_CHANNEL_KINDS:
        entries = alerts.get(kind) if isinstance(alerts, dict) else None
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            sections.append((("alerts", kind, i), entry))
    issues = []
    for loc, section in sections:
        if not isinstance(section, dict):
            continue
        for key in _SECRET_FILE_KEYS:
            value = section.get(key)
            if not isinstance(value, str) or not value:
                continue
            file = base / value
            if not file.exists():
                problem = f"file not found: {file}"
            elif not file.is_file():
                problem = f"not a file: {file}"
            elif not os.access(file, os.R_OK):
                problem = f"file not readable: {file}"
            else:
                continue
            issues.append(_issue(tree.root, (*loc, key), problem))
    return issues


M = TypeVar("M", bound=BaseModel)


def _resolve_paths(model: M, base: Path) -> M:
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
        return _resolve_paths(value, base)
    if isinstance(value, list):
        items = [_resolve_value(item, base) for item in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


# --------------------------------------------------------------------------- issues from pydantic


def _validation_issues(exc: ValidationError, root: yaml.Node | None) -> list[ConfigIssue]:
    issues = []
    for error in exc.errors(include_url=False):
        loc: Loc = tuple(error["loc"])
        message = _message(error, loc)
        if MQTT_INLINE_SECRET_MESSAGE in message and _node_at(root, (*loc, "password")) is not None:
            loc = (*loc, "password")
        issues.append(_issue(root, loc, message))
    return issues


def _message(error: Mapping[str, Any], loc: Loc) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden" and loc:
        return _unknown_key(str(loc[-1]), loc[:-1])
    if kind == "missing":
        return "required key is missing"
    if kind in ("value_error", "assertion_error"):
        ctx = error.get("ctx") or {}
        return str(ctx.get("error", error["msg"]))
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, got {_kind(value)}"
    if kind == "list_type":
        return f"expected a list, got {_kind(value)}"
    message = str(error["msg"])
    if loc and loc[-1] == "[key]":
        message = f"key {value!r}: {message}"
    elif kind == "string_type" and isinstance(value, bool | int | float):
        message += f", got {value!r}: YAML read it as {_a(_kind(value))}, quote it"
    elif isinstance(value, str | int | float | bool) and len(repr(value)) <= 80:
        message += f", got {value!r}"
    return message


def _unknown_key(key: str, parent: Loc) -> str:
    model = _model_at(parent)
    if model is None:
        return f"unknown key {key!r}"
    allowed = [
        field.alias or name for name, field in model.model_fields.items() if not field.exclude
    ]
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"allowed here: {', '.join(allowed)}"
    return f"unknown key {key!r}: {hint}"


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` (for its allowed keys)."""
    current: Any = SiteConfig
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next(
                (f for n, f in current.model_fields.items() if (f.alias or n) == part), None
            )
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) is list and isinstance(part, int):
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _unwrap(tp: Any) -> Any:
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


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def _kind(value: object) -> str:
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


# --------------------------------------------------------------------------- paths and lines

_SIMPLE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
# pydantic-core schema tags that can appear in a loc (unions, validators), never user keys.
_LOC_TAG_RE: Final = re.compile(r"[a-z][a-z0-9-]*\[.*\]", re.DOTALL)
_LOC_TAGS: Final = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "literal"})


def _issue(root: yaml.Node | None, loc: Loc, message: str) -> ConfigIssue:
    path, line = _locate(root, loc)
    return ConfigIssue(path, line, message)


def _format_loc(loc: Loc) -> str:
    return _locate(None, loc)[0]


def _locate(root: yaml.Node | None, loc: Loc) -> tuple[str, int | None]:
    """``zones[0].machines[2].state.map`` for a pydantic loc, and the line it starts at.

    Walks the YAML node tree alongside the loc: a mapping key gives the key's own line (a
    missing key its mapping's), a list index the item's. Schema tags are dropped.
    """
    node = root
    line = _line(root)
    text = ""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = _find_key(node, part)
            if pair is not None:
                text += _key_text(part, text)
                line = _line(pair[0])
                node = pair[1]
                continue
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            text += f"[{part}]"
            node = node.value[part]
            line = _line(node)
            continue
        if isinstance(part, str) and (part in _LOC_TAGS or _LOC_TAG_RE.fullmatch(part)):
            continue
        node = None
        if part == "[key]":
            continue
        text += f"[{part}]" if isinstance(part, int) else _key_text(part, text)
    return text, line


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


_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


def _node_at(root: yaml.Node | None, loc: Loc) -> yaml.Node | None:
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = _find_key(node, part)
            node = pair[1] if pair is not None else None
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if 0 <= part < len(node.value) else None
        else:
            return None
    return node


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _duplicate_keys(root: yaml.Node | None) -> Iterator[ConfigIssue]:
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
                        _line(key),
                        f"duplicate key {key.value!r} (first at line {first[key.value]})",
                    )
                else:
                    first[key.value] = _line(key)
                stack.append((value, here))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))


# --------------------------------------------------------------------------- summary


def summarize(config: SiteConfig) -> str:
    """A few lines for ``pilotline check``: the site, each zone's machines, the outputs."""
    pairs = config.machines()
    by_source = {kind: sum(m.source == kind for _, m in pairs) for kind in ("mqtt", "opcua")}
    sources = ", ".join(f"{n} {kind}" for kind, n in by_source.items() if n)
    lines = [
        f"site {config.site}: {_plural(len(config.zones), 'zone')}, "
        f"{_plural(len(pairs), 'machine')} ({sources})"
    ]
    for zone in config.zones:
        label = f"  {zone.id}: "
        for i, machine in enumerate(zone.machines):
            prefix = label if i == 0 else " " * len(label)
            capabilities = ", ".join(machine.capabilities) or "(no capabilities)"
            lines.append(
                f"{prefix}{machine.id} [{machine.source}: {', '.join(machine.signals())}] "
                f"{capabilities}"
            )
    if config.mqtt is not None:
        lines.append(f"  mqtt broker {config.mqtt.url}")
    if config.influx is not None:
        lines.append(
            f"  influx {config.influx.url} (org {config.influx.org}, bucket {config.influx.bucket})"
        )
    alerts = config.alerts
    if alerts.rules or alerts.channels():
        kinds = {WebhookConfig: "webhook", EmailConfig: "e-mail", AlertMqttConfig: "mqtt"}
        channels = ", ".join(
            f"{c.name} ({kinds.get(type(c), 'channel')}, {c.min_severity}+"
            f"{', zones ' + ' '.join(c.zones) if c.zones else ''})"
            for c in alerts.channels()
        )
        lines.append(
            f"  alerts: {_plural(len(alerts.rules), 'rule')} "
            f"({', '.join(r.name for r in alerts.rules) or 'none'}); "
            f"channels: {channels or 'none (the alert measurement and /api/alerts only)'}"
        )
    lines.append(f"  store {config.store}")
    lines.append(f"  api {config.api}")
    return "\n".join(lines)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
