"""Calendar feed tokens: the secret in a feed URL ``/ical/<feed-token>.ics``, one per
principal, stored hashed beside the API tokens (schema version 9).

Why not the API token: a feed URL is pasted into calendar clients, synced to phones and
shared calendars, and sent without any header, so it leaks more easily than a bearer token;
what it gives must be read-only and revocable on its own. And why not one key for the site
(LibreBooking's feeds): each feed token belongs to one principal, the API token it was issued
for (``principal`` = that token's name), and shows what that principal may see.

A feed token is ``plf_<id>_<secret>`` (8 hex digits, 32 random bytes), hashed with SHA-256
and compared with ``hmac.compare_digest``, as ``tokens.py`` does and for the same reasons (a
256-bit secret needs no slow hash). Issuing one revokes the principal's previous feed token:
rotation is issuing again. A feed token stops working when it is revoked, or when the API
token it belongs to is revoked (``authenticate`` reads both rows on every request).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Final

from pilotline.gateway.store.db import Transaction
from pilotline.gateway.store.tokens import Principal, Role

__all__ = ["FEED_TOKENS_SCHEMA", "FeedInfo", "FeedTokens"]

_FEED_RE: Final = re.compile(r"plf_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
MAX_FEED_CHARS: Final = 64

FEED_TOKENS_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS feed_tokens (
        id TEXT PRIMARY KEY,
        principal TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS feed_tokens_principal ON feed_tokens (principal)",
)


@dataclass(frozen=True, slots=True)
class FeedInfo:
    id: str
    principal: str
    created_ms: int
    revoked_ms: int | None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class FeedTokens:
    """The ``feed_tokens`` table on the store's connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def issue(self, principal: str, *, now_ms: int) -> str:
        """A new feed token for the API token named ``principal`` (which must be active),
        revoking the one it had; returns it (the only time it exists in clear)."""
        with Transaction(self._db):
            row = self._db.execute(
                "SELECT revoked_ms FROM api_tokens WHERE name = ?", (principal,)
            ).fetchone()
            if row is None or row[0] is not None:
                raise ValueError(f"no active API token named {principal!r}")
            self._revoke(principal, now_ms)
            feed_id = secrets.token_hex(4)
            token = f"plf_{feed_id}_{secrets.token_urlsafe(32)}"
            self._db.execute(
                "INSERT INTO feed_tokens (id, principal, sha256, created_ms) VALUES (?, ?, ?, ?)",
                (feed_id, principal, _digest(token), now_ms),
            )
        return token

    def revoke(self, principal: str, *, now_ms: int) -> bool:
        """Revoke ``principal``'s feed token; False if it had none active."""
        with Transaction(self._db):
            return self._revoke(principal, now_ms)

    def _revoke(self, principal: str, now_ms: int) -> bool:
        cursor = self._db.execute(
            "UPDATE feed_tokens SET revoked_ms = ? WHERE principal = ? AND revoked_ms IS NULL",
            (now_ms, principal),
        )
        return cursor.rowcount > 0

    def list(self) -> list[FeedInfo]:
        return [
            FeedInfo(str(r[0]), str(r[1]), int(r[2]), r[3])
            for r in self._db.execute(
                "SELECT id, principal, created_ms, revoked_ms FROM feed_tokens"
                " ORDER BY created_ms, id"
            )
        ]

    def authenticate(self, presented: str) -> Principal | None:
        """The principal whose active feed token ``presented`` is, or None (malformed,
        unknown, revoked, or its API token revoked). Never raises on what a client sent."""
        if len(presented) > MAX_FEED_CHARS:
            return None
        match = _FEED_RE.fullmatch(presented)
        if match is None:
            return None
        row = self._db.execute(
            "SELECT f.sha256, f.revoked_ms, t.name, t.role, t.subject, t.revoked_ms"
            " FROM feed_tokens f JOIN api_tokens t ON t.name = f.principal WHERE f.id = ?",
            (match.group(1),),
        ).fetchone()
        # Hash and compare even when there is no row, so an unknown id costs the same time.
        stored = row[0] if row is not None else "0" * 64
        same = hmac.compare_digest(_digest(presented), stored)
        if row is None or not same or row[1] is not None or row[5] is not None:
            return None
        return Principal(str(row[2]), Role(row[3]), row[4])
