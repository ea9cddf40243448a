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

A feed token may be scoped to one machine (schema version 11: a ``feed_scopes`` row beside
it): its feed shows that machine's bookings only. A principal has at most one active feed
token per scope (its general feed, and one per machine); issuing one rotates only that
scope's, and each is revoked on its own.
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

__all__ = ["FEED_SCOPES_SCHEMA", "FEED_TOKENS_SCHEMA", "FeedInfo", "FeedTokens"]

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

FEED_SCOPES_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS feed_scopes (
        id TEXT PRIMARY KEY,
        machine TEXT NOT NULL
    )""",
)

# Revoking the active feed tokens of one scope: the general feed (no ``feed_scopes`` row),
# or one machine's.
_REVOKE_GENERAL: Final = (
    "UPDATE feed_tokens SET revoked_ms = ? WHERE principal = ? AND revoked_ms IS NULL"
    " AND id NOT IN (SELECT id FROM feed_scopes)"
)
_REVOKE_MACHINE: Final = (
    "UPDATE feed_tokens SET revoked_ms = ? WHERE principal = ? AND revoked_ms IS NULL"
    " AND id IN (SELECT id FROM feed_scopes WHERE machine = ?)"
)


@dataclass(frozen=True, slots=True)
class FeedInfo:
    id: str
    principal: str
    created_ms: int
    revoked_ms: int | None
    machine: str | None = None  # a feed of this machine only


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class FeedTokens:
    """The ``feed_tokens`` table on the store's connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def issue(self, principal: str, *, now_ms: int, machine: str | None = None) -> str:
        """A new feed token for the API token named ``principal`` (which must be active), of
        ``machine`` only if given, revoking the one it had of that scope; returns it (the
        only time it exists in clear)."""
        with Transaction(self._db):
            row = self._db.execute(
                "SELECT revoked_ms FROM api_tokens WHERE name = ?", (principal,)
            ).fetchone()
            if row is None or row[0] is not None:
                raise ValueError(f"no active API token named {principal!r}")
            self._revoke(principal, now_ms, machine)
            feed_id = secrets.token_hex(4)
            token = f"plf_{feed_id}_{secrets.token_urlsafe(32)}"
            self._db.execute(
                "INSERT INTO feed_tokens (id, principal, sha256, created_ms) VALUES (?, ?, ?, ?)",
                (feed_id, principal, _digest(token), now_ms),
            )
            if machine is not None:
                self._db.execute(
                    "INSERT INTO feed_scopes (id, machine) VALUES (?, ?)", (feed_id, machine)
                )
        return token

    def revoke(self, principal: str, *, now_ms: int, machine: str | None = None) -> bool:
        """Revoke ``principal``'s feed token (of ``machine`` if given, else its general
        one); False if it had none active."""
        with Transaction(self._db):
            return self._revoke(principal, now_ms, machine)

    def _revoke(self, principal: str, now_ms: int, machine: str | None) -> bool:
        if machine is None:
            cursor = self._db.execute(_REVOKE_GENERAL, (now_ms, principal))
        else:
            cursor = self._db.execute(_REVOKE_MACHINE, (now_ms, principal, machine))
        return cursor.rowcount > 0

    def list(self) -> list[FeedInfo]:
        return [
            FeedInfo(str(r[0]), str(r[1]), int(r[2]), r[3], r[4])
            for r in self._db.execute(
                "SELECT f.id, f.principal, f.created_ms, f.revoked_ms, s.machine"
                " FROM feed_tokens f LEFT JOIN feed_scopes s ON s.id = f.id"
                " ORDER BY f.created_ms, f.id"
            )
        ]

    def machine_of(self, presented: str) -> str | None:
        """The machine an (authenticated) feed token is scoped to; None: its general feed."""
        match = _FEED_RE.fullmatch(presented)
        if match is None:
            return None
        row = self._db.execute(
            "SELECT machine FROM feed_scopes WHERE id = ?", (match.group(1),)
        ).fetchone()
        return None if row is None else str(row[0])

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
