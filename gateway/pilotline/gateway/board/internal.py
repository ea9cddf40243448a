"""The board asks the gateway's own JSON API, in process, as the signed-in principal.

A page never computes what a role may see by itself: it calls the API route a front end
would call, with the session's principal put in the ASGI scope (``IN_PROCESS_PRINCIPAL``,
which ``api.auth.Allow`` takes instead of a bearer token; a client cannot set a scope key),
so every filter, refusal and audit line of the API applies to the board alike. No socket,
no token in clear: the request goes straight into the application.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.types import ASGIApp, Message

from pilotline.gateway.api.auth import IN_PROCESS_PRINCIPAL
from pilotline.gateway.store.tokens import Principal

__all__ = ["Answer", "InternalApi"]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


class InternalApi:
    def __init__(self, app: ASGIApp, host: str) -> None:
        """``app``: the API application; ``host``: a Host its allow-list accepts."""
        self._app = app
        self._host = host

    async def call(
        self,
        principal: Principal,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        client: str = "board",
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """``method path`` as ``principal``; ``params`` without None values; ``headers``
        beside the request's own (an ``Idempotency-Key``)."""
        body = b"" if json is None else orjson.dumps(json)
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None}, doseq=True)
        sent = [
            (b"host", self._host.encode()),
            (b"accept", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if json is not None:
            sent.append((b"content-type", b"application/json"))
        sent += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                 for k, v in (headers or {}).items()]
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": sent,
            "client": (client, 0),
            "server": ("board", 0),
            IN_PROCESS_PRINCIPAL: principal,
        }
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Future()  # the client never goes away before the answer
            raise AssertionError("unreachable")

        status = 500
        answer_headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for key, value in message.get("headers", []):
                    answer_headers[key.decode("latin-1").lower()] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self._app(scope, receive, send)
        return Answer(status, b"".join(chunks), answer_headers)
