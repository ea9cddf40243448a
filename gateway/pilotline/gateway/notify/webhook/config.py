"""Configuration of the webhook channel: one ``alerts.webhooks`` entry."""

from __future__ import annotations

from typing import ClassVar, Final, Literal
from urllib.parse import urlsplit

from pydantic import field_validator, model_validator

from pilotline.collectors.fields import PositiveSeconds, PrivateFile, Secret
from pilotline.gateway.notify.config import ChannelConfig

__all__ = ["WebhookConfig", "check_webhook_url"]

URL: Final = Secret("url", strip=True)
"""A URL that carries a secret (a Slack hook) is read from ``url_file``; a plain one may
stay inline in ``url``."""


class WebhookConfig(ChannelConfig):
    """One ``alerts.webhooks`` entry: an HTTP(S) endpoint that receives each grouped alert
    notification, as JSON (``format: json``) or as Slack/Mattermost text (``format: slack``).
    A URL that carries a secret (a Slack hook) goes in ``url_file``."""

    KIND: ClassVar[str] = "webhook"

    url: str | None = None
    """The endpoint, ``http(s)://...`` (one of ``url`` and ``url_file``)."""
    url_file: PrivateFile = None
    """A file whose first line is the endpoint: for a URL that carries a secret (a Slack hook)."""
    format: Literal["json", "slack"] = "json"
    """``json`` (the notification as an object) or ``slack`` (Slack/Mattermost text)."""
    timeout_s: PositiveSeconds = 10.0
    """A request not answered within this is retried later."""

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
        return check_webhook_url(URL.read_file(self.url_file))


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
