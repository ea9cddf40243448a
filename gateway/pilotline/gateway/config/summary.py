"""What ``pilotline check`` prints of a good configuration: the site, each zone's machines,
the outputs."""

from __future__ import annotations

from pilotline.gateway.config.site import SiteConfig

__all__ = ["summarize"]


def summarize(config: SiteConfig) -> str:
    """A few lines for ``pilotline check``: the site, each zone's machines, the outputs."""
    pairs = config.machines()
    by_source = {kind: sum(m.source == kind for _, m in pairs) for kind in ("mqtt", "opcua")}
    sources = ", ".join(f"{n} {kind}" for kind, n in by_source.items() if n)
    lines = [
        f"site {config.site}: {_plural(len(config.zones), 'zone')}, "
        f"{_plural(len(pairs), 'machine')} ({sources})"
    ]
    for zone in config.zones:
        label = f"  {zone.id}: "
        for i, machine in enumerate(zone.machines):
            prefix = label if i == 0 else " " * len(label)
            capabilities = ", ".join(machine.capabilities) or "(no capabilities)"
            lines.append(
                f"{prefix}{machine.id} [{machine.source}: {', '.join(machine.signals())}] "
                f"{capabilities}"
            )
    if config.mqtt is not None:
        lines.append(f"  mqtt broker {config.mqtt.url}")
    if config.influx is not None:
        lines.append(
            f"  influx {config.influx.url} (org {config.influx.org}, bucket {config.influx.bucket})"
        )
    alerts = config.alerts
    if alerts.rules or alerts.channels():
        channels = ", ".join(
            f"{c.name} ({c.KIND}, {c.min_severity}+"
            f"{', zones ' + ' '.join(c.zones) if c.zones else ''})"
            for c in alerts.channels()
        )
        lines.append(
            f"  alerts: {_plural(len(alerts.rules), 'rule')} "
            f"({', '.join(r.name for r in alerts.rules) or 'none'}); "
            f"channels: {channels or 'none (the alert measurement and /api/alerts only)'}"
        )
    lines.append(f"  store {config.store}")
    lines.append(f"  api {config.api.listen}")
    return "\n".join(lines)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
