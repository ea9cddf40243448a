"""A booking request for a machine that another shard's gateway keeps: 421 Misdirected Request.

A gateway started with ``--shard K/N`` keeps only its own machines (gateway/shard.py), and a
machine's bookings live in the store of the gateway that owns it, so a booking route asked
about a machine of another shard cannot answer it. It says where to go instead: 421 as
problem+json with ``machine``, ``shard`` (``"K/N"`` of the owner) and, where the
configuration gives each shard's API (``api.shard_urls``), ``url`` (that gateway's base URL)
and a ``Location`` header with the same path and query there. A client re-sends the same
request (the same body and ``Idempotency-Key``) to it.

Only for a machine the caller may know: a tenant learns of offered machines only, an owner
of its own; any other machine, and one the site does not have, is answered as before, as an
unknown machine (the site's layout is not told to whoever asks).
"""

from __future__ import annotations

from fastapi import Request

from pilotline.gateway.api.auth import Principal, Role
from pilotline.gateway.api.problems import ProblemError
from pilotline.gateway.shard import Layout

__all__ = ["check_owner"]


def check_owner(layout: Layout | None, who: Principal, machine: str, request: Request) -> None:
    """Raises the 421 when ``machine`` is one ``who`` may know that another shard owns."""
    if layout is None:
        return  # unsharded: every machine of the site is here
    placed = layout.machines.get(machine)
    owner = layout.owner_of(machine)
    if placed is None or owner is None or owner == layout.shard:
        return
    if who.role is Role.TENANT:
        if not placed.offered:
            return
    elif not who.sees_owner(placed.owner):
        return
    base = layout.url_of(owner)
    where = f" at {base}" if base else ""
    extra: dict[str, str] = {"machine": machine, "shard": str(owner)}
    headers = {}
    if base:
        extra["url"] = base
        query = request.url.query
        headers["Location"] = f"{base}{request.url.path}" + (f"?{query}" if query else "")
    raise ProblemError(
        421,
        f"machine {machine!r} is kept by shard {owner}'s gateway{where}, not by this one "
        f"(shard {layout.shard}): send the request there",
        headers,
        **extra,
    )
