"""The 422 of a booking rule broken (``POST /api/reservations``, extend, move).

``rule`` names the rule and ``detail`` says it in a sentence a person can act on (the core's,
``rules/booking/check.py``). Where the rule is about one field, ``errors`` names it as
pydantic's own 422s do (``[{"loc": ["body", "end"], ...}]``), so a form can mark it. A request
outside the offer comes with the nearest offered slots of its length (``alternatives``), as a
409 does: "not offered" alone leaves the person guessing when it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from fastapi.responses import JSONResponse

from pilotline.gateway.api.problems import PROBLEM_JSON, problem_body
from pilotline.gateway.timefmt import iso
from pilotline.rules.booking import BookingRules, Interval, Refused, Request, Reservation, Status
from pilotline.rules.booking.check import alternatives, blocked

__all__ = ["not_offered", "offer_alternatives", "refused"]

FIELD_OF_RULE: Final = {"interval": ("body", "end")}
"""Rules that are about one field of the body: the field."""
OFFERS_HINT: Final = ": pick one of the alternatives, or see GET /api/offers"


def _slot(span: Interval) -> dict[str, Any]:
    return {"start": iso(span[0]), "end": iso(span[1]), "start_ms": span[0], "end_ms": span[1]}


def _answer(detail: str, path: str, **extra: Any) -> JSONResponse:
    return JSONResponse(problem_body(422, detail, path, **extra), status_code=422,
                        media_type=PROBLEM_JSON)


def refused(verdict: Refused, path: str, offered: Sequence[Interval] = ()) -> JSONResponse:
    """The 422 of ``verdict``; ``offered``: for the rule ``offer``, the nearest free slots."""
    extra: dict[str, Any] = {"rule": verdict.rule}
    detail = verdict.message
    field = FIELD_OF_RULE.get(verdict.rule)
    if field is not None:
        extra["errors"] = [{"loc": list(field), "msg": detail, "type": "value_error"}]
    if verdict.rule == "offer":
        extra["alternatives"] = [_slot(a) for a in offered]
        detail += OFFERS_HINT if offered else ": see GET /api/offers"
    return _answer(detail, path, **extra)


def not_offered(machine: str, path: str) -> JSONResponse:
    """No machine of that name, or none a policy offers: the same answer, so a tenant learns
    nothing of machines it may not book."""
    detail = (f"{machine!r} is not offered for booking: GET /api/offers lists the machines "
              "and times you may book")
    return _answer(detail, path, rule="offer",
                   errors=[{"loc": ["body", "machine"], "msg": detail, "type": "value_error"}])


def offer_alternatives(
    request: Request,
    rules: BookingRules,
    offered: Sequence[Interval],
    reservations: Iterable[Reservation],
    now_ms: int,
) -> tuple[Interval, ...]:
    """The nearest free slots of ``request``'s length within ``offered``, around the machine's
    live ``reservations`` (a hold that ran out holds nothing): advice, read outside the
    booking transaction."""
    live = [r for r in reservations if not (
        r.status is Status.HELD and r.hold_until_ms is not None and r.hold_until_ms <= now_ms
    )]
    return alternatives(request, rules, blocked(live, rules.buffer_ms), offered, now_ms)
