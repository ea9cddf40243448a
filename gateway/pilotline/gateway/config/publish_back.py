"""``publish_back:`` (issue 17): what pilotline knows of each machine, published back to the
site's broker for the rest of the plant's namespace (service/publish_back.py).

Absent, nothing is published. Present, every machine's ``state``, ``capacity`` and
``booking`` go, retained, to ``<prefix>/<site>/<zone>/<machine>/{state,capacity,booking}``
on the ``mqtt:`` broker (which the section therefore needs: ``publish_back_checks``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field

from pilotline.collectors.fields import Model, Seconds
from pilotline.gateway.config.locate import Loc

__all__ = ["PublishBack", "publish_back_checks"]

_RESERVED_FIRST_LEVELS: Final = ("spBv1.0",)
"""Namespaces whose topics mean something else: Sparkplug B's (published back beside a
Sparkplug host, never as a fake edge node)."""


def _prefix(value: str) -> str:
    if not value or value.startswith("/") or value.endswith("/") or "//" in value:
        raise ValueError(f"{value!r}: a topic prefix is non-empty, without a leading, "
                         "trailing or doubled /")
    if any(ch in value for ch in "+#\x00"):
        raise ValueError(f"{value!r}: a topic prefix has no wildcards (+, #) or NUL")
    if value.startswith("$"):  # $SYS and the like are the broker's own
        raise ValueError(f"{value!r}: topics starting with $ are the broker's")
    if value.split("/", maxsplit=1)[0] in _RESERVED_FIRST_LEVELS:
        raise ValueError(f"{value!r}: spBv1.0/ is Sparkplug B's namespace; published back "
                         "goes beside it, as plain MQTT (choose another prefix)")
    return value


class PublishBack(Model):
    """The site's ``publish_back:``: each machine's state, capacity and current booking,
    retained on the site's ``mqtt:`` broker under ``<prefix>/<site>/<zone>/<machine>/``
    (README, "Published back"). Who may read those topics is the broker's ACL's to say."""

    prefix: Annotated[str, AfterValidator(_prefix)]
    """The first levels of every topic, e.g. ``uns`` or ``acme/plant-7``; the gateway's
    broker account must be allowed to write ``<prefix>/#``."""
    qos: Literal[0, 1] = 1
    """QoS of the retained messages. With 1 the broker acknowledges each; either way every
    topic is published again after a reconnect."""
    min_interval_s: Annotated[Seconds, Field(le=3600)] = 1.0
    """One topic of one machine is published at most this often: a change sooner waits, and
    only the latest goes out (a machine that flaps does not flood the broker)."""
    tenant_ids: bool = False
    """Put the tenant's id in the ``booking`` messages. Off by default: who booked which
    machine is the operator's to share, and everyone the ACL lets read the topics sees it."""


def publish_back_checks(data: Mapping[str, Any], found: list[tuple[Loc, str]]) -> None:
    """``publish_back:`` needs the site's ``mqtt:`` broker."""
    if data.get("publish_back") is not None and data.get("mqtt") is None:
        found.append(
            (("publish_back",), "publishing back needs the site's mqtt: broker section")
        )
