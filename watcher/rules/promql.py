"""PromQL read as a syntax tree: parsed, measured (lookback) and re-printed, never pasted.

A rule's query is parsed with `promql-parser` (a maintained port of Prometheus' own parser).
`{{ version }}` (SPEC section 2) stands for the target's live version as a quoted PromQL string:
it is parsed as a per-process sentinel string literal and may only stand where a string literal
is valid (a label value, a string argument), never inside quotes, as a label name or as a regular
expression (where a version's dots would match any character). What is sent to Prometheus is
always the tree re-printed, the version put in as a properly escaped literal, and proven by
parsing the result again: no query or version can change the shape of what is sent.

Limits: a query is at most MAX_QUERY_CHARS characters, MAX_OPERATORS operators and parentheses
and MAX_DEPTH levels deep (the parser recurses on the machine stack and takes time that grows with
the square of the nesting; its printer indents every level).
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import promql_parser as pp

from watcher.rules.promql_shape import children, depth, nodes, shape

PLACEHOLDER = re.compile(r"\{\{\s*version\s*\}\}")
MAX_QUERY_CHARS = 8 * 1024
MAX_DEPTH = 200
# The parser's time grows with the square of the nesting: bounded before it runs.
MAX_OPERATORS = 1000
# Beyond this the backwards scan for an error's position is not worth its cost.
_MAX_SCANNED = 4096
_MAX_MESSAGE = 160
# Random per process: no query can contain it by chance, nor aim at it.
_SENTINEL = f"__watcher_version_{secrets.token_hex(8)}__"
_ZERO = timedelta(0)
_PLACEHOLDER_HINT = (
    "{{ version }} stands for a quoted PromQL string: write it as a label value or a string "
    "argument, without quotes (version={{ version }})"
)


def _register_renamed_functions() -> None:
    # Prometheus 2.x's holt_winters became double_exponential_smoothing in 3.0; rules written for
    # the Prometheus 2 that Debian ships still use the old name.
    scalar = pp.ValueType.Scalar
    renamed = pp.Function("holt_winters", [pp.ValueType.Matrix, scalar, scalar], pp.ValueType.Vector)
    with contextlib.suppress(ValueError):  # known already (registrations are process-wide)
        pp.register_extra_functions([renamed])


_register_renamed_functions()


class ResultType(StrEnum):
    VECTOR = "vector"
    SCALAR = "scalar"
    MATRIX = "matrix"
    STRING = "string"


@dataclass(frozen=True)
class PromqlProblem:
    """Why a query cannot be used; `offset` is the character in the query where it shows, when known."""

    message: str
    offset: int | None = None


@dataclass(frozen=True)
class NeedsVersion:
    """The query uses {{ version }} and no live version was given: it must not be sent."""

    message: str = "the query uses {{ version }} and the target's live version is not known"


@dataclass(frozen=True, eq=False)
class ParsedQuery:
    """A query that parsed: its text as written and its tree ({{ version }} as the sentinel)."""

    text: str
    expr: pp.Expr
    canonical: str  # the tree re-printed, sentinel in place
    version_uses: int
    result_type: ResultType
    # Every label name and string the query mentions (matcher names and values, by/on/... labels,
    # string arguments): what a caller needs to know that a query cannot touch a label of its own.
    mentions: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class PinnedWindow:
    """Samples read from a fixed interval of time, whatever the evaluation time."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class Lookback:
    """How far back a query reads.

    `span`: how long before the evaluation time the query's sliding parts read samples (the longest
    range plus offset, subqueries adding their range and offset to what they contain; Prometheus'
    5-minute lookback delta of instant selectors is not counted). A selector or subquery pinned with
    `@ <timestamp>` no longer slides with the evaluation time: it reads the same samples at every
    evaluation, listed in `pinned` as absolute windows and not counted in `span`. `@ start()` and
    `@ end()` are the evaluation time itself for an instant query, so they slide.
    """

    span: timedelta
    pinned: tuple[PinnedWindow, ...] = ()

    @property
    def slides(self) -> bool:
        """False when every selector is pinned: the query reads the same samples every time."""
        return self.span > _ZERO or not self.pinned

    @property
    def pinned_at(self) -> datetime | None:
        """The latest moment a pinned part reads, or None when nothing is pinned."""
        return max((window.end for window in self.pinned), default=None)


