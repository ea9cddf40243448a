"""The OPC UA collector's exceptions: small, carrying what an operator needs to act."""

from __future__ import annotations

from pathlib import Path

__all__ = ["OpcuaError", "SecurityConfigError", "UntrustedServerError"]


class OpcuaError(Exception):
    """Base of the collector's own errors."""


class SecurityConfigError(OpcuaError):
    """Certificates or keys cannot be used (unreadable, mismatched, expired)."""


class UntrustedServerError(OpcuaError):
    """The server's certificate is in no trust list; the message says how to trust it."""

    def __init__(
        self, endpoint: str, subject: str, fingerprint: str, saved: Path, trust_dir: Path
    ) -> None:
        self.endpoint = endpoint
        self.subject = subject
        self.fingerprint = fingerprint
        self.saved = saved
        self.trust_dir = trust_dir
        super().__init__(
            f"the server certificate of {endpoint} ({subject}, SHA-256 {fingerprint}) is not "
            f"trusted: check the fingerprint with the machine's owner, then trust it with "
            f"`cp {saved} {trust_dir}/` (or set server_certificate_file to it)"
        )
