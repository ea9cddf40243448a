"""What every channel kind implements for ``NotificationSender``, and how it fails."""

from __future__ import annotations

from typing import Any, Protocol


class DeliveryError(Exception):
    """A channel did not take a notification. ``status``: the protocol's answer (HTTP status,
    SMTP reply code, MQTT reason code) when there was one; ``permanent``: the receiver refused
    it in a way that retrying alone will not fix (see sender.py for what follows)."""

    def __init__(self, message: str, status: int | None = None, *, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.status = status
        self.permanent = permanent


class Channel(Protocol):
    """One configured channel. ``deliver`` blocks (it runs in a worker thread, one call at a
    time) and returns only once the receiver has taken the notification; otherwise it raises,
    ``DeliveryError`` for the receiver's refusals and network failures. Messages never carry
    a secret (a hook URL, a password)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    def deliver(self, payload: dict[str, Any]) -> None: ...

    def close(self) -> None:
        """Release connections; called once when the sender stops."""
