"""The structure of a PromQL syntax tree, for comparing trees and walking them.

`promql-parser`'s nodes have no equality of their own; `shape` turns a tree into nested tuples
that are equal exactly when two trees are the same query, which is how a re-printed query is
proven to be the query that was parsed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import promql_parser as pp

Shape = tuple[Any, ...]


def _same(value: str) -> str:
    return value


def children(node: Any) -> list[Any]:
    """The sub-expressions of a node, in order."""
    if isinstance(node, pp.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, pp.SubqueryExpr | pp.ParenExpr | pp.UnaryExpr):
        return [node.expr]
    if isinstance(node, pp.Call):
        return list(node.args)
    if isinstance(node, pp.AggregateExpr):
        return [node.expr] if node.param is None else [node.param, node.expr]
    if isinstance(node, pp.BinaryExpr):
        return [node.lhs, node.rhs]
    return []  # selectors and literals


def nodes(expr: Any) -> Iterator[Any]:
    """Every node of the tree (iteratively, as `depth`)."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(children(node))


def depth(expr: Any) -> int:
    """How many levels deep the tree is (iteratively: the tree may be deeper than Python recurses)."""
    deepest = 0
    stack = [(expr, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children(node))
    return deepest


def shape(node: Any, strings: Callable[[str], str] = _same) -> Shape:
    """The whole tree as nested tuples; `strings` maps each label value and string literal."""
    if isinstance(node, pp.VectorSelector):
        return ("selector", node.name, _matchers(node.matchers, strings), node.offset, _at(node.at))
    if isinstance(node, pp.MatrixSelector):
        return ("matrix", shape(node.vector_selector, strings), node.range)
    if isinstance(node, pp.SubqueryExpr):
        inner = shape(node.expr, strings)
        return ("subquery", inner, node.range, node.step, node.offset, _at(node.at))
    if isinstance(node, pp.Call):
        return ("call", node.func.name, tuple(shape(arg, strings) for arg in node.args))
    if isinstance(node, pp.AggregateExpr):
        param = None if node.param is None else shape(node.param, strings)
        modifier = None if node.modifier is None else (str(node.modifier.type), tuple(node.modifier.labels))
        return ("aggregate", str(node.op), shape(node.expr, strings), param, modifier)
    if isinstance(node, pp.BinaryExpr):
        sides = (shape(node.lhs, strings), shape(node.rhs, strings))
        return ("binary", str(node.op), *sides, _bin_modifier(node.modifier))
    if isinstance(node, pp.ParenExpr):
        return ("paren", shape(node.expr, strings))
    if isinstance(node, pp.UnaryExpr):
        return ("unary", shape(node.expr, strings))
    if isinstance(node, pp.NumberLiteral):
        return ("number", float(node.val).hex())
    if isinstance(node, pp.StringLiteral):
        return ("string", strings(node.val))
    raise TypeError(f"unknown PromQL node {type(node).__name__}")


def _matchers(matchers: pp.Matchers, strings: Callable[[str], str]) -> Shape:
    def one(group: list[pp.Matcher]) -> Shape:
        # A selector's matchers are a set: the printer sorts them.
        return tuple(sorted((str(m.op), m.name, strings(m.value)) for m in group))

    return (one(matchers.matchers), tuple(one(group) for group in matchers.or_matchers))


def _at(at: pp.AtModifier | None) -> Shape | None:
    return None if at is None else (str(at.type), at.at)


def _bin_modifier(modifier: pp.BinModifier | None) -> Shape | None:
    if modifier is None:
        return None
    matching = modifier.matching
    fill = modifier.fill_values
    return (
        str(modifier.card),
        modifier.return_bool,
        None if matching is None else (str(matching.type), tuple(matching.labels)),
        tuple(modifier.group_labels or ()),
        None if fill is None else (fill.lhs, fill.rhs),
    )
