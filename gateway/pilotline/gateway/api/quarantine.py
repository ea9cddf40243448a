"""The latest inputs the gateway refused, with why: for operators only (payloads may hold
what owners and tenants must not see)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from pilotline.gateway.api.auth import OPERATORS
from pilotline.gateway.api.pages import LINK_HEADER, Cursor, after_key, set_next
from pilotline.gateway.api.ports import QuarantinePort
from pilotline.gateway.api.times import Instant
from pilotline.gateway.timefmt import iso


class QuarantinedOut(BaseModel):
    id: int
    arrival_ms: int
    arrival: Instant
    source: str  # the collector: mqtt, opcua
    topic: str
    machine: str | None
    reason: str
    head: str  # the first bytes of the payload, undecodable bytes as \\xNN


def add_routes(routes: APIRouter, gateway: QuarantinePort) -> None:
    """Adds this group's routes to the app's router."""

    @routes.get(
        "/api/quarantine",
        summary="The latest rejected inputs, with reasons, newest first; `limit` a page, a "
        "`Link` header gives the next. Operators.",
        dependencies=[OPERATORS],
        tags=["quarantine"],
        responses={200: {"headers": LINK_HEADER}},
    )
    async def list_quarantine(
        request: Request,
        response: Response,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Cursor = None,
    ) -> list[QuarantinedOut]:
        after = after_key("quarantine", cursor, (int,))
        # newest first: the next page holds the rows older (smaller id) than the cursor's
        rows = gateway.store.quarantine(limit + 1, None if after is None else int(after[0]))
        kept = set_next(request, response, "quarantine", rows, limit=limit,
                        key=lambda r: (r["id"],))
        return [_quarantined(row) for row in kept]


def _quarantined(row: dict[str, Any]) -> QuarantinedOut:
    head = row.get("head")
    return QuarantinedOut(
        id=row["id"],
        arrival_ms=row["arrival_ms"],
        arrival=iso(row["arrival_ms"]),
        source=row["source"],
        topic=row["topic"],
        machine=row.get("machine"),
        reason=row["reason"],
        head=head.decode("utf-8", "backslashreplace") if isinstance(head, bytes) else str(head),
    )
