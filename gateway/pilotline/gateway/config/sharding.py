"""A site configuration cut to one shard's machines (``--shard K/N``, ``shard: K/N``).

``restrict`` applies a shard to a loaded configuration: the zones keep only their owned
machines (a zone with none left is dropped), and the parts that must differ between
gateways started from one file are derived from the shard: the MQTT client id and the store
file (``gateway/shard.py``, which also says who owns which machine, and why). The rest of
the gateway runs unchanged on the smaller configuration.
"""

from __future__ import annotations

from collections.abc import Iterable

from pilotline.gateway.config.site import SiteConfig
from pilotline.gateway.shard import (
    Layout,
    Placed,
    Shard,
    ShardError,
    client_id,
    key_of,
    parse_shard,
    shard_of,
    store_path,
)

__all__ = ["describe", "distribution", "layout", "owned_machines", "restrict"]


def owned_machines(config: SiteConfig, shard: Shard) -> list[str]:
    """Ids of the machines of ``config`` that ``shard`` owns, in file order."""
    return [
        m.id
        for zone, m in config.machines()
        if shard_of(key_of(zone.id, m.id, config.shard_by), shard.count) == shard.index
    ]


def distribution(config: SiteConfig, count: int) -> list[int]:
    """How many machines each of ``count`` shards would own (index 0 is shard 1)."""
    sizes = [0] * count
    for zone, m in config.machines():
        sizes[shard_of(key_of(zone.id, m.id, config.shard_by), count) - 1] += 1
    return sizes


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
    urls = config.api.shard_urls
    if urls is not None and len(urls) != shard.count:
        raise ShardError(
            f"api.shard_urls: {len(urls)} URL(s) for {shard.count} shards: give one per shard, "
            "shard 1 first"
        )
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
    cut._shard_layout = layout(config, shard)  # the machines it no longer has (api/shards.py)
    return cut


def layout(config: SiteConfig, shard: Shard) -> Layout:
    """The whole site's machines, their shard keys and the shards' API URLs: what a gateway
    cut to ``shard`` needs to say where another shard's machine is."""
    return Layout(
        shard=shard,
        machines={
            m.id: Placed(
                key=key_of(zone.id, m.id, config.shard_by),
                owner=m.owner,
                offered=config.offering_of(m)[1] is not None,
            )
            for zone, m in config.machines()
        },
        urls=tuple(config.api.shard_urls or ()),
    )


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
