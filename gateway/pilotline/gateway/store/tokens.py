"""API bearer tokens: who a caller is, and the hashed tokens kept in the embedded store.

Theory of operation. A token is ``plt_<id>_<secret>``: ``id`` (8 random hex digits) names the
row, ``secret`` is 32 random bytes (``secrets.token_urlsafe``). Only the SHA-256 of the whole
token is stored, with its name, role and subject (the owner id of an owner, the company id of
a tenant). ``authenticate`` finds the row by ``id`` and compares the SHA-256 of what was
presented with the stored hash through ``hmac.compare_digest``, so the comparison takes the
same time wherever the first difference is.

A fast hash is enough: a slow KDF (scrypt, argon2) protects low-entropy passwords against
guessing after the store leaks; a 256-bit random secret cannot be guessed, hashed fast or
slow, and a fast hash keeps every API request cheap. The token itself is printed once, by
``pilotline token create``, and never stored or logged.

Revocation is a column (``revoked_ms``): the gateway reads the row on every request, so a
token revoked by ``pilotline token revoke`` (another process, same SQLite file) stops working
at the next request, without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "Principal",
    "Role",
    "TokenError",
    "TokenInfo",
    "TokenRegistry",
]

_TOKEN_RE: Final = re.compile(r"plt_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MAX_TOKEN_CHARS: Final = 64
"""Longer Authorization values are refused before any work is done on them."""

TOKENS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    subject TEXT,
    sha256 TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
)
"""


class Role(StrEnum):
    OPERATOR = "operator"  # the facility: everything
    OWNER = "owner"  # a machine owner: its own machines only
    TENANT = "tenant"  # a company looking for capacity: offered capacity only
    SCRAPER = "scraper"  # Prometheus: /metrics only


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's name, role and subject (owner id or company id)."""

    name: str
    role: Role
    subject: str | None = None

    def sees_owner(self, owner: str) -> bool:
        """Whether this principal may see the data of machines owned by ``owner``."""
        if self.role is Role.OPERATOR:
            return True
        return self.role is Role.OWNER and self.subject == owner


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    name: str
    role: Role
    subject: str | None
    created_ms: int
    revoked_ms: int | None


class TokenError(ValueError):
    """A token request that cannot be done (unknown role, missing subject, name taken)."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class TokenRegistry:
    """Tokens in the embedded store's SQLite connection (one table, ``api_tokens``)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def create(self, name: str, role: Role, subject: str | None, *, now_ms: int) -> str:
        """A new token; returns it (the only time it exists in clear)."""
        if not _NAME_RE.fullmatch(name):
            raise TokenError(
                f"{name!r} is not a valid token name: 1-64 letters, digits, '.', '_', '@', '-'"
            )
        if role in (Role.OWNER, Role.TENANT) and not subject:
            what = "--owner OWNER_ID" if role is Role.OWNER else "--company COMPANY_ID"
            raise TokenError(f"a {role} token needs {what}")
        if role in (Role.OPERATOR, Role.SCRAPER) and subject:
            raise TokenError(f"an {role} token has no owner or company")
        token_id = secrets.token_hex(4)
        token = f"plt_{token_id}_{secrets.token_urlsafe(32)}"
        try:
            self._db.execute(
                "INSERT INTO api_tokens (id, name, role, subject, sha256, created_ms)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (token_id, name, role.value, subject, _digest(token), now_ms),
            )
        except sqlite3.IntegrityError:
            raise TokenError(
                f"a token named {name!r} exists already: revoke it or choose another name"
            ) from None
        return token

    def revoke(self, name: str, *, now_ms: int) -> bool:
        """Revoke the token named ``name``; False if there is no such active token."""
        cursor = self._db.execute(
            "UPDATE api_tokens SET revoked_ms = ? WHERE name = ? AND revoked_ms IS NULL",
            (now_ms, name),
        )
        return cursor.rowcount > 0

    def list(self) -> list[TokenInfo]:
        rows = self._db.execute(
            "SELECT id, name, role, subject, created_ms, revoked_ms FROM api_tokens"
            " ORDER BY created_ms, name"
        ).fetchall()
        return [
            TokenInfo(row[0], row[1], Role(row[2]), row[3], row[4], row[5]) for row in rows
        ]

    def active(self, name: str) -> bool:
        """Whether the token named ``name`` exists and is not revoked (a board session lives
        only as long as the token it was opened with)."""
        row = self._db.execute(
            "SELECT 1 FROM api_tokens WHERE name = ? AND revoked_ms IS NULL", (name,)
        ).fetchone()
        return row is not None

    def authenticate(self, presented: str) -> tuple[Principal | None, str]:
        """``(principal, "ok")``, or ``(None, reason)`` with reason ``malformed``,
        ``unknown`` or ``revoked``. Never raises on what a client sent."""
        if len(presented) > MAX_TOKEN_CHARS:
            return None, "malformed"
        match = _TOKEN_RE.fullmatch(presented)
        if match is None:
            return None, "malformed"
        row = self._db.execute(
            "SELECT name, role, subject, sha256, revoked_ms FROM api_tokens WHERE id = ?",
            (match.group(1),),
        ).fetchone()
        # Hash and compare even when there is no row, so an unknown id costs the same time.
        stored = row[3] if row is not None else "0" * 64
        same = hmac.compare_digest(_digest(presented), stored)
        if row is None or not same:
            return None, "unknown"
        if row[4] is not None:
            return None, "revoked"
        return Principal(row[0], Role(row[1]), row[2]), "ok"
