"""The demo's operator inbox: where ``pilotline demo`` sends its alert notifications.

Three receivers on loopback, one per kind of channel, all in the caller's event loop:

* an SMTP server (aiosmtpd's ``SMTP`` protocol on ``loop.create_server``; no STARTTLS, no
  AUTH: the demo's mail channel talks to it in plain text over loopback);
* an HTTP server for webhooks (asyncio streams; HTTP/1.1 POST with a ``Content-Length``,
  which is what the gateway's sender makes; anything else is refused);
* an MQTT subscriber (paho's network thread) on ``<topic_prefix>/notifications``; retained
  messages are skipped, as they were sent before the inbox listened (the demo's broker keeps
  its data between runs).

Every notification received becomes an :class:`Arrival`, appended as one JSON line to the
inbox file (emptied when the inbox starts) and handed to ``on_arrival``, so the demo's
console can show a line per message. The receivers do not know the notification format in
detail (it belongs to gateway/notify/): they read a firing/resolved kind and an alert count
from what is there (an e-mail subject's ``FIRING:2`` or ``RESOLVED`` and its body's alert
lines, a JSON body's ``kind`` and its ``alerts`` list) and keep the whole body, so tests
read what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Literal, Self

import paho.mqtt.client as mqtt
import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.demo.site import MAIL, MQTT, WEBHOOK, AlertChannels
from pilotline.gateway.clock import wall_clock_ms
from pilotline.gateway.timefmt import iso

__all__ = ["Arrival", "ChannelKind", "Inbox", "describe_json", "describe_subject"]

log = structlog.get_logger("pilotline.demo")

ChannelKind = Literal["webhook", "mail", "mqtt"]

KINDS: Final = ("firing", "resolved", "repeat")
_SUBJECT_RE: Final = re.compile(r"\b(FIRING|RESOLVED)(?::(\d+))?\b")
_ALERT_LINE_RE: Final = re.compile(r"^(FIRING|RESOLVED) (info|warning|critical) ", re.MULTILINE)
_MAX_BODY: Final = 1 << 20  # a notification is a few kB; refuse anything absurd
_HTTP_TIMEOUT_S: Final = 10.0
_REASONS: Final = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed", 413: "Too Large"}


@dataclass(frozen=True, slots=True)
class Arrival:
    """One notification as the inbox received it.

    ``kind`` is ``firing``, ``resolved`` or ``repeat`` when the message says so, else None;
    ``alerts`` is how many alerts it carries, when it says; ``source`` is the URL path, the
    MQTT topic or the e-mail's recipients; ``body`` the parsed JSON or the text.
    """

    channel_kind: ChannelKind
    channel: str
    received_ms: int
    kind: str | None
    subject: str
    alerts: int | None
    source: str
    body: Any = field(default=None)

    def record(self) -> dict[str, Any]:
        """The inbox file's JSON line for this arrival."""
        return {
            "channel_kind": self.channel_kind,
            "channel": self.channel,
            "received_at": iso(self.received_ms),
            "received_ms": self.received_ms,
            "kind": self.kind,
            "subject": self.subject,
            "alerts": self.alerts,
            "source": self.source,
            "body": self.body,
        }

    def line(self, mark: str = "📨") -> str:
        """One console line: ``📨 mail ops-mail: [FIRING:1] machine-down photonics``."""
        return f"{mark} {self.channel_kind} {self.channel}: {self.subject}"


def describe_subject(subject: str) -> tuple[str | None, int | None]:
    """(kind, firing count) from an Alertmanager-style title: ``[pilotline x] FIRING:2 ...``
    or ``[FIRING:2] ...``; ``RESOLVED`` has no count; ``(reminder)`` makes it a repeat."""
    match = _SUBJECT_RE.search(subject)
    if match is None:
        return None, None
    count = match.group(2)
    kind = "repeat" if "(reminder)" in subject else match.group(1).lower()
    return kind, int(count) if count else None


