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

``restrict`` applies a shard to a loaded configuration: the zones keep only their owned
machines (a zone with none left is dropped), and the parts that must differ between
gateways started from one file are derived from the shard: the MQTT client id (the broker
keys the persistent session on it, so two shards sharing one would take it from each other)
and the store file (each gateway keeps its own outbox, resume points and tokens). The rest
of the gateway runs unchanged on the smaller configuration.

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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from pilotline.gateway.config import SiteConfig

__all__ = [
    "MAX_SHARDS",
    "Shard",
    "ShardBy",
    "ShardError",
    "check_shard_text",
    "client_id",
    "describe",
    "distribution",
    "owned_machines",
    "parse_shard",
    "restrict",
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


def _key(zone: str, machine: str, by: ShardBy) -> str:
    return zone if by == "zone" else machine


def owned_machines(config: SiteConfig, shard: Shard) -> list[str]:
    """Ids of the machines of ``config`` that ``shard`` owns, in file order."""
    return [
        m.id
        for zone, m in config.machines()
        if shard_of(_key(zone.id, m.id, config.shard_by), shard.count) == shard.index
    ]


def distribution(config: SiteConfig, count: int) -> list[int]:
    """How many machines each of ``count`` shards would own (index 0 is shard 1)."""
    sizes = [0] * count
    for zone, m in config.machines():
        sizes[shard_of(_key(zone.id, m.id, config.shard_by), count) - 1] += 1
    return sizes


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


def restrict(config: SiteConfig, shard: Shard | None = None) -> SiteConfig:
    """``config`` cut down to the machines of ``shard`` (default: its ``shard:`` key), with
    the store file and MQTT client id of that shard; ``config`` itself when neither is set.

    Raises ``ShardError`` when the shard owns no machine (a gateway with nothing to do is a
    layout mistake: fewer shards, or ``shard_by: machine``), or when ``config`` was already
    cut to another shard. Applying the same shard twice returns it unchanged.
    """
    if shard is None:
        if config.shard is None:
            return config
        shard = parse_shard(config.shard)
    applied = config.applied_shard
    if applied:
        if applied == str(shard):
            return config
        raise ShardError(f"this configuration is already cut to shard {applied}, not {shard}")
    owned = set(owned_machines(config, shard))
    if not owned:
        sizes = distribution(config, shard.count)
        empty = sum(1 for size in sizes if size == 0)
        hint = (
            f"with shard_by: zone the site's {len(config.zones)} zone(s) fill only "
            f"{shard.count - empty} of {shard.count} shards: use fewer shards or "
            "shard_by: machine"
            if config.shard_by == "zone"
            else f"{empty} of {shard.count} shards would be empty: use fewer shards"
        )
        raise ShardError(
            f"shard {shard} owns none of the site's {len(config.machines())} machines: {hint}"
        )
    zones = [
        zone.model_copy(update={"machines": [m for m in zone.machines if m.id in owned]})
        for zone in config.zones
        if any(m.id in owned for m in zone.machines)
    ]
    update: dict[str, object] = {
        "zones": zones,
        "shard": str(shard),
        "store": store_path(config.store, shard),
    }
    if config.mqtt is not None:
        base = config.mqtt.client_id or f"pilotline-{config.site}"
        update["mqtt"] = config.mqtt.model_copy(update={"client_id": client_id(base, shard)})
    cut = config.model_copy(update=update)
    cut._applied_shard = str(shard)  # what marks it cut (zone tag, idempotence)
    return cut


def describe(config: SiteConfig, shard: Shard, full: SiteConfig) -> Iterable[str]:
    """Lines for ``pilotline check --shard``: what the shard owns, and the whole layout."""
    total = len(full.machines())
    mine = len(config.machines())
    yield (
        f"shard {shard} (by {full.shard_by}) of site {full.site}: {mine} of {total} machines, "
        f"{len(config.zones)} of {len(full.zones)} zones"
    )
    if config.mqtt is not None:
        yield f"  mqtt client id {config.mqtt.client_id}"
    tag = config.shard_tag
    if tag:
        yield f"  zone-level points tagged shard={tag}: sum them over the shard tag"
    sizes = distribution(full, shard.count)
    layout = ", ".join(f"{i}/{shard.count}: {n}" for i, n in enumerate(sizes, 1))
    yield f"  machines per shard: {layout}"
