"""Building the senders of a site: one ``NotificationSender`` per configured channel,
whatever its kind, each with the channel object that speaks its protocol."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pilotline.gateway.config import (
    AlertChannelConfig,
    AlertMqttConfig,
    EmailConfig,
    SiteConfig,
    WebhookConfig,
)
from pilotline.gateway.notify.channel import Channel
from pilotline.gateway.notify.email.channel import EmailChannel
from pilotline.gateway.notify.mqtt.channel import MqttChannel
from pilotline.gateway.notify.sender import NotificationSender
from pilotline.gateway.notify.webhook.channel import WebhookChannel
from pilotline.gateway.store import Store


def make_channel(config: SiteConfig, entry: AlertChannelConfig) -> Channel:
    if isinstance(entry, WebhookConfig):
        return WebhookChannel(entry)
    if isinstance(entry, EmailConfig):
        return EmailChannel(entry)
    assert isinstance(entry, AlertMqttConfig)
    if config.mqtt is None:  # the configuration's checks refuse this; a guard for code
        raise ValueError(f"alert channel {entry.name!r}: MQTT needs the site's mqtt: section")
    return MqttChannel(entry, config.mqtt, config.site)


def make_senders(
    config: SiteConfig,
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
