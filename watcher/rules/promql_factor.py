"""Many queries that differ only in one label's value, asked as one (a *family*).

Ops teams write the same rule for every model: `histogram_quantile(0.99, sum by (le)
(rate(request_seconds_bucket{model="fraud"}[5m])))`, then `model="churn"`, and so on. Asked one by
one, Prometheus plans and runs each query on its own; asked as one, with `model=~"churn|fraud"` and
`model` kept through every aggregation and match, it selects and aggregates once, and each series
of the answer carries the model it belongs to. The answer is split back by that label's value: a
rule gets exactly the series its own query would have returned (the label taken off again when its
own query would not have kept it).

That holds only for queries whose every step keeps series of one value apart, so factoring is
refused for anything else (the query is then asked as it is):
- every selector has exactly one matcher on the label, an equality with a non-empty value, the same
  in all selectors of the query, and no `or` matchers;
- functions are from a list that maps each series to itself (rate, *_over_time,
  histogram_quantile, abs, ...): never absent, vector, scalar, label_replace, sort or time;
- aggregations group by the label (it is added to `by`; `without` must not name it), and are among
  sum, avg, min, max, count, group, stddev, stdvar, quantile, topk, bottomk;
- binary operations between vectors match one to one or as sets (the label is added to `on`;
  `ignoring` must not name it), never group_left/right, and both sides keep the label alike;
- no string literals (none of the functions above take one).

The text is printed from the tree by `factored_text` (parenthesised throughout) and proven before it
is sent: parsed again, it must be exactly the original tree with those changes (see `proven`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import promql_parser as pp

from watcher.rules.promql import quote
from watcher.rules.promql_shape import Shape, nodes, shape

# Functions that map each input series to one output series with the same labels (less the
# metric name): a family's series stay apart through them.
_PER_SERIES_FUNCTIONS = frozenset(
    {
        "rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear", "resets",
        "changes", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
        "count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time",
        "last_over_time", "present_over_time", "mad_over_time", "histogram_quantile", "abs",
        "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max", "exp", "ln", "log2", "log10",
        "sqrt", "sgn", "timestamp",
    }
)  # fmt: skip
_GROUPING_AGGREGATIONS = frozenset(
    {"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "quantile"}
)
_SELECTING_AGGREGATIONS = frozenset({"topk", "bottomk"})  # keep whole series, labels and all
_EQUAL = "MatchOp.Equal"
_OPERATORS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}
_ONE_TO_ONE = "VectorMatchCardinality.OneToOne"
_MANY_TO_MANY = "VectorMatchCardinality.ManyToMany"
_ON = "LabelModifierType.Include"
_BY = "AggModifierType.By"
_PLACEHOLDER = "\x00"  # stands for the family's values in its key: no label value holds it


class Unfactorable(Exception):
    """The query is not of the forms a family keeps exact."""


@dataclass(frozen=True)
class Member:
    """A query as a member of its family: the label, its value here, and the family's key."""

    label: str
    value: str
    key: str  # the family's text with a placeholder for the values: equal keys, one family
    keeps_label: bool  # whether the query's own series carry the label


def member_of(tree: Any) -> Member | None:
    """The query as a family member, or None when it cannot be factored."""
    selectors = [node for node in nodes(tree) if isinstance(node, pp.VectorSelector)]
    if not selectors:
        return None
    for label in _candidate_labels(selectors):
        value = _equality(selectors[0], label)
        if value is None or any(_equality(selector, label) != value for selector in selectors):
            continue
        try:
            key = _print(tree, label, _PLACEHOLDER)
            keeps = _keeps(tree, label)
        except Unfactorable:
            return None
        return Member(label, value, key, keeps)
    return None


def factored_text(tree: Any, label: str, values: Sequence[str]) -> str:
    """The family's one query: `tree` with the label matched against every value."""
    return _print(tree, label, _regex(values))


def proven(text: str, tree: Any, label: str, values: Sequence[str]) -> bool:
    """`text` parses back as exactly `tree` with the family's changes, parentheses aside."""
    try:
        sent = pp.parse(text)
    except Exception:  # the extension raises ValueError for text it cannot parse
        return False
    try:
        expected = _expected(tree, label, _regex(values))
    except Unfactorable:
        return False
    return bool(_unwrapped(shape(sent)) == _unwrapped(expected))


def _regex(values: Sequence[str]) -> str:
    """An RE2 alternation matching exactly these values (Prometheus anchors label regexes)."""
    return "|".join(_escape(value) for value in sorted(set(values)))


def _escape(value: str) -> str:
    return "".join("\\" + char if char in r"\.+*?()|[]{}^$" else char for char in value)


