"""How long the API takes to answer, by route template, method and status.

``RequestTimer`` is the outermost middleware of the app: it times each request to the end of
its answer and counts it in ``Metrics.api_durations`` (plain counts, exposed on scrape as
``pilotline_api_request_duration_seconds``). The labels stay bounded whatever clients send:
the route is the template FastAPI matched (``/api/silences/{silence_id}``), never the path,
and ``unmatched`` when none did; a method outside HTTP's usual ones counts as ``other``.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pilotline.gateway.api.metrics import Histogram

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestTimer:
    def __init__(self, app: ASGIApp, durations: Histogram) -> None:
        self.app = app
        self.durations = durations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the answer started: Starlette answers 500

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            # The router leaves the matched route in the scope (FastAPI's APIRoute.matches).
            route = getattr(scope.get("route"), "path", UNMATCHED)
            method = scope["method"]
            self.durations.observe(
                (route, method if method in METHODS else "other", str(status)),
                time.perf_counter() - started,
            )
