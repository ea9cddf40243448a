"""E-mail channels (``alerts.email``): one mail per notification, through an SMTP submission
server, with stdlib ``smtplib`` in the sender's worker thread.

A connection per notification (alerts are rare; nothing idles open): EHLO, STARTTLS with a
verifying context (``ssl.create_default_context``: certificate chain and host name, the
``ca_file`` if given) unless ``tls: true`` wraps the connection from the first byte, AUTH
when a ``username`` is set (the password read from ``password_file`` at each attempt), then
the message. smtplib never sends credentials or the message in clear when STARTTLS is asked
for and the server does not offer it (``SMTPNotSupportedError``).

Subject ``[pilotline <site>] FIRING:3 machine-down photonics``; a plain-text body with one
line per alert. The Message-ID is derived from the notification, so a mail sent again after a
lost answer carries the same id and mail clients can fold the copies.
"""

from __future__ import annotations

import contextlib
import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import structlog

from pilotline.gateway.notify.booking import is_booking
from pilotline.gateway.notify.channel import DeliveryError
from pilotline.gateway.notify.email.config import EmailConfig
from pilotline.gateway.notify.payload import alert_lines, dumps, group_label, status_label, title

log = structlog.get_logger("pilotline.gateway.notify")


def subject(p: dict[str, Any]) -> str:
    if is_booking(p):
        return f"[pilotline {p['site']}] {title(p)}"
    reminder = " (reminder)" if p["kind"] == "repeat" else ""
    return f"[pilotline {p['site']}] {status_label(p)} {group_label(p)}{reminder}"


def body(p: dict[str, Any]) -> str:
    if is_booking(p):
        lines = [title(p), "", *alert_lines(p), "", f"site: {p['site']}",
                 f"at: {p['ts']}", "", f"-- pilotline, booking notices on {p['channel']}"]
        return "\n".join(lines) + "\n"
    group = ", ".join(f"{k}={v}" for k, v in p["group"].items()) or "(all alerts)"
    lines = [
        title(p),
        "",
        *alert_lines(p, limit=None),
        "",
        f"site: {p['site']}",
        f"group: {group}",
        f"firing: {p['counts']['firing']}, resolved: {p['counts']['resolved']}",
        f"at: {p['ts']}",
        "",
        f"-- pilotline, alert channel {p['channel']}",
    ]
    return "\n".join(lines) + "\n"


def message(config: EmailConfig, p: dict[str, Any]) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject(p)
    msg["From"] = config.sender
    msg["To"] = ", ".join(config.to)
    msg["Date"] = formatdate(usegmt=True)
    digest = hashlib.sha256(dumps(p).encode()).hexdigest()[:32]
    msg["Message-ID"] = f"<{digest}.{p['channel']}@pilotline.{p['site']}>"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to alerts
    msg.set_content(body(p))
    return msg


def _context(config: EmailConfig) -> ssl.SSLContext:
    ca = str(config.ca_file) if config.ca_file is not None else None
    return ssl.create_default_context(cafile=ca)  # verifies the chain and the host name


def send(config: EmailConfig, msg: EmailMessage) -> None:
    """Submit ``msg``; raises ``DeliveryError`` (permanent for an SMTP 5xx and for a server
    without the STARTTLS or AUTH it needs)."""
    password = config.password()
    try:
        smtp: smtplib.SMTP
        if config.tls:
            smtp = smtplib.SMTP_SSL(
                config.host, config.smtp_port, timeout=config.timeout_s, context=_context(config)
            )
        else:
            smtp = smtplib.SMTP(config.host, config.smtp_port, timeout=config.timeout_s)
        try:
            smtp.ehlo()
            if config.starttls and not config.tls:
                smtp.starttls(context=_context(config))
                smtp.ehlo()
            if config.username is not None and password is not None:
                smtp.login(config.username, password)
            refused = smtp.send_message(msg)
        finally:
            # The message is already accepted: a failing QUIT must not make it a failure.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
            smtp.close()
    except smtplib.SMTPRecipientsRefused as exc:
        codes = sorted({code for code, _ in exc.recipients.values()})
        permanent = all(500 <= code < 600 for code in codes)
        raise DeliveryError(
            f"every recipient refused ({', '.join(map(str, codes))})",
            codes[0] if codes else None,
            permanent=permanent,
        ) from None
    except smtplib.SMTPResponseException as exc:
        reply = exc.smtp_error
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        raise DeliveryError(
            f"SMTP {exc.smtp_code}: {text}", exc.smtp_code, permanent=500 <= exc.smtp_code < 600
        ) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"SMTP server: {exc}", permanent=True) from None
    except (smtplib.SMTPException, OSError) as exc:  # ssl.SSLError is an OSError
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
    if refused:
        # Some recipients took it: sending again would duplicate it for them.
        log.warning("notify.recipients_refused", channel=config.name, refused=sorted(refused))


class EmailChannel:
    """Delivers to one ``alerts.email`` entry."""

    kind = "email"

    def __init__(self, config: EmailConfig) -> None:
        self.config = config
        self.name = config.name

    def deliver(self, payload: dict[str, Any]) -> None:
        send(self.config, message(self.config, payload))

    def close(self) -> None:
        pass