def describe_json(body: object) -> tuple[str | None, int | None, str]:
    """(kind, alert count, one-line subject) of a JSON notification of any shape we know:
    a grouped message (``status``/``kind`` and an ``alerts`` list), one transition
    (``firing`` true/false and a ``machine``), or Slack text (``{"text": ...}``)."""
    if not isinstance(body, dict):
        return None, None, _clip(json.dumps(body))
    text = body.get("text")
    if isinstance(text, str) and not body.get("alerts"):
        said, number = describe_subject(text)
        return said, number, _clip(text.splitlines()[0] if text else "")
    kind: str | None = None
    for key in ("kind", "status", "state"):
        value = body.get(key)
        if isinstance(value, str) and value.lower() in KINDS:
            kind = value.lower()
            break
    if kind is None and isinstance(body.get("firing"), bool):
        kind = "firing" if body["firing"] else "resolved"
    alerts = body.get("alerts")
    count: int | None = None
    first: Mapping[str, Any] = body
    if isinstance(alerts, list):
        count = len(alerts)
        if alerts and isinstance(alerts[0], dict):
            first = alerts[0]
    elif "machine" in body:
        count = 1
    subject = body.get("subject") or body.get("title")
    if not isinstance(subject, str):
        counts = body.get("counts")
        if isinstance(counts, dict) and isinstance(counts.get("firing"), int):
            head = f"FIRING:{counts['firing']}" if counts["firing"] else "RESOLVED"
        else:
            head = f"{(kind or 'notification').upper()}{'' if count is None else f':{count}'}"
        subject = " ".join([f"[{head}]", *_labels(body, first)])
        if kind == "repeat":
            subject += " (reminder)"
    return kind, count, _clip(subject)


def _labels(body: Mapping[str, Any], first: Mapping[str, Any]) -> list[str]:
    """The rule and zone a message is about: its group labels, else its first alert's."""
    group = body.get("group") or body.get("groupLabels") or body.get("labels")
    if isinstance(group, list):  # [(label, value), ...]
        with contextlib.suppress(TypeError, ValueError):
            group = dict(group)
    out: list[str] = []
    for key in ("rule", "zone"):
        for source in (group, body, first, first.get("labels")):
            if isinstance(source, Mapping) and isinstance(source.get(key), str):
                out.append(source[key])
                break
    if "machine" in body and isinstance(body["machine"], str):
        out.append(body["machine"])
    return out


