"""Building the senders of a site: one ``NotificationSender`` per configured channel,
whatever its kind, each with the channel object that speaks its protocol."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.gateway.notify.channel import Channel
from pilotline.gateway.notify.config import ChannelConfig
from pilotline.gateway.notify.email.channel import EmailChannel
from pilotline.gateway.notify.email.config import EmailConfig
from pilotline.gateway.notify.mqtt.channel import MqttChannel
from pilotline.gateway.notify.mqtt.config import AlertMqttConfig
from pilotline.gateway.notify.sender import NotificationSender
from pilotline.gateway.notify.webhook.channel import WebhookChannel
from pilotline.gateway.notify.webhook.config import WebhookConfig
from pilotline.gateway.store import Store


class _Channels(Protocol):
    def channels(self) -> Sequence[ChannelConfig]: ...


class Site(Protocol):
    """What the registry reads of the site configuration (a ``SiteConfig``). Narrow, because
    the site model imports each channel's configuration from this package."""

    @property
    def site(self) -> str: ...

    @property
    def mqtt(self) -> MqttBrokerConfig | None: ...

    @property
    def alerts(self) -> _Channels: ...


def make_channel(config: Site, entry: ChannelConfig) -> Channel:
    if isinstance(entry, WebhookConfig):
        return WebhookChannel(entry)
    if isinstance(entry, EmailConfig):
        return EmailChannel(entry)
    assert isinstance(entry, AlertMqttConfig)
    if config.mqtt is None:  # the configuration's checks refuse this; a guard for code
        raise ValueError(f"alert channel {entry.name!r}: MQTT needs the site's mqtt: section")
    return MqttChannel(entry, config.mqtt, config.site)


def make_senders(
    config: Site,
    store: Store,
    counts: Counter[tuple[str, str]] | None = None,
    **options: Any,
) -> list[NotificationSender]:
    """One sender per channel of ``config.alerts`` (webhooks, e-mail, MQTT), sharing
    ``counts`` (the gateway's ``metrics.notifications``). ``options`` go to every
    ``NotificationSender`` (backoff, poll interval: for tests)."""
    return [
        NotificationSender(store, make_channel(config, entry), counts=counts, **options)
        for entry in config.alerts.channels()
    ]
