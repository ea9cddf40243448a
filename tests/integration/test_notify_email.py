"""Alert mails delivered to a REAL SMTP server (aiosmtpd's ``Controller`` in a thread) that
requires STARTTLS with a certificate of a CA made for the test, then AUTH (LOGIN or PLAIN)
with the password the gateway reads from its ``password_file``: firing and resolved mails
arrive once each; a server down then back gets the mail exactly once; a wrong password is
reported once and retried until the file holds the right one; a group of 50 alerts is one
mail; an untrusted server never sees the credentials."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from structlog.testing import capture_logs
from tests.fakes import T0
from tests.peers import free_port
from tests.tls import Authority, Issued
from tests.waiting import run_until, wait_for

from pilotline.gateway.config import EmailConfig
from pilotline.gateway.notify import NotificationSender, notification_rows
from pilotline.gateway.notify.email.channel import EmailChannel
from pilotline.gateway.store import Store
from pilotline.rules.alerts import AlertTransition
from pilotline.rules.dispatch import Notification

pytestmark = pytest.mark.integration

USER = "pilotline"
PASSWORD = "smtp-test-password-91c4"  # the test server's own


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Issued, Path]:
    folder = tmp_path_factory.mktemp("smtp-pki")
    ca = Authority(folder, "ca")
    rogue = Authority(folder / "rogue", "rogue-ca")
    return ca.path, ca.issue("smtp", server=True), rogue.path


class Inbox:
    """What the server accepted, and every AUTH attempt it saw."""

    def __init__(self) -> None:
        self.mails: list[tuple[Envelope, EmailMessage]] = []
        self.logins: list[tuple[str, bool, bool]] = []  # (mechanism, accepted, over TLS)

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, _server: SMTP, _session: Session, envelope: Envelope
    ) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        msg = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.mails.append((envelope, msg))
        return "250 OK"

    def authenticate(
        self, server: SMTP, _session: Session, _envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        transport = server.transport
        tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        self.logins.append((mechanism, ok, tls))
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535

    def subjects(self) -> list[str]:
        return [str(msg["Subject"]) for _, msg in self.mails]


class SmtpServer:
    """An aiosmtpd server on a fixed port: STARTTLS required, AUTH required (after TLS), or
    implicit TLS with ``implicit=True``; ``stop()`` and ``start()`` again to take it down."""

    def __init__(self, cert: Issued, *, implicit: bool = False) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert.cert, cert.key)
        self.implicit = implicit
        self.controller: Controller | None = None

    def start(self) -> SmtpServer:
        # aiosmtpd counts only STARTTLS as TLS for AUTH: on an implicit TLS port it must be
        # told to offer AUTH anyway (the whole connection is encrypted).
        tls: dict[str, Any] = (
            {"ssl_context": self.context, "auth_required": False, "auth_require_tls": False}
            if self.implicit
            else {"tls_context": self.context, "require_starttls": True, "auth_required": True}
        )
        self.controller = Controller(
            self.inbox,
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="smtp.test",
            authenticator=self.inbox.authenticate,
            **tls,
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def server(pki: tuple[Path, Issued, Path]) -> Iterator[SmtpServer]:
    s = SmtpServer(pki[1]).start()
    yield s
    s.stop()


def mail_config(server: SmtpServer, ca: Path, password_file: Path, **extra: Any) -> EmailConfig:
    return EmailConfig.model_validate(
        {
            "name": "oncall",
            "host": "127.0.0.1",
            "port": server.port,
            "username": USER,
            "password_file": password_file,
            "ca_file": ca,
            "from": "Pilotline <alerts@pilot.example>",
            "to": ["ops@pilot.example", "night@pilot.example"],
            "timeout_s": 5,
            **extra,
        }
    )


def write_secret(path: Path, secret: str) -> None:
    path.write_text(secret + "\n")
    path.chmod(0o600)


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "smtp.pw"
    write_secret(path, PASSWORD)
    return path


DOWN = AlertTransition(
    "machine-down", "laser-01", "photonics", "acme", "critical", True, 120.0,
    "laser-01 down for 120 s", T0 + 120_000, T0,
)


def notification(*alerts: AlertTransition, kind: str = "firing") -> Notification:
    group = (("rule", "machine-down"), ("zone", "photonics"))
    return Notification("oncall", group, kind, T0 + 150_000, alerts)  # type: ignore[arg-type]


def queue(tmp_path: Path, *notifications: Notification) -> Store:
    store = Store(tmp_path / "gw.db")
    store.commit(now_ms=T0, notifications=notification_rows("marseille-pilot", notifications))
    return store


async def test_firing_and_resolved_mails_arrive_once_each(
    tmp_path: Path, server: SmtpServer, pki: tuple[Path, Issued, Path], password_file: Path
) -> None:
    resolved = dataclasses.replace(DOWN, firing=False, value=200.0, ts_ms=T0 + 200_000)
    store = queue(
        tmp_path, notification(DOWN), notification(resolved, kind="resolved")
    )
    sender = NotificationSender(
        store, EmailChannel(mail_config(server, pki[0], password_file))
    )
    await run_until(sender, lambda: len(server.inbox.mails) == 2)
    assert server.inbox.subjects() == [
        "[pilotline marseille-pilot] FIRING:1 machine-down photonics",
        "[pilotline marseille-pilot] RESOLVED machine-down photonics",
    ]
    envelope, first = server.inbox.mails[0]
    assert envelope.mail_from == "alerts@pilot.example"
    assert envelope.rcpt_tos == ["ops@pilot.example", "night@pilot.example"]
    assert first["From"] == "Pilotline <alerts@pilot.example>"
    text = first.get_content()
    assert (
        "FIRING critical machine-down on laser-01 (photonics): laser-01 down for 120 s"
        in text
    )
    assert "RESOLVED critical machine-down on laser-01" in server.inbox.mails[1][1].get_content()
    # every login was over TLS and accepted; one per mail
    assert [(ok, tls) for _, ok, tls in server.inbox.logins] == [(True, True), (True, True)]
    assert sender.counts == {("oncall", "sent"): 2}
    assert store.notifications_waiting() == 0
    store.close()


async def test_a_server_down_then_back_gets_the_mail_exactly_once(
    tmp_path: Path, server: SmtpServer, pki: tuple[Path, Issued, Path], password_file: Path
) -> None:
    server.stop()
    store = queue(tmp_path, notification(DOWN))
    sender = NotificationSender(
        store, EmailChannel(mail_config(server, pki[0], password_file)), backoff_base_s=0.05,
        backoff_cap_s=0.2,
    )
    task = asyncio.create_task(sender.run())
    try:
        with capture_logs() as logs:
            await wait_for(lambda: sender.counts[("oncall", "failed")] >= 3)
            server.start()
            await wait_for(lambda: len(server.inbox.mails) == 1)
            await asyncio.sleep(0.5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(server.inbox.mails) == 1
    failed = [e for e in logs if e["event"] == "notify.failed"]
    assert failed
    assert "ConnectionRefusedError" in failed[0]["error"]
    assert not any(e["event"] == "notify.rejected" for e in logs)  # refused: transient
    assert store.notifications_waiting() == 0
    store.close()


async def test_a_wrong_password_is_reported_once_and_retried_until_fixed(
    tmp_path: Path, server: SmtpServer, pki: tuple[Path, Issued, Path], password_file: Path
) -> None:
    write_secret(password_file, "not-the-password")
    store = queue(tmp_path, notification(DOWN))
    sender = NotificationSender(
        store, EmailChannel(mail_config(server, pki[0], password_file)), backoff_cap_s=0.2
    )
    task = asyncio.create_task(sender.run())
    try:
        with capture_logs() as logs:
            await wait_for(lambda: sender.counts[("oncall", "failed")] >= 3)
            assert server.inbox.mails == []
            write_secret(password_file, PASSWORD)  # the operator fixes it; no restart
            await wait_for(lambda: len(server.inbox.mails) == 1)
            await asyncio.sleep(0.5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    events = [e["event"] for e in logs if e["event"].startswith("notify.")]
    assert events[0] == "notify.rejected"
    assert events.count("notify.rejected") == 1  # once for the row
    assert events[-1] == "notify.sent"
    rejected = logs[0]
    assert rejected["status"] == 535
    assert rejected["error"].startswith("SMTP 535")
    assert all(PASSWORD not in str(e) and "not-the-password" not in str(e) for e in logs)
    assert [ok for _, ok, _ in server.inbox.logins].count(False) >= 3
    assert len(server.inbox.mails) == 1
    store.close()


async def test_a_group_of_50_alerts_is_one_mail(
    tmp_path: Path, server: SmtpServer, pki: tuple[Path, Issued, Path], password_file: Path
) -> None:
    alerts = tuple(dataclasses.replace(DOWN, machine=f"laser-{i:02d}") for i in range(50))
    store = queue(tmp_path, notification(*alerts))
    sender = NotificationSender(store, EmailChannel(mail_config(server, pki[0], password_file)))
    await run_until(sender, lambda: len(server.inbox.mails) == 1)
    assert server.inbox.subjects() == [
        "[pilotline marseille-pilot] FIRING:50 machine-down photonics"
    ]
    text = server.inbox.mails[0][1].get_content()
    assert [line.split(" ")[4] for line in text.splitlines() if line.startswith("FIRING ")] == [
        f"laser-{i:02d}" for i in range(50)
    ]
    store.close()


async def test_an_untrusted_server_never_sees_the_credentials(
    tmp_path: Path, server: SmtpServer, pki: tuple[Path, Issued, Path], password_file: Path
) -> None:
    store = queue(tmp_path, notification(DOWN))
    channel = EmailChannel(mail_config(server, pki[2], password_file))  # trusts another CA
    sender = NotificationSender(store, channel, backoff_cap_s=0.1)
    with capture_logs() as logs:
        await run_until(sender, lambda: sender.counts[("oncall", "failed")] >= 2, settle_s=0)
    assert server.inbox.logins == []
    assert server.inbox.mails == []
    assert "CERTIFICATE_VERIFY_FAILED" in next(
        e["error"] for e in logs if e["event"] == "notify.failed"
    )
    assert store.notifications_waiting() == 1
    store.close()


async def test_implicit_tls_on_an_smtps_port(
    tmp_path: Path, pki: tuple[Path, Issued, Path], password_file: Path
) -> None:
    smtps = SmtpServer(pki[1], implicit=True).start()
    try:
        store = queue(tmp_path, notification(DOWN))
        config = mail_config(smtps, pki[0], password_file, tls=True)
        assert (config.tls, config.smtp_port) == (True, smtps.port)
        sender = NotificationSender(store, EmailChannel(config))
        await run_until(sender, lambda: len(smtps.inbox.mails) == 1)
        assert [(ok, tls) for _, ok, tls in smtps.inbox.logins] == [(True, True)]
        store.close()
    finally:
        smtps.stop()