def _candidate_labels(selectors: list[Any]) -> list[str]:
    first = selectors[0]
    return sorted({m.name for m in first.matchers.matchers if str(m.op) == _EQUAL and m.name != "__name__"})


def _equality(selector: Any, label: str) -> str | None:
    """The value of the selector's one equality matcher on `label` (None: none, another kind, or
    more than one matcher on it, or `or` matchers)."""
    if selector.matchers.or_matchers:
        return None
    on_label = [m for m in selector.matchers.matchers if m.name == label]
    if len(on_label) != 1 or str(on_label[0].op) != _EQUAL or not on_label[0].value:
        return None
    return str(on_label[0].value)


# --- printing ------------------------------------------------------------------------------------


def _print(node: Any, label: str, values: str) -> str:
    if isinstance(node, pp.VectorSelector):
        return _selector(node, label, values)
    if isinstance(node, pp.MatrixSelector):
        return f"{_selector(node.vector_selector, label, values, bare=True)}[{_duration(node.range)}]" + (
            _offset_at(node.vector_selector)
        )
    if isinstance(node, pp.SubqueryExpr):
        step = _duration(node.step) if node.step is not None else ""
        return f"({_print(node.expr, label, values)})[{_duration(node.range)}:{step}]" + _offset_at(node)
    if isinstance(node, pp.ParenExpr):
        return f"({_print(node.expr, label, values)})"
    if isinstance(node, pp.UnaryExpr):
        return f"-({_print(node.expr, label, values)})"
    if isinstance(node, pp.NumberLiteral):
        return _number(float(node.val))
    if isinstance(node, pp.Call):
        if node.func.name not in _PER_SERIES_FUNCTIONS:
            raise Unfactorable(node.func.name)
        return f"{node.func.name}(" + ", ".join(f"({_print(a, label, values)})" for a in node.args) + ")"
    if isinstance(node, pp.AggregateExpr):
        return _aggregate(node, label, values)
    if isinstance(node, pp.BinaryExpr):
        return _binary(node, label, values)
    raise Unfactorable(type(node).__name__)


def _selector(node: Any, label: str, values: str, *, bare: bool = False) -> str:
    matchers = []
    for matcher in node.matchers.matchers:
        if matcher.name == label:
            matchers.append(f"{label}=~{quote(values)}")
        else:
            matchers.append(f"{matcher.name}{_OPERATORS[str(matcher.op)]}{quote(matcher.value)}")
    text = f"{node.name or ''}{{{', '.join(matchers)}}}"
    return text if bare else text + _offset_at(node)


def _offset_at(node: Any) -> str:
    text = ""
    if node.offset is not None:
        text += f" offset {_signed_duration(node.offset)}"
    if node.at is not None:
        kind = str(node.at.type)
        if kind == "AtModifierType.Start":
            text += " @ start()"
        elif kind == "AtModifierType.End":
            text += " @ end()"
        else:
            text += f" @ {node.at.at.timestamp():.3f}"
    return text


def _duration(value: timedelta | None) -> str:
    if value is None:
        raise Unfactorable("duration")
    milliseconds = round(value.total_seconds() * 1000)
    if milliseconds <= 0:
        raise Unfactorable("duration")
    return f"{milliseconds}ms"


def _signed_duration(value: timedelta) -> str:
    milliseconds = round(value.total_seconds() * 1000)
    return f"-{-milliseconds}ms" if milliseconds < 0 else f"{milliseconds}ms"


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Inf" if value > 0 else "-Inf"
    return repr(value)


def _aggregate(node: Any, label: str, values: str) -> str:
    op = str(node.op)
    if op not in _GROUPING_AGGREGATIONS | _SELECTING_AGGREGATIONS:
        raise Unfactorable(op)
    grouping = _grouping(node, label)
    param = f"({_print(node.param, label, values)}), " if node.param is not None else ""
    return f"{op} {grouping} ({param}({_print(node.expr, label, values)}))"


def _grouping(node: Any, label: str) -> str:
    modifier = node.modifier
    if modifier is None:
        return f"by ({label})"
    labels = list(modifier.labels)
    if str(modifier.type) == _BY:
        return f"by ({_with(labels, label)})"
    if label in labels:
        raise Unfactorable("without the label")
    return f"without ({', '.join(labels)})"


def _with(labels: list[str], label: str) -> str:
    """A `by`/`on` list with the family's label in it."""
    return ", ".join([*labels, *([] if label in labels else [label])])


