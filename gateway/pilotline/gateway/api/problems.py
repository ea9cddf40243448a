"""One error shape for every refusal: ``application/problem+json`` (RFC 9457).

``{"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no silence 'x'",
"instance": "/api/silences/x"}``; a 422 adds ``errors``, one per invalid parameter, each with
``loc`` naming it (``["query", "since"]``, ``["body", "ends_at"]``), ``msg`` and ``type``.
The value sent is not echoed back (it may be large, or be what should not be reflected).

``install`` puts the handlers on the app: FastAPI's ``HTTPException`` (a route's 404, 409,
422; access's 401 and 403), Starlette's (an unknown route, a wrong method), request
validation, and anything unhandled (500; the traceback goes to the log, not the client).
``send_problem`` answers the same way from the ASGI middleware in front of the app (413,
400 for a Host). ``responses`` documents these answers in the OpenAPI document.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

__all__ = [
    "PROBLEM_JSON",
    "FieldError",
    "Problem",
    "ProblemError",
    "ValidationProblem",
    "install",
    "invalid",
    "problem_body",
    "responses",
    "send_problem",
]

PROBLEM_JSON: Final = "application/problem+json"
MAX_DETAILED: Final = 3
"""Invalid parameters summed up in ``detail``; ``errors`` lists them all."""


class Problem(BaseModel):
    """An error answer (RFC 9457)."""

    type: str = Field(default="about:blank", description="`about:blank`: see `title`")
    title: str = Field(description="the HTTP status's phrase")
    status: int
    detail: str = Field(description="what went wrong, for a person")
    instance: str | None = Field(default=None, description="the path asked for")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description='where: `["query", "since"]`, `["body", "ends_at"]`')
    msg: str
    type: str


class ValidationProblem(Problem):
    """A request with invalid parameters (422): ``errors`` names each."""

    errors: list[FieldError]


NOT_SERVED: Final = {
    "/docs": "Swagger UI is not served",
    "/redoc": "ReDoc is not served",
}
_NOT_SERVED_WHY: Final = (
    " (it loads its scripts from a CDN the facility may not reach, and would fetch the "
    "document without a token): GET /openapi.json with a token and open it in any OpenAPI "
    "viewer"
)


def problem_body(status: int, detail: str, instance: str | None, **extra: Any) -> dict[str, Any]:
    title = _title(status)
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                            "detail": detail or title}
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    return body


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _answer(
    request: Request, status: int, detail: str, headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, detail, request.url.path, **extra),
        status_code=status,
        headers=dict(headers) if headers else None,
        media_type=PROBLEM_JSON,
    )


class ProblemError(HTTPException):
    """An ``HTTPException`` whose answer carries members beyond RFC 9457's (``extra``), as
    the 421 of a machine on another shard (api/shards.py) names its shard."""

    def __init__(
        self, status_code: int, detail: str, headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(status_code, detail, dict(headers) if headers else None)
        self.extra = extra


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == 404 and request.url.path in NOT_SERVED:
        detail = NOT_SERVED[request.url.path] + _NOT_SERVED_WHY
    extra = exc.extra if isinstance(exc, ProblemError) else {}
    return _answer(request, exc.status_code, detail, exc.headers, **extra)


def field_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
         "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in errors
    ]


def _summary(errors: Sequence[Mapping[str, Any]]) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:MAX_DETAILED]]
    more = len(errors) - MAX_DETAILED
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def invalid(loc: Sequence[str], msg: str) -> RequestValidationError:
    """A 422 a handler finds itself (a range, a combination), named like pydantic's."""
    return RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": "value_error"}])


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    return _answer(request, 422, _summary(errors), errors=errors)


async def _crash(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's ServerErrorMiddleware still re-raises: uvicorn logs the traceback.
    return _answer(request, 500, "the gateway failed to answer: see its log")


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _crash)


# -- the same answer from ASGI middleware, before the app -------------------------------------

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]


async def send_problem(send: Send, status: int, detail: str, path: str | None = None) -> None:
    body = json.dumps(problem_body(status, detail, path)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- the OpenAPI document -----------------------------------------------------------------------

_SAYS: Final = {
    304: "Not Modified: the answer has the ETag sent in `If-None-Match`",
    401: "No, a malformed, an unknown or a revoked bearer token",
    403: "The token's role may not call this route",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Request body larger than 64 KiB",
    421: "The machine is on another shard's gateway: `shard` names it, `Location` (where "
    "`api.shard_urls` is set) is the same request there",
    422: "Invalid parameters: `errors[].loc` names each",
}


def responses(*codes: int, **says: str) -> dict[int | str, dict[str, Any]]:
    """Documented error answers (``says``: ``e404="no such silence"`` replaces the wording)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        description = says.get(f"e{code}", _SAYS.get(code, _title(code)))
        if code == 304:
            out[code] = {"description": description}
            continue
        schema = "ValidationProblem" if code == 422 else "Problem"
        out[code] = {
            "description": description,
            "content": {PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    return out


def schemas() -> dict[str, Any]:
    """``Problem``, ``ValidationProblem`` and ``FieldError`` for ``components.schemas``."""
    found: dict[str, Any] = {}
    for model in (Problem, ValidationProblem):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found
