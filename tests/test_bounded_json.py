"""JSON parsing with a nesting bound: deep input is a ValueError, never a RecursionError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.notify.inbound.bounded_json import MAX_DEPTH, loads_bounded, nesting_depth

documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab[]{}"\\ '),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=20,
)


@given(documents)
def test_shallow_documents_parse_as_json_loads_does(document: object) -> None:
    text = json.dumps(document)
    assert loads_bounded(text) == json.loads(text)


@given(documents)
def test_brackets_inside_strings_do_not_count(document: object) -> None:
    assert nesting_depth(json.dumps({"s": '[[[{{{\\"[[['})) == 1
    assert nesting_depth(json.dumps(document)) <= MAX_DEPTH


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deep_nesting_is_a_value_error(opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    text = opener * 100_000 + "1" + closer * 100_000
    with pytest.raises(ValueError, match="nested deeper"):
        loads_bounded(text)


def test_exactly_the_bound_parses() -> None:
    assert loads_bounded("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(ValueError):
        loads_bounded("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