def parse_query(text: str) -> ParsedQuery | PromqlProblem:
    """The parsed query, or why it cannot be used (the parser's message, where it shows)."""
    if len(text) > MAX_QUERY_CHARS:
        return PromqlProblem(f"the query is longer than {MAX_QUERY_CHARS} characters")
    if _operators(text) > MAX_OPERATORS:
        return PromqlProblem(f"the query has more than {MAX_OPERATORS} operators and parentheses")
    if _SENTINEL in text:
        return PromqlProblem("the query contains a reserved name")
    substituted, spans = _substitute(text)
    expr = _parse(substituted)
    if isinstance(expr, _Failure):
        if spans and not isinstance(_parse(PLACEHOLDER.sub("", text)), _Failure):
            return PromqlProblem(_PLACEHOLDER_HINT, spans[0].start)  # quoted, say: "{{ version }}"
        return _problem(substituted, expr.message, spans)
    if depth(expr) > MAX_DEPTH:
        return PromqlProblem(f"the query is nested more than {MAX_DEPTH} levels deep")
    canonical = expr.prettify()
    again = _parse(canonical)
    if isinstance(again, _Failure) or shape(again) != shape(expr):
        return PromqlProblem("the query cannot be re-printed faithfully")
    uses = _version_uses(expr, canonical)
    if isinstance(uses, PromqlProblem):
        return PromqlProblem(uses.message, spans[0].start)
    mentions = frozenset(_mentions(expr)) - {_SENTINEL}
    return ParsedQuery(text, expr, canonical, uses, _result_type(expr), mentions)


def uses_version(parsed: ParsedQuery) -> bool:
    return parsed.version_uses > 0


def render(parsed: ParsedQuery, version: str | None) -> str | NeedsVersion | PromqlProblem:
    """The query text to send: the tree re-printed, `{{ version }}` as an escaped string literal.

    A query without the placeholder renders the same whatever the version. A PromqlProblem here
    means the proof failed (the re-parsed text is not the query's tree with the version in place):
    the query must not be sent."""
    if not uses_version(parsed):
        return parsed.canonical
    if version is None:
        return NeedsVersion()
    literal = quote(version)
    text = parsed.canonical.replace(f'"{_SENTINEL}"', literal)
    sent = _parse(text)
    expected = shape(parsed.expr, lambda value: version if value == _SENTINEL else value)
    if isinstance(sent, _Failure) or shape(sent) != expected:
        return PromqlProblem("the live version cannot be written into the query")
    return text


