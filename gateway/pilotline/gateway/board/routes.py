"""The board's routes: sign-in and sign-out, the static files, and each role's view."""

from __future__ import annotations

import secrets
from typing import Annotated

import structlog
from fastapi import APIRouter, FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from pilotline.gateway.board import operator, owner, tenant
from pilotline.gateway.board.app import (
    HEADERS,
    PRE_CSRF,
    STATIC,
    VIEW_OF,
    Board,
    BoardPort,
    SignInNeeded,
    same_origin,
    with_csrf,
)
from pilotline.gateway.board.sessions import COOKIE, Session
from pilotline.gateway.store.tokens import Principal, Role

__all__ = ["add_board"]

log = structlog.get_logger("pilotline.gateway.board")


def add_board(app: FastAPI, gateway: BoardPort) -> None:
    """The board's routes on ``app`` (the API's), under ``/board``."""
    board = Board(gateway, app)
    app.state.board = board
    routes = APIRouter(include_in_schema=False)

    @app.exception_handler(SignInNeeded)
    async def to_sign_in(request: Request, _exc: SignInNeeded) -> Response:
        if request.headers.get("hx-request") == "true":  # htmx would swap the sign-in page
            return Response(status_code=204, headers={**HEADERS, "HX-Redirect": "/board/sign-in"})
        return RedirectResponse("/board/sign-in", status_code=303, headers=HEADERS)

    @routes.get("/board")
    async def board_home(request: Request) -> Response:
        session = board.session_of(request)
        where = "/board/sign-in" if session is None else _home(session.principal)
        return RedirectResponse(where, status_code=303, headers=HEADERS)

    @routes.get("/board/sign-in")
    async def sign_in_page(request: Request) -> Response:
        token = secrets.token_urlsafe(32)
        answer = board.render("sign_in.html", None, signin_csrf=token, error=None)
        _cookie(answer, board, PRE_CSRF, token, max_age=3600, path="/board/sign-in")
        return answer

    @routes.post("/board/sign-in")
    async def sign_in(
        request: Request,
        token: Annotated[str, Form(max_length=200)] = "",
        csrf: Annotated[str, Form(max_length=100)] = "",
    ) -> Response:
        expected = request.cookies.get(PRE_CSRF)
        # compared as bytes: compare_digest refuses a str that is not ASCII (a 500)
        if not same_origin(request) or not expected or not secrets.compare_digest(
            expected.encode(), csrf.encode()
        ):
            raise HTTPException(403, "the sign-in form is out of date: reload it")
        principal, reason = gateway.store.tokens().authenticate(token.strip())
        if principal is None or principal.role is Role.SCRAPER:
            log.warning("board.sign_in_refused", reason=reason if principal is None else "role")
            fresh = secrets.token_urlsafe(32)
            refused = board.render(
                "sign_in.html", None, status=401, signin_csrf=fresh,
                error="This token is not valid here: check it, or ask the operator for one.",
            )
            _cookie(refused, board, PRE_CSRF, fresh, max_age=3600, path="/board/sign-in")
            return refused
        board.sessions.close(request.cookies.get(COOKIE))  # never reuse a session id
        session = board.sessions.open(principal)
        log.info("board.signed_in", who=principal.name, role=principal.role.value)
        answer = RedirectResponse(_home(principal), status_code=303, headers=HEADERS)
        _cookie(answer, board, COOKIE, session.id, max_age=int(board.sessions.max_age_s))
        answer.delete_cookie(PRE_CSRF, path="/board/sign-in")
        return answer

    @routes.post("/board/sign-out")
    async def sign_out(session: Annotated[Session, with_csrf()]) -> Response:
        board.sessions.close(session.id)
        log.info("board.signed_out", who=session.principal.name)
        answer = RedirectResponse("/board/sign-in", status_code=303, headers=HEADERS)
        answer.delete_cookie(COOKIE, path="/board", secure=board.secure, httponly=True,
                             samesite="strict")
        return answer

    @routes.get("/board/static/{name}")
    async def static(name: str) -> Response:
        path = STATIC.get(name)
        if path is None:
            raise HTTPException(404, "no such file")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400",
                                           "X-Content-Type-Options": "nosniff"})

    tenant.add_routes(routes, board)
    owner.add_routes(routes, board)
    operator.add_routes(routes, board)
    # the routes themselves on the app's router (as the API's: an included router would hide
    # them from ``app.routes``, where the access tests look)
    app.router.routes.extend(routes.routes)


def _home(principal: Principal) -> str:
    return f"/board/{VIEW_OF[principal.role]}"


def _cookie(
    answer: Response, board: Board, name: str, value: str, *, max_age: int,
    path: str = "/board",
) -> None:
    answer.set_cookie(name, value, max_age=max_age, path=path, secure=board.secure,
                      httponly=True, samesite="strict")
