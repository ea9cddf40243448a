"""``alerts:``: the alert rules (their lifecycle is the core's, rules/alerts/), the
notification channels (each channel's configuration is its own, in notify/<channel>/config.py)
and the notification policy (rules/dispatch/)."""

from __future__ import annotations

import difflib
import string
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from pilotline.collectors.fields import Id, Model, Signal, Threshold
from pilotline.gateway.config.fields import DurationMs, StateName, duration_default
from pilotline.gateway.config.locate import Loc, format_loc
from pilotline.gateway.notify.config import Severity
from pilotline.gateway.notify.email.config import EmailConfig
from pilotline.gateway.notify.mqtt.config import AlertMqttConfig
from pilotline.gateway.notify.webhook.config import WebhookConfig
from pilotline.rules.alerts import (
    AlertRule,
    CapacityCondition,
    CollectorCondition,
    Condition,
    InterlockCondition,
    OfflineCondition,
    SignalCondition,
    StateCondition,
    validate_template,
)
from pilotline.rules.dispatch import GROUP_LABELS, Dispatcher, Route
from pilotline.rules.labels import SEVERITIES, at_least
from pilotline.rules.states import State

__all__ = [
    "ALERT_CHANNEL_KINDS",
    "AlertChannelConfig",
    "AlertRuleConfig",
    "AlertsConfig",
    "alert_checks",
]

# The core's label names, as a type pydantic validates (see notify.config.Severity).
if TYPE_CHECKING:
    GroupLabel = str
else:
    GroupLabel = Literal[GROUP_LABELS]


def _check_template(value: str) -> str:
    validate_template(value)
    return value


