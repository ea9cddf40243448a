"""Reading the YAML: the quick path (libyaml events, no node tree) and the node tree agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pilotline.gateway.config import ConfigError, load_config, yamlfile

pytestmark = pytest.mark.skipif(
    getattr(yaml, "CSafeLoader", None) is None, reason="PyYAML without libyaml"
)

PLAIN = """\
# a comment
site: x
ints: [1, 0x1f, 0o17, 1_000, -3, 1:30, +7]
floats: [1.5, .inf, -.inf, 1e3, 6.]
bools: [yes, no, on, off, true, False]
nulls: [~, null, ]
dates: [2024-01-02, 2024-01-02 10:00:00+02:00, 2024-01-02T10:00:00Z]
strings: ["quoted: yes", 'single', plain text, "01", "1.5"]
nested:
  - {a: 1, b: [x, y]}
  - key: |
      literal
      block
    other: >
      folded
      text
"1": one
2: two
'no': three
empty: {}
none: []
"""

NOT_PLAIN = [
    "a: &x 1\nb: *x\n",  # anchor and alias
    "base: &b {x: 1}\nm: {<<: *b, y: 2}\n",  # merge key
    "a: !!str 1\n",  # explicit tag
    "a: 1\na: 2\n",  # duplicate key
    "1: a\n01: b\n",  # keys equal once constructed
    "? [a, b]\n: c\n",  # complex key
    "a: 1\n---\nb: 2\n",  # two documents
    "- a\n- b\n",  # not a mapping
    "",  # empty
    "a: [1, 2\n",  # a syntax error
    "a: 2024-13-40\n",  # a bad implicit timestamp
    "a: \x07\n",  # a character YAML does not allow
]


def test_plain_yaml_reads_the_same_without_the_node_tree() -> None:
    quick = yamlfile.quick_data(PLAIN)
    assert quick is not None
    full = yamlfile.compose(PLAIN, "t")[1]
    assert quick == full
    assert [type(v) for v in quick["bools"]] == [bool] * 6  # not 1 == True
    assert repr(quick) == repr(full)


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_anything_else_takes_the_full_path(text: str) -> None:
    assert yamlfile.quick_data(text) is None


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.dates()
)
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _values, max_size=5), st.booleans())
def test_dumped_data_reads_back_the_same_both_ways(data: dict[str, Any], flow: bool) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    quick = yamlfile.quick_data(text)
    full = yamlfile.compose(text, "t")[1]
    assert quick is None or repr(quick) == repr(full)
    assert quick == full or quick is None


def _lines(node: yaml.Node) -> list[tuple[str, int, int]]:
    out = [(node.tag, node.start_mark.line, node.end_mark.line)]
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out += _lines(key) + _lines(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            out += _lines(item)
    return out


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_libyaml_marks_the_same_lines_as_the_pure_loader(newline: str) -> None:
    text = (PLAIN + "base: &b {x: 1}\nm: {<<: *b, y: 2}\nlong: 'a\n  b'\n").replace("\n", newline)
    lines = []
    for loader in (yaml.CSafeLoader, yaml.SafeLoader):
        root = loader(text).get_single_node()
        assert root is not None
        lines.append(_lines(root))
    assert lines[0] == lines[1]


GOOD = """\
site: s
store: {store}
zones:
  - id: z
    machines:
      - id: m1
        owner: o
        mqtt: {{topic: t/m1}}
        state: {{signal: state}}
mqtt: {{url: "mqtt://127.0.0.1:1883"}}
"""


def test_a_good_file_is_never_composed_and_a_bad_one_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    compose = yamlfile.compose

    def counted(text: str, source: str) -> Any:
        calls.append(source)
        return compose(text, source)

    monkeypatch.setattr(yamlfile, "compose", counted)
    path = tmp_path / "site.yaml"
    path.write_text(GOOD.format(store=tmp_path / "gw.db"))
    assert load_config(path).site == "s"
    assert calls == []
    path.write_text(GOOD.format(store=tmp_path / "gw.db").replace("t/m1}", "t/m1, qos: 7}"))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert [(i.path, i.line) for i in raised.value.issues] == [
        ("zones[0].machines[0].mqtt.qos", 8)
    ]
    assert len(calls) == 1  # to find the line


def test_machines_share_their_models_fields_sets_and_stay_frozen(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    second = (
        "      - id: m2\n        owner: o\n"
        "        mqtt: {topic: t/m2}\n        state: {signal: s}\n"
    )
    text = GOOD.format(store=tmp_path / "gw.db")
    path.write_text(text.replace("mqtt: {url", second + "mqtt: {url"))
    config = load_config(path)
    (_, m1), (_, m2) = config.machines()
    assert m1.model_fields_set == {"id", "owner", "mqtt", "state"}
    assert m1.__pydantic_fields_set__ is m2.__pydantic_fields_set__
    assert m1.state.model_fields_set is m2.state.model_fields_set
    with pytest.raises(ValueError, match="frozen"):
        m1.owner = "other"  # type: ignore[misc]
    assert m2.model_fields_set == {"id", "owner", "mqtt", "state"}
    moved = m1.model_copy(update={"debounce_s": 5.0})
    assert moved.model_fields_set == {"id", "owner", "mqtt", "state", "debounce_s"}
    assert m2.model_fields_set == {"id", "owner", "mqtt", "state"}