def _binary(node: Any, label: str, values: str) -> str:
    left, right = _print(node.lhs, label, values), _print(node.rhs, label, values)
    modifier = node.modifier
    text = str(node.op)
    if modifier is not None and modifier.return_bool:
        text += " bool"
    if _vector(node.lhs) and _vector(node.rhs):
        text += _matching(node, label)
    return f"({left}) {text} ({right})"


def _matching(node: Any, label: str) -> str:
    modifier = node.modifier
    card = str(modifier.card) if modifier is not None else _ONE_TO_ONE
    if card not in (_ONE_TO_ONE, _MANY_TO_MANY) or (modifier is not None and modifier.group_labels):
        raise Unfactorable("group_left/right")
    if _keeps(node.lhs, label) != _keeps(node.rhs, label):
        raise Unfactorable("one side keeps the label, the other not")
    matching = modifier.matching if modifier is not None else None
    if matching is None:
        return ""
    labels = list(matching.labels)
    if str(matching.type) == _ON:
        return f" on ({_with(labels, label)})"
    if label in labels:
        raise Unfactorable("ignoring the label")
    return f" ignoring ({', '.join(labels)})"


def _vector(node: Any) -> bool:
    """Whether the node is a vector (a scalar here can only be numbers and their arithmetic)."""
    if isinstance(node, pp.NumberLiteral):
        return False
    if isinstance(node, pp.ParenExpr | pp.UnaryExpr):
        return _vector(node.expr)
    if isinstance(node, pp.BinaryExpr):
        return _vector(node.lhs) or _vector(node.rhs)
    return True


# --- which series keep the label -----------------------------------------------------------------


def _keeps(node: Any, label: str) -> bool:
    """Whether the query's own series carry the label (else it is taken off the family's)."""
    if isinstance(node, pp.VectorSelector | pp.MatrixSelector):
        return True
    if isinstance(node, pp.SubqueryExpr | pp.ParenExpr | pp.UnaryExpr):
        return _keeps(node.expr, label)
    if isinstance(node, pp.Call):
        vectors = [arg for arg in node.args if _vector(arg)]
        return bool(vectors) and _keeps(vectors[-1], label)
    if isinstance(node, pp.AggregateExpr):
        if str(node.op) in _SELECTING_AGGREGATIONS:
            return _keeps(node.expr, label)
        if node.modifier is None:
            return False
        named = label in list(node.modifier.labels)
        return named if str(node.modifier.type) == _BY else not named and _keeps(node.expr, label)
    if isinstance(node, pp.BinaryExpr):
        if not _vector(node.lhs):
            return _keeps(node.rhs, label)
        if not _vector(node.rhs):
            return _keeps(node.lhs, label)
        matching = node.modifier.matching if node.modifier is not None else None
        if matching is not None and str(matching.type) == _ON and str(node.op) not in ("or", "and", "unless"):
            return label in list(matching.labels)
        return _keeps(node.lhs, label)
    return False


# --- the proof's expectation ---------------------------------------------------------------------


def _expected(node: Any, label: str, values: str) -> Shape:
    """`shape` of the tree as the family's query must parse: the label's matcher a regex over the
    values, the label added to every `by` and `on`."""
    rewritten: Shape = _rewrite(shape(node), label, values)
    return rewritten


def _rewrite(value: Any, label: str, values: str) -> Any:
    if not isinstance(value, tuple) or not value:
        return value
    kind = value[0]
    if kind == "selector":
        _, name, (matchers, or_groups), offset, at = value
        changed = tuple(sorted(("MatchOp.Re", label, values) if m[1] == label else m for m in matchers))
        return ("selector", name, (changed, or_groups), offset, at)
    if kind == "aggregate":
        _, op, inner, param, modifier = value
        if modifier is None:
            modifier = (_BY, (label,))
        elif modifier[0] == _BY and label not in modifier[1]:
            modifier = (_BY, (*modifier[1], label))
        return ("aggregate", op, _rewrite(inner, label, values), _rewrite(param, label, values), modifier)
    if kind == "binary":
        _, op, left, right, modifier = value
        if modifier is not None and modifier[2] is not None and modifier[2][0] == _ON:
            labels = modifier[2][1]
            if label not in labels:
                modifier = (*modifier[:2], (_ON, (*labels, label)), *modifier[3:])
        return ("binary", op, _rewrite(left, label, values), _rewrite(right, label, values), modifier)
    return tuple(_rewrite(part, label, values) for part in value)


def _unwrapped(value: Any) -> Any:
    """A shape with parentheses taken out (they group, they do not change what is computed)."""
    if not isinstance(value, tuple):
        return value
    if len(value) == 2 and value[0] == "paren":
        return _unwrapped(value[1])
    return tuple(_unwrapped(part) for part in value)
