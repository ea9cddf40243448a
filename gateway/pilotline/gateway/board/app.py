"""What the board's views share: the ``Board`` (sessions, the in-process API, templates) and
the dependencies that give a page its session.

Every page answer carries a strict Content-Security-Policy (scripts and styles from the
gateway only: no inline script, no CDN), ``no-store`` and ``frame-ancestors 'none'``. A
request without a live session is sent to the sign-in page (303); a form without its
session's CSRF token is refused (403) before anything is done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo

import structlog
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from pilotline.gateway.api.ports import BoardSettings, TokenStore
from pilotline.gateway.board.internal import Answer, InternalApi
from pilotline.gateway.board.sessions import COOKIE, Session, Sessions
from pilotline.gateway.store.tokens import Role
from pilotline.rules.spec import PlantSpec

__all__ = ["HEADERS", "PRE_CSRF", "STATIC", "Board", "BoardPort", "SignInNeeded", "same_origin",
           "signed_in", "with_csrf"]

log = structlog.get_logger("pilotline.gateway.board")

HERE: Final = Path(__file__).parent
STATIC: Final = {
    "htmx.min.js": HERE / "static" / "htmx-2.0.11.min.js",
    "board.css": HERE / "static" / "board.css",
    "board.js": HERE / "static" / "board.js",
    "operator.js": HERE / "static" / "operator.js",
}
"""The files under /board/static/: a fixed list, never a path from the request."""
PRE_CSRF: Final = "pilotline_board_signin"
"""The sign-in form's CSRF cookie (double submit: no session exists yet)."""
HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer Chromium sends "Origin: null" on a form
    # post, and the origin check could not tell the board's own forms from a forged one
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
VIEW_OF: Final = {Role.OPERATOR: "operator", Role.OWNER: "owner", Role.TENANT: "tenant"}


class BoardPort(Protocol):
    """What the board reads of the gateway beside the API it calls."""

    @property
    def config(self) -> BoardSettings: ...
    @property
    def store(self) -> TokenStore: ...
    @property
    def plant_spec(self) -> PlantSpec: ...
    def clock_ms(self) -> int: ...


class Board:
    """Shared by the views: sessions, the in-process API, the templates."""

    def __init__(self, gateway: BoardPort, app: FastAPI, sessions: Sessions | None = None) -> None:
        self.gateway = gateway
        self.sessions = sessions or Sessions()
        self.api = InternalApi(app, host="board.internal")
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.secure = gateway.config.api.tls_cert_file is not None

    @property
    def tz(self) -> ZoneInfo:
        return self.gateway.config.tz

    async def ask(
        self, session: Session, method: str, path: str, *,
        params: dict[str, Any] | None = None, json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """The API's answer to ``method path`` as the session's principal."""
        return await self.api.call(session.principal, method, path, params=params, json=json,
                                   headers=headers)

    def render(
        self, name: str, session: Session | None, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        html = self.templates.get_template(name).render(
            session=session,
            who=session.principal if session else None,
            view=VIEW_OF.get(session.principal.role) if session else None,
            csrf=session.csrf if session else None,
            site=self.gateway.config.site,
            tz=self.tz.key,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    # -- dependencies ----------------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is not None and not self.gateway.store.tokens().active(session.principal.name):
            self.sessions.close(session.id)  # its token was revoked: the session ends with it
            return None
        return session


class SignInNeeded(Exception):  # noqa: N818 - a control-flow signal, answered as a redirect
    """No live session: the answer is a redirect to the sign-in page."""


Page = Callable[..., Awaitable[Response]]


def signed_in(*roles: Role) -> Any:
    """A dependency giving the live session of one of ``roles`` (any role when none)."""

    async def dependency(request: Request) -> Session:
        board: Board = request.app.state.board
        session = board.session_of(request)
        if session is None:
            raise SignInNeeded
        if roles and session.principal.role not in roles:
            raise HTTPException(403, "this page is not for your role")
        return session

    return Depends(dependency)


def with_csrf(*roles: Role) -> Any:
    """As ``signed_in``, for a form post: its ``csrf`` field (or htmx's ``X-CSRF-Token``
    header) must be the session's token, and a cross-site Origin is refused."""

    async def dependency(request: Request) -> Session:
        board: Board = request.app.state.board
        session = board.session_of(request)
        if session is None:
            raise SignInNeeded
        if roles and session.principal.role not in roles:
            raise HTTPException(403, "this page is not for your role")
        presented = request.headers.get("x-csrf-token")
        if presented is None:
            form = await request.form()
            value = form.get("csrf")
            presented = value if isinstance(value, str) else None
        if not same_origin(request) or not session.csrf_ok(presented):
            log.warning("board.csrf_refused", path=request.url.path, who=session.principal.name)
            raise HTTPException(403, "this form is out of date or was not sent by the board: "
                                "reload the page and try again")
        return session

    return Depends(dependency)


def same_origin(request: Request) -> bool:
    """A browser's Origin (or Referer) must name this host; a request with neither (a
    client that is not a browser) is judged by its CSRF token alone."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    rest = origin.split("://", 1)[-1]
    return rest.split("/", 1)[0] == host
