"""The latest inputs the gateway refused, with why: for operators only (payloads may hold
what owners and tenants must not see)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from pilotline.gateway.api.auth import OPERATORS
from pilotline.gateway.api.ports import QuarantinePort


def add_routes(routes: APIRouter, gateway: QuarantinePort) -> None:
    """Adds this group's routes to the app's router."""

    @routes.get(
        "/api/quarantine",
        summary="The latest rejected inputs, with reasons. Operators.",
        dependencies=[OPERATORS],
    )
    async def quarantine(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        rows = gateway.store.quarantine(limit)
        for row in rows:
            head = row.get("head")
            if isinstance(head, bytes):
                row["head"] = head.decode("utf-8", "backslashreplace")
        return rows