def quote(value: str) -> str:
    """`value` as a double-quoted PromQL string literal."""
    escaped = []
    for char in value:
        if char in _ESCAPES:
            escaped.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\x{ord(char):02x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def lookback(parsed: ParsedQuery) -> Lookback:
    """How far back before the evaluation time the query reads samples (see Lookback)."""
    reads: list[_Read] = []
    _collect(parsed.expr, _Anchor(None, _ZERO, _ZERO), reads)
    sliding = [read.earliest for read in reads if read.pinned is None]
    span = max([_ZERO, *sliding])
    windows: dict[datetime, PinnedWindow] = {}
    for read in reads:
        if read.pinned is None:
            continue
        start, end = read.pinned - read.earliest, read.pinned - read.latest
        known = windows.get(read.pinned)
        if known is not None:
            start, end = min(start, known.start), max(end, known.end)
        windows[read.pinned] = PinnedWindow(start, end)
    return Lookback(span, tuple(sorted(windows.values(), key=lambda window: window.start)))


# --- lookback -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Anchor:
    """Where a node is evaluated: before `pinned` (None: the evaluation time) by `near` at the
    latest and `far` at the earliest (a subquery evaluates its inside over a range)."""

    pinned: datetime | None
    near: timedelta
    far: timedelta


@dataclass(frozen=True)
class _Read:
    pinned: datetime | None
    earliest: timedelta  # how long before the anchor the oldest sample read is
    latest: timedelta


def _collect(node: Any, anchor: _Anchor, reads: list[_Read]) -> None:
    if isinstance(node, pp.VectorSelector):
        reads.append(_selector_read(node, anchor, _ZERO))
    elif isinstance(node, pp.MatrixSelector):
        reads.append(_selector_read(node.vector_selector, anchor, node.range))
    elif isinstance(node, pp.SubqueryExpr):
        moved = _moved(anchor, node.at)
        offset = node.offset or _ZERO
        range_ = node.range or _ZERO
        inside = _Anchor(moved.pinned, moved.near + offset, moved.far + offset + range_)
        _collect(node.expr, inside, reads)
    else:
        for child in children(node):
            _collect(child, anchor, reads)


def _selector_read(selector: pp.VectorSelector, anchor: _Anchor, range_: timedelta) -> _Read:
    moved = _moved(anchor, selector.at)
    offset = selector.offset or _ZERO
    return _Read(moved.pinned, moved.far + offset + range_, moved.near + offset)


def _moved(anchor: _Anchor, at: pp.AtModifier | None) -> _Anchor:
    if at is None:
        return anchor
    if at.type == pp.AtModifierType.At and at.at is not None:
        return _Anchor(at.at, _ZERO, _ZERO)
    # start() and end() are the instant query's own time, even inside a subquery.
    return _Anchor(None, _ZERO, _ZERO)


# --- parsing --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Failure:
    message: str


@dataclass(frozen=True)
class _Span:
    start: int  # in the text as written
    end: int
    new_start: int  # in the text with the sentinel
    new_end: int


def _parse(text: str) -> pp.Expr | _Failure:
    try:
        return pp.parse(text)
    except Exception as error:  # the extension raises ValueError; anything else is refused alike
        return _Failure(_short(str(error)) or type(error).__name__)
    except BaseException as error:  # a panic in the extension derives from BaseException
        if isinstance(error, KeyboardInterrupt | SystemExit | GeneratorExit):
            raise
        return _Failure(f"the parser failed ({type(error).__name__})")


def _operators(text: str) -> int:
    """Parentheses and arithmetic operators outside strings and comments: what nesting is made of
    (a cheap bound taken before parsing; the parser itself decides what the query means)."""
    count = 0
    quote_char = ""
    escaped = comment = False
    for char in text:
        if comment:
            comment = char != "\n"
        elif quote_char:
            if escaped:
                escaped = False
            elif char == "\\" and quote_char != "`":
                escaped = True
            elif char == quote_char:
                quote_char = ""
        elif char in "\"'`":
            quote_char = char
        elif char == "#":
            comment = True
        elif char in "(-+*/%^":
            count += 1
    return count


def _short(message: str) -> str:
    """The parser's message, which may quote the query: bounded, anything unprintable escaped."""
    printable = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in message)
    return printable if len(printable) <= _MAX_MESSAGE else printable[: _MAX_MESSAGE - 1] + "…"


def _substitute(text: str) -> tuple[str, list[_Span]]:
    literal = f'"{_SENTINEL}"'
    parts: list[str] = []
    spans: list[_Span] = []
    last = 0
    length = 0
    for match in PLACEHOLDER.finditer(text):
        parts.append(text[last : match.start()])
        length += match.start() - last
        spans.append(_Span(match.start(), match.end(), length, length + len(literal)))
        parts.append(literal)
        length += len(literal)
        last = match.end()
    parts.append(text[last:])
    return "".join(parts), spans


