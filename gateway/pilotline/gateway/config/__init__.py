"""The site configuration: one YAML file, validated all at once, every mistake with its line.

Each component owns the model of its section, beside its code: the MQTT and OPC UA
collectors (``collectors/<kind>/config.py``), the InfluxDB sink (``sinks/influx/config.py``)
and each notification channel (``notify/<channel>/config.py``); the field types they share
are in ``pilotline.collectors.fields``. This package assembles them into the site model and
reads the file:

- ``site``: ``SiteConfig``, the whole file; ``machine``: machines, zones, state rules,
  defaults; ``offering``: owners and when idle time may be offered; ``booking``: booking
  rules (merged machine > owner > defaults) and planned maintenance; ``alerts``: alert
  rules, channels and the notification policy; ``fields``: the site's own field types;
- ``checks``: checks across objects of the site, on the raw data;
- ``load``: ``load_config``, which runs every check and gathers the issues (its docstring is
  the theory of operation); ``errors``: ``ConfigIssue`` and ``ConfigError``;
- ``yamlfile``, ``locate``, ``validation``, ``schema``, ``files``: the generic reader (the
  file to data, a pydantic ``loc`` to a path and a line, pydantic's errors in a YAML
  editor's words, the files named by any model), which knows no component;
- ``summary``: what ``pilotline check`` prints; ``sharding``: a configuration cut to one shard;
- ``json_schema``: the file's JSON Schema for editors (``check --schema``), made from the
  models; ``reference``: docs/configuration.md, made from the schema (``check --reference``).
"""

from pilotline.collectors.mqtt.config import MqttBrokerConfig, MqttMachineSource
from pilotline.collectors.opcua.config import OpcuaSource
from pilotline.gateway.config.alerts import AlertChannelConfig, AlertRuleConfig, AlertsConfig
from pilotline.gateway.config.booking import Booking, Maintenance, Quota
from pilotline.gateway.config.errors import ConfigError, ConfigIssue
from pilotline.gateway.config.fields import DurationMs, StateName, duration_ms
from pilotline.gateway.config.load import load_config
from pilotline.gateway.config.machine import Defaults, Machine, StateConfig, Zone
from pilotline.gateway.config.offering import Blackout, Offering, OwnerPolicy, WeeklyHours
from pilotline.gateway.config.site import LogConfig, SiteConfig
from pilotline.gateway.config.summary import summarize
from pilotline.gateway.notify.email.config import EmailConfig
from pilotline.gateway.notify.mqtt.config import AlertMqttConfig
from pilotline.gateway.notify.webhook.config import WebhookConfig
from pilotline.gateway.sinks.influx.config import INFLUX_TOKEN_ENV, InfluxConfig

__all__ = [
    "INFLUX_TOKEN_ENV",
    "AlertChannelConfig",
    "AlertMqttConfig",
    "AlertRuleConfig",
    "AlertsConfig",
    "Blackout",
    "Booking",
    "ConfigError",
    "ConfigIssue",
    "Defaults",
    "DurationMs",
    "EmailConfig",
    "InfluxConfig",
    "LogConfig",
    "Machine",
    "Maintenance",
    "MqttBrokerConfig",
    "MqttMachineSource",
    "Offering",
    "OpcuaSource",
    "OwnerPolicy",
    "Quota",
    "SiteConfig",
    "StateConfig",
    "StateName",
    "WebhookConfig",
    "WeeklyHours",
    "Zone",
    "duration_ms",
    "load_config",
    "summarize",
]
