"""One site on several gateways: which gateway owns which machines (``--shard K/N``).

Theory of operation. Every gateway of a sharded site reads the same site configuration and
keeps only its own share of it, computed from the configuration alone: no coordinator, no
shared state, no message between gateways. The share comes from rendezvous (highest random
weight) hashing: a key (the machine id, or its zone id with ``shard_by: zone``) belongs to
the shard ``k`` in ``1..N`` whose ``weight(key, k)`` is the largest. Hence:

- every key belongs to exactly one shard, and every gateway agrees which, because the
  weight is a fixed hash (blake2b of ``k`` and the key; never Python's ``hash()``, which is
  salted per process);
- going from N to N+1 shards moves only the keys the new shard wins (about 1/(N+1) of
  them): the weights of shards 1..N do not change, so no key moves between old shards;
- a key's shard does not depend on the other keys: adding a machine to the file moves no
  other machine.

``restrict`` (``pilotline.gateway.config.sharding``) applies a shard to a loaded
configuration: the zones keep only their owned machines (a zone with none left is dropped),
and the parts that must differ between gateways started from one file are derived from the
shard here: the MQTT client id (``client_id``: the broker keys the persistent session on it,
so two shards sharing one would take it from each other) and the store file (``store_path``:
each gateway keeps its own outbox, resume points and tokens). The rest of the gateway runs
unchanged on the smaller configuration. This module knows nothing of the configuration's
models, which import it to check the ``shard:`` key.

``shard_by: machine`` (the default) spreads machines evenly, even when a site has a few
large zones (the usual case: a site outgrows a gateway by machines, not by zones). A zone's
machines may then sit on several gateways, each of which can only count its own, so their
zone-level points (``zone_capacity``, the zone rows of ``utilization``) carry an extra tag
``shard`` = ``"K/N"`` and readers sum over it (docs/scaling.md). ``shard_by: zone`` keeps
whole zones on one gateway: zone-level points stay whole and untagged, and one gateway
answers for a zone, at the price of an uneven spread when zones are few or unequal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "MAX_SHARDS",
    "Layout",
    "Placed",
    "Shard",
    "ShardBy",
    "ShardError",
    "check_shard_text",
    "client_id",
    "key_of",
    "parse_shard",
    "shard_of",
    "store_path",
    "weight",
    "zone_shard_tag",
]

ShardBy = Literal["zone", "machine"]
MAX_SHARDS: Final = 1024
"""More gateways than this for one site is a mistake, not a plan."""


class ShardError(ValueError):
    """A shard that cannot be used: not ``K/N``, out of range, or owning no machine."""


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` (K, from 1) of ``count`` (N)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ShardError(f"shard {self}: N must be between 1 and {MAX_SHARDS}")
        if not 1 <= self.index <= self.count:
            raise ShardError(
                f"shard {self}: K must be between 1 and {self.count} (shards count from 1)"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def label(self) -> str:
        """``2of4``: the shard in file names and MQTT client ids (no ``/`` there)."""
        return f"{self.index}of{self.count}"


def parse_shard(text: str) -> Shard:
    """``"2/4"`` -> ``Shard(2, 4)``; ``ShardError`` says what is wrong with anything else."""
    k, sep, n = text.strip().partition("/")
    if not (sep and k.isascii() and k.isdigit() and n.isascii() and n.isdigit()):
        raise ShardError(f"shard {text!r} is not K/N, like 2/4 (the 2nd of 4 gateways)")
    return Shard(int(k), int(n))


def check_shard_text(value: object) -> object:
    """The configuration's ``shard:`` key: ``K/N`` as text (YAML reads ``2/4`` as a string)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"shard must be K/N, like 2/4, got {value!r}")
    try:
        return str(parse_shard(value))
    except ShardError as exc:
        raise ValueError(str(exc)) from None


def weight(key: str, index: int) -> int:
    """The rendezvous weight of ``key`` on shard ``index``: 64 bits of blake2b, stable across
    processes, machines and Python versions."""
    digest = hashlib.blake2b(b"%d\x00%s" % (index, key.encode()), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(key: str, count: int) -> int:
    """The shard (1..count) that owns ``key``: the one with the highest weight (ties, which
    64-bit weights make vanishingly rare, go to the lowest index)."""
    if count < 1:
        raise ShardError(f"there must be at least one shard, got {count}")
    best, best_weight = 1, -1
    for index in range(1, count + 1):
        w = weight(key, index)
        if w > best_weight:
            best, best_weight = index, w
    return best


def key_of(zone: str, machine: str, by: ShardBy) -> str:
    """What a machine is sharded by: its zone's id or its own."""
    return zone if by == "zone" else machine


def store_path(path: Path, shard: Shard) -> Path:
    """``var/pilotline.db`` -> ``var/pilotline.shard-2of4.db``: one store per gateway, so two
    gateways started from one file never share one. A single shard (1/1) keeps the path."""
    if shard.count == 1:
        return path
    return path.with_name(f"{path.stem}.shard-{shard.label}{path.suffix}")


def client_id(base: str, shard: Shard) -> str:
    """``pilotline-site`` -> ``pilotline-site-shard-2of4``: one persistent MQTT session per
    gateway (a broker disconnects a client whose id another one connects with). With N in
    it, a new layout starts new sessions rather than inheriting subscriptions of machines
    that moved elsewhere."""
    return base if shard.count == 1 else f"{base}-shard-{shard.label}"


def zone_shard_tag(applied: str, by: ShardBy) -> str:
    """The ``shard`` tag value of zone-level points: ``"K/N"`` when zones may be split
    across several gateways (``shard_by: machine``, N > 1), else ``""`` (no tag)."""
    if not applied or by != "machine":
        return ""
    return "" if parse_shard(applied).count == 1 else applied


# -- where a machine of another shard is: the API's 421 (api/shards.py) ---------------------


@dataclass(frozen=True, slots=True)
class Placed:
    """One machine of the whole site, as a gateway that does not keep it knows it: enough
    to find its shard and to tell whether the caller may know it exists."""

    key: str
    """What it is sharded by: its id, or its zone's id (``key_of``)."""
    owner: str
    offered: bool
    """Whether an offering policy applies to it (tenants know only offered machines)."""


@dataclass(frozen=True, slots=True)
class Layout:
    """The whole site as the shards share it, kept by a cut configuration so that a gateway
    can say which shard owns a machine it does not keep, and where that gateway is."""

    shard: Shard
    """This gateway's shard."""
    machines: Mapping[str, Placed]
    """Every machine of the site, this shard's included."""
    urls: tuple[str, ...] = ()
    """Base URL of each shard's API (index 0 is shard 1), or none: ``api.shard_urls``."""

    def owner_of(self, machine: str) -> Shard | None:
        """The shard owning ``machine``, or None when the site has no such machine."""
        placed = self.machines.get(machine)
        if placed is None:
            return None
        return Shard(shard_of(placed.key, self.shard.count), self.shard.count)

    def url_of(self, shard: Shard) -> str | None:
        """The base URL of ``shard``'s gateway, when the configuration gives them."""
        return self.urls[shard.index - 1] if self.urls else None
