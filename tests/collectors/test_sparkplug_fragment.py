"""The Sparkplug browse's fragment from births (no broker: ``Heard.message`` and ``render``)."""

from __future__ import annotations

import yaml

from pilotline.collectors.sparkplug.browse import Heard, render
from pilotline.collectors.sparkplug.payload import DataType
from pilotline.collectors.sparkplug.proto import sparkplug_b_pb2 as pb


def birth(*metrics: tuple[str, int, object]) -> bytes:
    message = pb.Payload()
    message.seq = 0
    for name, datatype, value in metrics:
        m = message.metrics.add()
        m.name, m.datatype = name, datatype
        if isinstance(value, str):
            m.string_value = value
        elif isinstance(value, bool):
            m.boolean_value = value
        elif isinstance(value, float):
            m.double_value = value
        elif isinstance(value, int):
            m.int_value = value
    return bytes(message.SerializeToString())


def test_a_node_without_a_state_metric_a_device_with_one_and_a_node_only_seen_in_data() -> None:
    heard = Heard()
    heard.message("spBv1.0/G/NBIRTH/n1", birth(
        ("Node Control/Rebirth", DataType.BOOLEAN, False),
        ("bdSeq", DataType.INT64, 0),
        ("Line/SpindleSpeed", DataType.DOUBLE, 1200.0),
        ("Other/SpindleSpeed", DataType.DOUBLE, 3.0),
        ("Recipe", 16, None),  # a DataSet: listed, not mapped
    ))
    heard.message("spBv1.0/G/DBIRTH/n1/Press 7", birth(
        ("Machine Status", DataType.INT32, 2), ("Running", DataType.BOOLEAN, True),
    ))
    heard.message("spBv1.0/G/NDATA/n2", birth(("x", DataType.DOUBLE, 1.0)))
    heard.message("spBv1.0/G/NBIRTH/n3", b"\xff\xff")
    text = render(heard, "mqtt://broker:1883", 3)
    assert "#   Recipe: DataSet = None  (not read by pilotline)" in text
    assert "#   Running: Boolean = 1.0" in text
    assert "no metric looks like a state" in text
    assert "# G/n2: data but no birth heard" in text
    assert "# 1 birth(s) that are not Sparkplug B payloads skipped" in text
    assert "Node Control" not in text
    assert "bdSeq" not in text
    n1, press = yaml.safe_load(text)["machines"]
    assert n1["sparkplug"]["metrics"] == {
        "spindle_speed": "Line/SpindleSpeed", "spindle_speed_2": "Other/SpindleSpeed"}
    assert n1["state"] == {"signal": "spindle_speed"}
    assert press["id"] == "n1-press-7"
    assert press["sparkplug"] == {"group": "G", "node": "n1", "device": "Press 7",
                                  "metrics": {"state": "Machine Status", "running": "Running"}}
    assert press["state"] == {"signal": "state"}


def test_nothing_born() -> None:
    text = render(Heard(), "mqtt://b", 10)
    assert text.endswith("# no machine born: machines: []\n")
