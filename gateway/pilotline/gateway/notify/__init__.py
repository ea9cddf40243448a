"""Alert notifications: the payload of a grouped notification, the channels that deliver it
(webhooks, e-mail, MQTT) and the sender that drains each channel's durable queue.

For the gateway: stage ``notification_rows(site, notifications)`` in the commit that records
the dispatcher's decision, build ``make_senders(config, store, counts)`` once, run each
sender's ``run()`` as a task named ``notify-<name>`` and call ``notify()`` on all of them
after a commit that queued rows.
"""

from pilotline.gateway.notify.channel import Channel, DeliveryError
from pilotline.gateway.notify.payload import (
    notification_json,
    notification_payload,
    notification_rows,
)
from pilotline.gateway.notify.registry import make_channel, make_senders
from pilotline.gateway.notify.sender import BACKOFF_CAP_S, NotificationSender

__all__ = [
    "BACKOFF_CAP_S",
    "Channel",
    "DeliveryError",
    "NotificationSender",
    "make_channel",
    "make_senders",
    "notification_json",
    "notification_payload",
    "notification_rows",
]
