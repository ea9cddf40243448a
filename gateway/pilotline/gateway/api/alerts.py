"""Alerts and what operators do about them: acknowledge, silence.

Owners see the alerts of their own machines; only operators acknowledge and silence.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from pilotline.gateway.api.auth import OPERATORS, OWNERS, Principal
from pilotline.gateway.api.pages import LINK_HEADER, Cursor, Key, after_key, page, set_next
from pilotline.gateway.api.ports import AlertsPort
from pilotline.gateway.api.problems import invalid, responses
from pilotline.gateway.api.times import ApiTime, Instant
from pilotline.gateway.config import duration_ms
from pilotline.gateway.notify.alerting import SilenceLimitError
from pilotline.gateway.store.alert_state import StoredSilence
from pilotline.gateway.timefmt import MAX_MS, MIN_MS, iso
from pilotline.rules.alerts import AlertView
from pilotline.rules.dispatch import Label, Silence
from pilotline.rules.labels import SEVERITIES, Severity

DAY_MS = 86_400_000
MAX_SILENCE_MS = 90 * DAY_MS
"""The longest silence the API sets: a forgotten silence must not mute a site for ever."""
MAX_SILENCE_AHEAD_MS = 366 * DAY_MS
"""How far ahead a silence may start: with ``MAX_SILENCE_MS`` it ends within reach of
``iso()`` and of any plan an operator can mean."""
MAX_PAGE = 1000
TAG = "alerts"


class AlertOut(BaseModel):
    rule: str
    machine: str
    zone: str
    owner: str
    severity: Severity
    status: Literal["pending", "firing"]
    since: Instant  # the condition has held since
    firing_since: Instant
    value: float | None
    message: str
    acked_by: str | None = None  # who acknowledged it (firing alerts; cleared on resolve)
    acked_at: Instant = None
    silenced_by: list[str] = Field(default_factory=list)  # ids of the silences muting it


class AckIn(BaseModel):
    """Acknowledge a firing alert: its repeats stop until it resolves."""

    rule: str = Field(min_length=1, max_length=200)
    machine: str = Field(min_length=1, max_length=400)  # a machine id, or a collector's name
    comment: str = Field(default="", max_length=1000)


class AckOut(BaseModel):
    rule: str
    machine: str
    acked_by: str
    acked_at: Instant


class SilenceIn(BaseModel):
    """Mute the notifications of every alert whose labels equal all ``matchers`` (labels:
    rule, zone, severity, machine, owner) from ``starts_at`` (default now; epoch ms or ISO 8601
    with a zone) until ``ends_at``, or for ``duration`` (``30m``, ``2h``, ``1d``)."""

    matchers: dict[Label, Annotated[str, Field(min_length=1, max_length=400)]] = Field(
        min_length=1
    )
    starts_at: ApiTime = None
    ends_at: ApiTime = None
    duration: str | None = Field(default=None, max_length=40)
    comment: str = Field(default="", max_length=1000)


class SilenceOut(BaseModel):
    id: str
    matchers: dict[Label, str]
    starts_at: Instant
    ends_at: Instant
    created_by: str
    created_at: Instant
    comment: str
    active: bool


def add_routes(routes: APIRouter, gateway: AlertsPort) -> None:
    """Adds this group's routes to the app's router."""

    @routes.get(
        "/api/alerts",
        summary="Pending and firing alerts, most severe first, then by rule and machine; "
        "`limit` a page, a `Link` header gives the next. Operators; owners: their own machines.",
        tags=[TAG],
        responses={200: {"headers": LINK_HEADER}},
    )
    async def list_alerts(
        request: Request,
        response: Response,
        who: Annotated[Principal, OWNERS],
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
        cursor: Cursor = None,
    ) -> list[AlertOut]:
        after = after_key("alerts", cursor, (int, str, str))
        seen = sorted((a for a in gateway.alerts.view() if who.sees_owner(a.owner)), key=_alert_key)
        shown = set_next(request, response, "alerts", page(seen, limit, _alert_key, after),
                         limit=limit, key=_alert_key)
        return [
            AlertOut(
                rule=a.rule,
                machine=a.machine,
                zone=a.zone,
                owner=a.owner,
                severity=a.severity,
                status="firing" if a.status.value == "firing" else "pending",
                since=iso(a.since_ms),
                firing_since=iso(a.firing_since_ms),
                value=a.value if math.isfinite(a.value) else None,
                message=a.message,
                **_marks(gateway, a),
            )
            for a in shown
        ]

    @routes.post(
        "/api/alerts/ack",
        summary="Acknowledge a firing alert (who and when are kept); it stops repeating. "
        "Operators.",
        tags=[TAG],
        responses=responses(404, e404="No firing alert of that rule on that machine"),
    )
    async def acknowledge_alert(body: AckIn, who: Annotated[Principal, OPERATORS]) -> AckOut:
        at_ms = gateway.acknowledge(body.rule, body.machine, who.name, body.comment)
        if at_ms is None:
            raise HTTPException(404, f"no firing alert {body.rule!r} on {body.machine!r}")
        return AckOut(rule=body.rule, machine=body.machine, acked_by=who.name, acked_at=iso(at_ms))

    @routes.get("/api/silences", summary="Active, future and recent silences, newest first; "
                "`limit` a page, a `Link` header gives the next. Operators.",
                dependencies=[OPERATORS], tags=[TAG], responses={200: {"headers": LINK_HEADER}})
    async def list_silences(
        request: Request,
        response: Response,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
        cursor: Cursor = None,
    ) -> list[SilenceOut]:
        after = after_key("silences", cursor, (int, str))
        now_ms = gateway.clock_ms()
        listed = sorted(gateway.silences(), key=_silence_key)
        shown = set_next(request, response, "silences", page(listed, limit, _silence_key, after),
                         limit=limit, key=_silence_key)
        return [_silence(s.silence, s.created_ms, now_ms) for s in shown]

    @routes.post("/api/silences", status_code=201,
                 summary="Mute matching alerts' notifications until an end time. Operators.",
                 tags=[TAG],
                 responses=responses(409, e409="`alerts.max_silences` silences are active or "
                                     "to come"))
    async def create_silence(body: SilenceIn, who: Annotated[Principal, OPERATORS]) -> SilenceOut:
        now_ms = gateway.clock_ms()
        starts_ms = now_ms if body.starts_at is None else body.starts_at
        if (body.ends_at is None) == (body.duration is None):
            raise invalid(("body",), "give exactly one of ends_at and duration")
        if starts_ms > now_ms + MAX_SILENCE_AHEAD_MS:
            raise invalid(("body", "starts_at"), "a silence starts at most 366 days ahead")
        if body.ends_at is not None:
            ends_ms = body.ends_at
        else:
            assert body.duration is not None
            try:
                ends_ms = starts_ms + duration_ms(body.duration)
            except ValueError as e:
                raise invalid(("body", "duration"), str(e)) from None
        if ends_ms <= max(starts_ms, now_ms):
            raise invalid(
                ("body", "ends_at"), "the silence would end before it starts or in the past"
            )
        if ends_ms - starts_ms > MAX_SILENCE_MS:
            raise invalid(("body",), "a silence lasts at most 90 days")
        try:
            silence = gateway.add_silence(
                {str(k): v for k, v in body.matchers.items()}, starts_ms, ends_ms, who.name,
                body.comment,
            )
        except SilenceLimitError as e:
            raise HTTPException(
                409, f"{e.limit} silences are already active or to come (alerts.max_silences):"
                " end one (DELETE /api/silences/{id}) or widen an existing one's matchers",
            ) from None
        return _silence(silence, now_ms, now_ms)

    @routes.delete("/api/silences/{silence_id}", summary="End a silence now. Operators.",
                   dependencies=[OPERATORS], tags=[TAG],
                   responses=responses(404, e404="No silence with that id"))
    async def end_silence(silence_id: str) -> SilenceOut:
        ended = gateway.end_silence(silence_id)
        if ended is None:
            raise HTTPException(404, f"no silence {silence_id!r}")
        return _silence(ended.silence, ended.created_ms, gateway.clock_ms())


def _alert_key(view: AlertView) -> Key:
    """Most severe first, then by rule and machine: unique, and stable between pages."""
    rank = SEVERITIES.index(view.severity) if view.severity in SEVERITIES else -1
    return (-rank, view.rule, view.machine)


def _silence_key(stored: StoredSilence) -> Key:
    """Newest first, then by id (the store's order)."""
    return (-stored.created_ms, stored.silence.id)


def _marks(gateway: AlertsPort, view: AlertView) -> dict[str, Any]:
    mark = gateway.alert_marks(view)
    return {
        "acked_by": mark.acked_by,
        "acked_at": iso(mark.acked_ms),
        "silenced_by": list(mark.silenced_by),
    }


def _silence(silence: Silence, created_ms: int, now_ms: int) -> SilenceOut:
    """A silence as listed. Cannot fail for a stored one (the store hands out only valid
    silences): a time that an older version let past the year 9999 is shown as the last
    instant ISO 8601 can print, so the silence stays listed and can be ended."""
    return SilenceOut(
        id=silence.id,
        matchers=dict(silence.matchers),
        starts_at=_iso(silence.starts_ms),
        ends_at=_iso(silence.ends_ms),
        created_by=silence.created_by,
        created_at=_iso(created_ms),
        comment=silence.comment,
        active=silence.starts_ms <= now_ms < silence.ends_ms,
    )


def _iso(ms: int) -> str:
    return iso(min(max(ms, MIN_MS), MAX_MS))
