"""MQTT collector: JSON payloads, one topic per machine, persistent session, manual acks."""

from pilotline.collectors.mqtt.collector import AckToken, MqttCollector, MqttHealth, Quarantined
from pilotline.collectors.mqtt.config import MqttBrokerConfig, MqttMachineSource
from pilotline.collectors.mqtt.parse import REJECT_REASONS, Rejection, decode

__all__ = [
    "REJECT_REASONS",
    "AckToken",
    "MqttBrokerConfig",
    "MqttCollector",
    "MqttHealth",
    "MqttMachineSource",
    "Quarantined",
    "Rejection",
    "decode",
]