def _clip(text: str, width: int = 120) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class _MailHandler:
    """aiosmtpd handler: every message accepted for delivery is an arrival."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, _server: SMTP, _session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        subject = str(message.get("Subject", ""))
        part = message.get_body(("plain", "html"))
        text = part.get_content() if isinstance(part, EmailMessage) else ""
        text = text.replace("\r\n", "\n")  # SMTP's line ends, not the message's
        kind, _firing = describe_subject(subject)
        count = len(_ALERT_LINE_RE.findall(text)) or None  # one line per alert
        self.inbox.arrived(
            "mail",
            kind=kind,
            alerts=count,
            subject=_clip(subject),
            source=",".join(envelope.rcpt_tos),
            body=text,
        )
        return "250 OK"


class Inbox:
    """The receivers, the inbox file, and ``arrivals`` (also kept in memory, in order).

    ``async with Inbox(path, mqtt_url=..., topic_prefix=...) as inbox:`` starts all three;
    ``inbox.channels`` then says where they listen (for :func:`demo_site_yaml`). Without
    ``mqtt_url`` there is no MQTT subscriber. ``names`` gives each kind of channel the name
    the site configuration gives it (for the console lines).
    """

    def __init__(
        self,
        path: Path,
        *,
        mqtt_url: str | None,
        topic_prefix: str = "pilotline/demo-pilot/alerts",
        on_arrival: Callable[[Arrival], None] | None = None,
        names: Mapping[ChannelKind, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.path = path
        self.mqtt_url = mqtt_url
        self.topic_prefix = topic_prefix.rstrip("/")
        self.on_arrival = on_arrival
        self.names: dict[ChannelKind, str] = {"webhook": WEBHOOK, "mail": MAIL, "mqtt": MQTT}
        self.names.update(names or {})
        self.host = host
        self.arrivals: list[Arrival] = []
        self._file: IO[str] | None = None
        self._servers: list[asyncio.Server] = []
        self._mqtt: mqtt.Client | None = None
        self._http_port = 0
        self._smtp_port = 0

    @property
    def topic(self) -> str:
        return f"{self.topic_prefix}/notifications"

    @property
    def webhook_url(self) -> str:
        return f"http://{self.host}:{self._http_port}/hook/{self.names['webhook']}"

    @property
    def channels(self) -> AlertChannels:
        if not self._servers:
            raise RuntimeError("the inbox is not started")
        return AlertChannels(
            webhook_url=self.webhook_url,
            smtp_port=self._smtp_port,
            mqtt_topic_prefix=self.topic_prefix,
            smtp_host=self.host,
        )

    # -- life ----------------------------------------------------------------------------

    async def start(self, timeout_s: float = 10.0) -> Self:
        """Listen (ports chosen by the OS: no race with another process) and, with MQTT,
        wait until the subscription is acknowledged, so no notification goes unseen."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        loop = asyncio.get_running_loop()
        try:
            handler = _MailHandler(self)
            smtp = await loop.create_server(
                lambda: SMTP(handler, hostname="inbox.demo.local", ident="pilotline demo inbox"),
                self.host,
                0,
            )
            self._servers.append(smtp)
            self._smtp_port = smtp.sockets[0].getsockname()[1]
            http = await asyncio.start_server(self._http, self.host, 0)
            self._servers.append(http)
            self._http_port = http.sockets[0].getsockname()[1]
            if self.mqtt_url is not None:
                async with asyncio.timeout(timeout_s):
                    await self._subscribe(self.mqtt_url)
        except BaseException:
            await self.close()
            raise
        log.info(
            "demo.inbox.started",
            path=str(self.path),
            webhook=self.webhook_url,
            smtp=f"{self.host}:{self._smtp_port}",
            mqtt=self.topic if self.mqtt_url else None,
        )
        return self

    async def close(self) -> None:
        client, self._mqtt = self._mqtt, None
        if client is not None:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await server.wait_closed()
        if self._file is not None:
            self._file.close()
            self._file = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- arrivals ------------------------------------------------------------------------

    def arrived(
        self,
        channel_kind: ChannelKind,
        *,
        kind: str | None,
        alerts: int | None,
        subject: str,
        source: str,
        body: Any,
    ) -> Arrival:
        arrival = Arrival(
            channel_kind=channel_kind,
            channel=self.names[channel_kind],
            received_ms=wall_clock_ms(),
            kind=kind,
            subject=subject,
            alerts=alerts,
            source=source,
            body=body,
        )
        self.arrivals.append(arrival)
        if self._file is not None:
            self._file.write(json.dumps(arrival.record(), ensure_ascii=False) + "\n")
            self._file.flush()
        if self.on_arrival is not None:
            self.on_arrival(arrival)
        return arrival

    def _json_arrived(self, channel_kind: ChannelKind, source: str, raw: bytes) -> None:
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
            kind, count = describe_subject(body)
            subject = _clip(body.splitlines()[0] if body else "")
        else:
            kind, count, subject = describe_json(body)
        self.arrived(
            channel_kind, kind=kind, alerts=count, subject=subject, source=source, body=body
        )

    # -- webhook -------------------------------------------------------------------------

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status = 400
        try:
            async with asyncio.timeout(_HTTP_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            request, *lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request.split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines if line)
            }
            length = int(headers.get("content-length", "0"))
            if method != "POST":
                status = 405
            elif length > _MAX_BODY or length < 0:
                status = 413
            else:
                async with asyncio.timeout(_HTTP_TIMEOUT_S):
                    body = await reader.readexactly(length)
                self._json_arrived("webhook", target, body)
                status = 200
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            log.warning("demo.inbox.refused", status=status)
        try:
            answer = b'{"ok":true}' if status == 200 else b'{"ok":false}'
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n".encode()
                + answer
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    # -- MQTT ----------------------------------------------------------------------------

    async def _subscribe(self, mqtt_url: str) -> None:
        broker = MqttBrokerConfig(url=mqtt_url)
        loop = asyncio.get_running_loop()
        subscribed: asyncio.Future[None] = loop.create_future()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"pilotline-demo-inbox-{time.time_ns():x}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if broker.tls:
            client.tls_set()

        def done() -> None:
            if not subscribed.done():
                subscribed.set_result(None)

        def on_connect(
            c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object
        ) -> None:
            if not reason.is_failure:  # each (re)connect: a clean session subscribes again
                c.subscribe(self.topic, qos=1)

        def on_subscribe(
            _c: mqtt.Client, _u: object, _mid: int, _codes: object, _p: object
        ) -> None:
            loop.call_soon_threadsafe(done)

        def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
            if message.retain:
                return
            loop.call_soon_threadsafe(
                self._json_arrived, "mqtt", message.topic, bytes(message.payload)
            )

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        client.connect_async(broker.host, broker.port, keepalive=30)
        client.loop_start()
        self._mqtt = client
        await subscribed
