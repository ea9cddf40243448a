"""The owner view of the board (issue 16)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import Response

from pilotline.gateway.board.app import Board, signed_in
from pilotline.gateway.board.sessions import Session
from pilotline.gateway.store.tokens import Role

ROLE = Role.OWNER


def add_routes(routes: APIRouter, board: Board) -> None:
    @routes.get("/board/owner")
    async def owner_page(session: Annotated[Session, signed_in(ROLE)]) -> Response:
        return board.render("owner.html", session)