class AlertRuleConfig(Model):
    """One ``alerts.rules`` entry: exactly one of ``state``, ``signal`` (with ``above`` or
    ``below``), ``offered_idle_for``, ``collector: disconnected`` (one alert per collector,
    which holds back its machines' offline and state alerts while it is down) and
    ``interlock: unknown`` (a machine whose soft interlock does not read back).
    ``suppress_in_maintenance`` (default true): a signal, capacity or state rule is silent
    while the machine is in maintenance (see rules/alerts/)."""

    name: Id
    """The rule's id, unique among rules (``{rule}`` in messages)."""
    severity: Severity = "warning"
    """``info``, ``warning`` or ``critical``: channels choose by it."""
    message: Annotated[str, AfterValidator(_check_template)] = (
        "{rule}: {machine} ({zone}) {status}"
    )
    """The alert's text; placeholders: the labels ``{rule}``, ``{zone}``, ``{machine}``,
    ``{owner}``, ``{severity}``, and ``{value}``, ``{state}``, ``{status}``."""
    state: StateName | None = None
    """Alert while the machine is in this state (``offline``: no data)."""
    signal: Signal | None = None
    """Alert while this numeric signal is ``above`` or ``below`` a threshold."""
    above: Threshold | None = None
    """The signal's alert threshold from above."""
    below: Threshold | None = None
    """The signal's alert threshold from below."""
    clear: Threshold | None = None
    """Hysteresis: the alert resolves only once the signal is back past this."""
    offered_idle_for: DurationMs | None = None
    """Alert when offered idle time has lasted this long (capacity nobody books)."""
    collector: Literal["disconnected"] | None = None
    """``disconnected``: alert while a collector (a broker, an OPC UA server) is unreachable."""
    interlock: Literal["unknown"] | None = None
    """``unknown``: alert while a machine's soft interlock does not read back (its OPC UA node
    refused the write, or the readback differs from what was written)."""
    for_: DurationMs = duration_default("0s", alias="for")
    """The condition must hold this long before the alert fires."""
    machines: list[Id] | None = None
    """Only these machines (default: all)."""
    zones: list[Id] | None = None
    """Only machines of these zones (default: all)."""
    suppress_in_maintenance: bool = True
    """Silent while the machine is in maintenance."""

    @field_validator("collector", mode="before")
    @classmethod
    def _collector_disconnected(cls, value: Any) -> Any:
        if value is not None and value != "disconnected":
            raise ValueError(
                f"a collector rule alerts while the collector is disconnected: write "
                f"collector: disconnected (got {value!r})"
            )
        return value

    @field_validator("interlock", mode="before")
    @classmethod
    def _interlock_unknown(cls, value: Any) -> Any:
        if value is not None and value != "unknown":
            raise ValueError(
                f"an interlock rule alerts while the interlock does not read back: write "
                f"interlock: unknown (got {value!r})"
            )
        return value

    @model_validator(mode="after")
    def _one_condition(self) -> AlertRuleConfig:
        kinds = [
            k
            for k in ("state", "signal", "offered_idle_for", "collector", "interlock")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one condition: state, signal (with above or below), "
                "offered_idle_for, collector or interlock"
                f"{'' if not kinds else ', not ' + ' and '.join(kinds)}"
            )
        if "suppress_in_maintenance" in self.model_fields_set and (
            self.collector is not None
            or self.interlock is not None
            or self.state in ("offline", "maintenance")
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
        elif self.interlock is not None:
            condition = InterlockCondition(self.for_)
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


AlertChannelConfig = WebhookConfig | EmailConfig | AlertMqttConfig


def _default_group_by() -> list[GroupLabel]:
    return ["rule", "zone"]


class AlertsConfig(Model):
    """``alerts:``: the rules (see rules/alerts/ for their lifecycle) and the channels that
    are notified of them (webhooks, e-mail, MQTT: see gateway/notify/)."""

    rules: list[AlertRuleConfig] = Field(default_factory=list)
    """The alert rules."""
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    """Webhook channels (JSON or Slack/Mattermost)."""
    email: list[EmailConfig] = Field(default_factory=list)
    """E-mail channels (SMTP)."""
    mqtt: list[AlertMqttConfig] = Field(default_factory=list)
    """MQTT channels (on the site's broker)."""
    # Notification policy (rules/dispatch/): alerts of the same group_by values make one
    # notification per channel, first group_wait after the group's first alert, then at most
    # once per group_interval; a firing alert not acknowledged is sent again every
    # repeat_interval.
    group_by: list[GroupLabel] = Field(default_factory=_default_group_by)
    """Alerts with the same values of these labels make one notification per channel."""
    group_wait: DurationMs = duration_default("10s")
    """A group's first notification waits this long for more alerts of the group."""
    group_interval: DurationMs = duration_default("1m")
    """A group is notified at most this often."""
    repeat_interval: DurationMs = duration_default("4h")
    """A firing alert not acknowledged is sent again this often (not shorter than
    ``group_interval``)."""
    # Booking reminders (service/booking_notices.py), told to channels with ``bookings:``.
    booking_starting_soon: DurationMs = duration_default("15m")
    """A confirmed booking is told ``starting_soon`` (once, to its tenant's channels) this
    long before its start."""
    booking_overrun: DurationMs = duration_default("5m")
    """A used booking whose machine is still running this long past its end is told
    ``overrun`` (once, to its owner's and its tenant's channels)."""
    max_silences: int = Field(default=1000, ge=1, le=100_000)
    """Silences active or still to come at once (POST /api/silences answers 409 beyond):
    every notification is checked against each of them."""

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


# --------------------------------------------------------------------------- checks


def alert_checks(
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
        _owner_checks(alerts, found)
        _booking_owner_checks(alerts, data, found)
    rules = alerts.get("rules") if isinstance(alerts, dict) else None
    names: dict[str, Loc] = {}
    for ri, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict):
            continue
        here: Loc = ("alerts", "rules", ri)
        name = rule.get("name")
        if isinstance(name, str):
            if name in names:
                also = format_loc(names[name])
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


def _names_owner(template: Any) -> bool:
    if not isinstance(template, str):
        return False
    try:
        return any(name == "owner" for _, name, _, _ in string.Formatter().parse(template))
    except ValueError:
        return False  # the rule's own validation says what is wrong with it


def _reaches(rule: dict[Any, Any], channel: dict[Any, Any]) -> bool:
    """Whether the dispatcher may send ``rule``'s alerts to ``channel`` (as Route.wants)."""
    if channel.get("alerts") is False:
        return False
    severity = rule.get("severity", "warning")
    minimum = channel.get("min_severity", "info")
    if minimum in SEVERITIES and not at_least(str(severity), minimum):
        return False
    zones, served = rule.get("zones"), channel.get("zones")
    if isinstance(zones, list) and isinstance(served, list):
        return bool(set(map(str, zones)) & set(map(str, served)))
    return True


def _owner_checks(alerts: dict[Any, Any], found: list[tuple[Loc, str]]) -> None:
    """A rule whose message names ``{owner}`` reaches no MQTT channel that is not private:
    such a channel leaves owner names out of its payloads, but cannot take one out of a
    message's text."""
    rules, channels = alerts.get("rules"), alerts.get("mqtt")
    public = [
        (i, c) for i, c in enumerate(channels if isinstance(channels, list) else [])
        if isinstance(c, dict) and c.get("private") is not True
    ]
    for ri, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict) or not _names_owner(rule.get("message")):
            continue
        for ci, channel in public:
            if _reaches(rule, channel):
                found.append((
                    ("alerts", "rules", ri, "message"),
                    f"names {{owner}}, and alerts.mqtt[{ci}] ({channel.get('name')!r}) is not "
                    "private: any client of the broker could read it. Leave {owner} out, or "
                    "set private: true there once the broker's ACLs restrict its topics",
                ))
                break


def _booking_owner_checks(
    alerts: dict[Any, Any], data: dict[Any, Any], found: list[tuple[Loc, str]]
) -> None:
    """A channel's ``bookings.owners`` are owners of machines: a typo would silently send
    that owner nothing."""
    zones = data.get("zones")
    owners = {
        str(m.get("owner"))
        for z in (zones if isinstance(zones, list) else [])
        if isinstance(z, dict) and isinstance(z.get("machines"), list)
        for m in z["machines"]
        if isinstance(m, dict)
    }
    for kind in ALERT_CHANNEL_KINDS:
        entries = alerts.get(kind)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            bookings = entry.get("bookings") if isinstance(entry, dict) else None
            listed = bookings.get("owners") if isinstance(bookings, dict) else None
            for oi, owner in enumerate(listed if isinstance(listed, list) else []):
                if isinstance(owner, str) and owner not in owners:
                    close = difflib.get_close_matches(owner, sorted(owners), n=1)
                    hint = f": did you mean {close[0]!r}?" if close else ""
                    found.append(((
                        "alerts", kind, i, "bookings", "owners", oi),
                        f"no machine has the owner {owner!r}{hint}",
                    ))


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
                    also = format_loc(names[name])
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
