"""Proof that a combined batch query is exactly its arms, read from its syntax tree.

The combined text is `label_replace((a0), L, "0", "", "") or label_replace((a1), L, "1", "", "")
or ...`; parsed, it must be a left-leaning chain of plain `or` whose i-th leaf is that call around
a tree equal to the i-th arm. Anything else (an arm that escaped its parentheses, a label forged
into the chain) fails the proof and the batch is not sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import promql_parser as pp

from watcher.rules.promql_shape import Shape, shape


def proven(text: str, arms: Sequence[Shape], label: str) -> bool:
    try:
        tree = pp.parse(text)
    except Exception:  # the extension raises ValueError for text it cannot parse
        return False
    leaves = _or_chain(tree)
    if len(leaves) != len(arms):
        return False
    return all(
        _is_arm(leaf, arm, label, index) for index, (leaf, arm) in enumerate(zip(leaves, arms, strict=True))
    )


def _or_chain(tree: Any) -> list[Any]:
    """The operands of a chain of `a or b or c` (parsed as `(a or b) or c`), left to right."""
    leaves: list[Any] = []
    node = tree
    while isinstance(node, pp.BinaryExpr) and str(node.op) == "or" and _plain(node.modifier):
        leaves.append(node.rhs)
        node = node.lhs
    leaves.append(node)
    return leaves[::-1]


def _plain(modifier: pp.BinModifier | None) -> bool:
    return modifier is None or (modifier.matching is None and not modifier.return_bool)


def _is_arm(leaf: Any, arm: Shape, label: str, index: int) -> bool:
    if not (isinstance(leaf, pp.Call) and leaf.func.name == "label_replace" and len(leaf.args) == 5):
        return False
    inner, *strings = leaf.args
    if not isinstance(inner, pp.ParenExpr) or shape(inner.expr) != arm:
        return False
    expected = [label, str(index), "", ""]
    return all(isinstance(s, pp.StringLiteral) and s.val == e for s, e in zip(strings, expected, strict=True))
