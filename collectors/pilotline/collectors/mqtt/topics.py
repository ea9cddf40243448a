"""The collector's topics: which machine each one is, how they are subscribed, what was granted.

Each machine's topic filters (an exact topic, or a template's filter: routes.py), all of them
in one SUBSCRIBE at QoS 1 after every connect (also on a resumed session).
Each SUBACK code is checked: a refused topic is logged by name
(``mqtt.subscribe_refused``), a topic granted at QoS 0 too (its messages are not kept while
the gateway is away), and the subscription counts as confirmed only when all were granted.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

__all__ = ["TopicMap"]

log = structlog.get_logger("pilotline.collectors.mqtt")


class TopicMap:
    """Topic filter -> machine: what is subscribed."""

    def __init__(self, topics: Mapping[str, str]) -> None:
        self.machines: dict[str, str] = dict(topics)

    def subscription(self) -> list[tuple[str, SubscribeOptions]]:
        """Every topic for one SUBSCRIBE."""
        # retainHandling=1: the retained message only on a new subscription, not on every
        # resubscription of a resumed session.
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        return [(topic, options) for topic in self.machines]

    def granted(self, reason_codes: list[ReasonCode]) -> bool:
        """Read the SUBACK of ``subscription()``: True if every topic was granted."""
        granted = 0
        for topic, code in zip(self.machines, reason_codes, strict=False):
            if code.value >= 128:
                log.error(
                    "mqtt.subscribe_refused",
                    topic=topic,
                    reason_code=code.value,
                    reason=str(code),
                )
            else:
                granted += 1
                if code.value == 0:
                    log.warning(
                        "mqtt.subscribe_downgraded",
                        topic=topic,
                        detail="granted QoS 0: messages are not kept while the gateway is away",
                    )
        log.info("mqtt.subscribed", topics=granted, refused=len(self.machines) - granted)
        return granted == len(self.machines) == len(reason_codes)
