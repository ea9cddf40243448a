"""The store file's schema: its version, and bringing a file of any older version up to date.

Each version's statements are ``CREATE ... IF NOT EXISTS`` (kept beside the queries of the
table family they belong to) and all of them run on every start, in one transaction, so
versions are independent of each other and a file of any older version is brought up to date
in place. A file of a newer version is refused (``StoreError``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

from pilotline.gateway.store.alert_state import ALERT_STATE_SCHEMA
from pilotline.gateway.store.booking_notices import (
    BOOKING_NOTICES_SCHEMA,
    BOOKING_REMINDERS_SCHEMA,
)
from pilotline.gateway.store.db import Transaction
from pilotline.gateway.store.errors import StoreError
from pilotline.gateway.store.feed_tokens import FEED_SCOPES_SCHEMA, FEED_TOKENS_SCHEMA
from pilotline.gateway.store.interlock import INTERLOCK_SCHEMA
from pilotline.gateway.store.notifications import NOTIFICATIONS_SCHEMA
from pilotline.gateway.store.outbox import (
    DEAD_LETTER_SCHEMA,
    OUTBOX_SCHEMA,
    OUTBOX_VIEW,
    move_v1_rows,
)
from pilotline.gateway.store.plant import HISTORY_SCHEMA, PLANT_SCHEMA
from pilotline.gateway.store.quarantine import QUARANTINE_SCHEMA
from pilotline.gateway.store.reports import REPORTS_SCHEMA
from pilotline.gateway.store.reservations import RESERVATIONS_SCHEMA
from pilotline.gateway.store.resume import RESUME_LOG_SCHEMA, RESUME_SCHEMA
from pilotline.gateway.store.tokens import TOKENS_SCHEMA

SCHEMA_VERSION: Final = 11
"""1: outbox, dead letters, embedded store, quarantine; 2: + api_tokens (hashed);
3: + state_history, reports; 4: + resume; 5: + notifications; 6: + alert_state, silences,
alert_acks; 7: the outbox in batches (``outbox_batch``, the view ``outbox``; older rows are
moved over) and ``resume_log``; 8: + reservations, reservation_events, idempotency
(booking); 9: + interlock_signals (the soft interlock's last signal and seq per machine);
10: + feed_tokens (calendar feeds), booking_notices_cursor; 11: + booking_reminders
(starting_soon and overrun told), feed_scopes (per-machine calendar feeds)."""

_VERSION_TABLE: Final = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"

_STATEMENTS: Final = (
    # version 1
    _VERSION_TABLE,
    *DEAD_LETTER_SCHEMA,
    *PLANT_SCHEMA,
    *QUARANTINE_SCHEMA,
    # 2
    TOKENS_SCHEMA,
    # 3
    *HISTORY_SCHEMA,
    *REPORTS_SCHEMA,
    # 4
    *RESUME_SCHEMA,
    # 5
    *NOTIFICATIONS_SCHEMA,
    # 6
    *ALERT_STATE_SCHEMA,
    # 7 (then ``move_v1_rows`` and ``OUTBOX_VIEW``)
    *OUTBOX_SCHEMA,
    *RESUME_LOG_SCHEMA,
    # 8
    *RESERVATIONS_SCHEMA,
    # 9
    *INTERLOCK_SCHEMA,
    # 10
    *FEED_TOKENS_SCHEMA,
    *BOOKING_NOTICES_SCHEMA,
    # 11
    *BOOKING_REMINDERS_SCHEMA,
    *FEED_SCOPES_SCHEMA,
)


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Create the schema, or check that an existing file is one this code can use."""
    with Transaction(db):
        for statement in _STATEMENTS:
            db.execute(statement)
        move_v1_rows(db)
        db.execute(OUTBOX_VIEW)
        version = db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if version is None:
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        elif version < SCHEMA_VERSION:  # the CREATE ... IF NOT EXISTS above added the rest
            db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        elif version > SCHEMA_VERSION:
            raise StoreError(
                path,
                f"schema version {version} is newer than this pilotline's "
                f"({SCHEMA_VERSION}): upgrade pilotline or use another store file",
            )
