"""Sparkplug B: a host application of pilotline's own (Eclipse Sparkplug 3.0).

``proto/``: the specification's ``sparkplug_b.proto``, vendored unmodified, and the module
``scripts/sparkplug-proto`` generates from it; ``payload.py``: bytes -> ``Payload`` (the only
module that touches protobuf) and values typed by datatype; ``topic.py``: the topic
namespace; ``host.py``: the host's state machine, pure (messages and time in, samples,
offline marks, rebirth requests and reports out); ``config.py``: the ``sparkplug:`` sections;
``collector.py``: the shell, its own MQTT session.
"""