def _problem(substituted: str, message: str, spans: list[_Span]) -> PromqlProblem:
    offset = _error_offset(substituted, message)
    if offset is None:
        return PromqlProblem(message)
    shift = 0
    for span in spans:
        if span.new_start <= offset < span.new_end:
            return PromqlProblem(_PLACEHOLDER_HINT, span.start)
        if span.new_end <= offset:
            shift += (span.end - span.start) - (span.new_end - span.new_start)
    return PromqlProblem(message, offset + shift)


def _error_offset(text: str, message: str) -> int | None:
    """Where the error shows: the last character whose removal makes a different error (or none).

    The parser names no position; the shortest prefix from which every longer prefix fails with
    the same message ends at the character that made the query unrecoverable."""
    if len(text) > _MAX_SCANNED or message.startswith("unclosed"):
        return None  # an unclosed bracket shows only at the end of the query, wherever it opened
    end = len(text)
    while end > 1:
        shorter = _parse(text[: end - 1])
        if not isinstance(shorter, _Failure) or shorter.message != message:
            break
        end -= 1
    return end - 1


def _version_uses(expr: pp.Expr, canonical: str) -> int | PromqlProblem:
    allowed = 0
    for node in nodes(expr):
        if isinstance(node, pp.VectorSelector):
            for matcher in _matchers(node):
                if matcher.value != _SENTINEL:
                    continue
                if matcher.op in (pp.MatchOp.Equal, pp.MatchOp.NotEqual):
                    allowed += 1
                else:
                    return PromqlProblem("{{ version }} cannot be a regular expression: use = or !=")
        elif isinstance(node, pp.StringLiteral) and node.val == _SENTINEL:
            allowed += 1
        elif isinstance(node, pp.Call) and node.func.name == "label_replace":
            regex = node.args[4] if len(node.args) > 4 else None
            if isinstance(regex, pp.StringLiteral) and regex.val == _SENTINEL:
                return PromqlProblem("{{ version }} cannot be a regular expression")
    if canonical.count(_SENTINEL) != allowed:
        return PromqlProblem(_PLACEHOLDER_HINT)
    return allowed


def _matchers(selector: pp.VectorSelector) -> list[pp.Matcher]:
    matchers = list(selector.matchers.matchers)
    for alternative in selector.matchers.or_matchers:
        matchers.extend(alternative)
    return matchers


def _mentions(expr: pp.Expr) -> Iterator[str]:
    for node in nodes(expr):
        if isinstance(node, pp.VectorSelector):
            for matcher in _matchers(node):
                yield matcher.name
                yield matcher.value
        elif isinstance(node, pp.StringLiteral):
            yield node.val
        elif isinstance(node, pp.AggregateExpr) and node.modifier is not None:
            yield from node.modifier.labels
        elif isinstance(node, pp.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                yield from node.modifier.matching.labels
            yield from node.modifier.group_labels or []


# The extension's ValueType is not hashable: looked up by equality.
_TYPES = (
    (pp.ValueType.Vector, ResultType.VECTOR),
    (pp.ValueType.Scalar, ResultType.SCALAR),
    (pp.ValueType.Matrix, ResultType.MATRIX),
    (pp.ValueType.String, ResultType.STRING),
)


def _result_type(node: Any) -> ResultType:
    if isinstance(node, pp.NumberLiteral):
        return ResultType.SCALAR
    if isinstance(node, pp.StringLiteral):
        return ResultType.STRING
    if isinstance(node, pp.MatrixSelector | pp.SubqueryExpr):
        return ResultType.MATRIX
    if isinstance(node, pp.Call):
        return next(ours for theirs, ours in _TYPES if theirs == node.func.return_type)
    if isinstance(node, pp.ParenExpr | pp.UnaryExpr):
        return _result_type(node.expr)
    if isinstance(node, pp.BinaryExpr):
        sides = (_result_type(node.lhs), _result_type(node.rhs))
        return ResultType.VECTOR if ResultType.VECTOR in sides else ResultType.SCALAR
    return ResultType.VECTOR  # selectors and aggregations
