"""What ``pilotline check`` prints of a good configuration: the site, each zone's machines
(with the offering policy that applies to each), the booking rules of each machine, the
outputs."""

from __future__ import annotations

from pilotline.gateway.config.booking import describe_charge, describe_rules
from pilotline.gateway.config.machine import Machine
from pilotline.gateway.config.site import SiteConfig
from pilotline.rules.booking.charges import ChargeRule

__all__ = ["summarize"]


def summarize(config: SiteConfig) -> str:
    """A few lines for ``pilotline check``: the site, each zone's machines and which offering
    policy applies to each, the outputs."""
    pairs = config.machines()
    kinds = ("mqtt", "opcua", "sparkplug")
    by_source = {kind: sum(m.source == kind for _, m in pairs) for kind in kinds}
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
                f"{capabilities} · {_offer(config, machine)}"
            )
    lines.append("  booking rules (machine > owner > defaults.booking > pilotline's):")
    lines.extend(f"    {_booking(config, machine)}" for _, machine in pairs)
    if config.mqtt is not None:
        lines.append(f"  mqtt broker {config.mqtt.url}")
    if by_source["sparkplug"]:
        host = config.sparkplug
        mode = "passive" if host is None else host.mode
        named = f" ({host.host_id})" if host is not None and host.host_id else ""
        lines.append(f"  sparkplug host: {mode}{named}")
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


def _offer(config: SiteConfig, machine: Machine) -> str:
    source, offering = config.offering_of(machine)
    if offering is None:
        return "not offered: no policy"
    where = {
        "machine": "own policy",
        "owner": f"owner {machine.owner}'s policy",
        "default": "site default",
    }[source]
    return f"offered: {where} ({offering.describe()})"


def _booking(config: SiteConfig, machine: Machine) -> str:
    rules = config.booking_rules(machine.id)
    line = f"{machine.id}: {describe_rules(rules)}"
    charge = config.charge_rule(machine.id)
    if charge != ChargeRule():
        line += f" · {describe_charge(charge, rules.late_cancel_ms)}"
    if machine.maintenance:
        line += f" · {_plural(len(machine.maintenance), 'maintenance period')}"
    return line


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
