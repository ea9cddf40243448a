"""The operator view of the board (issue 16)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import Response

from pilotline.gateway.board.app import Board, signed_in
from pilotline.gateway.board.sessions import Session
from pilotline.gateway.store.tokens import Role

ROLE = Role.OPERATOR


def add_routes(routes: APIRouter, board: Board) -> None:
    @routes.get("/board/operator")
    async def operator_page(session: Annotated[Session, signed_in(ROLE)]) -> Response:
        return board.render("operator.html", session)
