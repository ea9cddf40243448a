"""Webhook channels (``alerts.webhooks``): one HTTP POST per notification.

``format: json`` posts the notification payload itself (payload.py); ``format: slack`` posts
``{"text": ...}``, a title line like ``[FIRING:3] machine-down photonics`` and one line per
alert, which Slack and Mattermost incoming webhooks both accept. stdlib ``urllib``, redirects
not followed: urllib would turn a redirected POST into a GET without the body, which a 2xx
would then count as delivered.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from typing import Any

from pilotline.gateway.notify.channel import DeliveryError
from pilotline.gateway.notify.payload import alert_lines, dumps, title
from pilotline.gateway.notify.webhook.config import WebhookConfig

RETRYABLE_4XX = frozenset({408, 429})
"""Request Timeout and Too Many Requests: the receiver asks to try again later."""


def slack_text(p: dict[str, Any]) -> str:
    return "\n".join([title(p), *alert_lines(p)])


def render(fmt: str, p: dict[str, Any]) -> bytes:
    """The HTTP body for a channel of format ``fmt`` (``json`` or ``slack``)."""
    return dumps({"text": slack_text(p)} if fmt == "slack" else p).encode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(url: str, body: bytes, timeout_s: float) -> int:
    """POST ``body`` as JSON; returns the 2xx status or raises ``DeliveryError`` (permanent
    for a 3xx or a 4xx other than 408 and 429)."""
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked by the config
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "pilotline"},
    )
    try:
        # Only http(s): check_webhook_url runs on the configured url and on every url_file read.
        with _OPENER.open(request, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        code = exc.code
        exc.close()
        permanent = 300 <= code < 500 and code not in RETRYABLE_4XX
        raise DeliveryError(f"HTTP {code}", code, permanent=permanent) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        # Never the URL itself in the message: it may carry a secret (url_file).
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise DeliveryError(f"{type(exc).__name__}: {reason}") from None
    if not 200 <= status < 300:
        raise DeliveryError(f"HTTP {status}", status)
    return status


class WebhookChannel:
    """Delivers to one ``alerts.webhooks`` entry."""

    kind = "webhook"

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.name = config.name

    def deliver(self, payload: dict[str, Any]) -> None:
        body = render(self.config.format, payload)
        # Read per attempt: a rotated url_file is picked up without a restart.
        post(self.config.resolved_url(), body, self.config.timeout_s)

    def close(self) -> None:
        pass


__all__ = ["WebhookChannel", "post", "render", "slack_text"]
