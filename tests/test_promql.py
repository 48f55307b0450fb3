"""PromQL as a syntax tree: lookback, the {{ version }} placeholder, problems with their position."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import promql_parser
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.rules.promql import (
    MAX_QUERY_CHARS,
    Lookback,
    NeedsVersion,
    ParsedQuery,
    PinnedWindow,
    PromqlProblem,
    ResultType,
    lookback,
    parse_query,
    quote,
    render,
    uses_version,
)

M = timedelta(minutes=1)
H = timedelta(hours=1)
T = datetime(2021, 1, 4, 7, 40, tzinfo=UTC)  # 1609746000


def parsed(text: str) -> ParsedQuery:
    result = parse_query(text)
    assert isinstance(result, ParsedQuery), result
    return result


LOOKBACKS: list[tuple[str, timedelta]] = [
    # selectors
    ("up", timedelta(0)),
    ("up offset 5m", 5 * M),
    ("up offset -5m", timedelta(0)),  # reads after the evaluation time: nothing before it
    ("rate(x[5m])", 5 * M),
    ("rate(x[5m] offset 1h)", H + 5 * M),
    ("rate(x[2h] offset -1h)", H),
    ("rate(x[1h1m30s])", H + M + timedelta(seconds=30)),
    ("rate(x[1d])", timedelta(days=1)),
    ("rate(x[1w])", timedelta(weeks=1)),
    # nested functions and aggregations
    ("histogram_quantile(0.99, sum by (le) (rate(b[5m])))", 5 * M),
    ("abs(clamp_min(sum without (pod) (increase(x[15m])), 0))", 15 * M),
    ("topk(3, sum by (job) (rate(x[10m])))", 10 * M),
    ("quantile_over_time(0.9, x[30m])", 30 * M),
    ("label_replace(rate(x[3m]), 'a', '$1', 'b', '(.*)')", 3 * M),
    ("predict_linear(node_filesystem_avail_bytes[6h], 4 * 3600) < 0", 6 * H),
    ("absent_over_time(up[10m]) or vector(0)", 10 * M),
    ("topk(scalar(max_over_time(k[20m])), x)", 20 * M),  # an aggregation's parameter reads too
    # binary expressions: the longest side
    ("sum(rate(e[5m])) / sum(rate(r[15m]))", 15 * M),
    ("rate(x[5m]) > on (job) group_left rate(y[1h] offset 1h)", 2 * H),
    ("x offset 2h + rate(y[1h])", 2 * H),
    ("-rate(x[7m])", 7 * M),
    ("(rate(x[4m]))", 4 * M),
    # subqueries: their range and offset added to what they contain
    ("max_over_time(rate(x[5m])[1h:1m])", H + 5 * M),
    ("max_over_time(rate(x[5m])[1h:1m] offset 30m)", H + 35 * M),
    ("max_over_time(rate(x[5m] offset 10m)[1h:])", H + 15 * M),
    ("min_over_time(max_over_time(rate(x[1m])[10m:1m])[1h:5m])", H + 11 * M),
    ("avg_over_time((x offset 5m)[30m:] offset -10m)", 25 * M),
    ("max_over_time(deriv(rate(x[1m])[5m:1m])[1h:])", H + 6 * M),
    ("rate(x[5m]) and max_over_time(y[2h:])", 2 * H),
    # @ start() and end() are the evaluation time of an instant query, even inside a subquery
    ("rate(x[5m] @ end())", 5 * M),
    ("rate(x[5m] @ start() offset 10m)", 15 * M),
    ("max_over_time((rate(x[5m] @ end()))[1h:])", 5 * M),
    ("max_over_time(rate(x[5m])[1h:] @ start())", H + 5 * M),
    # literals read nothing
    ("vector(1)", timedelta(0)),
    ("time() - 3600", timedelta(0)),
]


@pytest.mark.parametrize(("query", "expected"), LOOKBACKS, ids=[query for query, _ in LOOKBACKS])
def test_lookback_is_the_longest_range_plus_offset(query: str, expected: timedelta) -> None:
    result = lookback(parsed(query))

    assert result == Lookback(expected)
    assert result.slides and result.pinned_at is None


PINNED: list[tuple[str, timedelta, tuple[PinnedWindow, ...]]] = [
    ("rate(x[5m] @ 1609746000)", timedelta(0), (PinnedWindow(T - 5 * M, T),)),
    ("x @ 1609746000 offset 1h", timedelta(0), (PinnedWindow(T - H, T - H),)),
    (
        "rate(x[5m] @ 1609746000) / rate(x[10m])",
        10 * M,
        (PinnedWindow(T - 5 * M, T),),
    ),
    # everything inside a pinned subquery is pinned; the subquery's steps span its range
    ("max_over_time(rate(x[5m])[1h:1m] @ 1609746000)", timedelta(0), (PinnedWindow(T - H - 5 * M, T),)),
    (
        "max_over_time(rate(x[5m] offset 1m)[1h:] @ 1609746000 offset 10m)",
        timedelta(0),
        (PinnedWindow(T - H - 16 * M, T - 11 * M),),
    ),
    # an inner @ pins to its own time; an inner @ end() is the evaluation time again
    (
        "max_over_time((x @ 1609746000)[1h:] @ 1609749600)",
        timedelta(0),
        (PinnedWindow(T, T),),
    ),
    ("max_over_time((rate(x[3m] @ end()))[1h:] @ 1609746000)", 3 * M, ()),
    (
        "rate(x[5m] @ 1609746000) + rate(y[1h] @ 1609746000)",
        timedelta(0),
        (PinnedWindow(T - H, T),),
    ),
]


@pytest.mark.parametrize(("query", "span", "pinned"), PINNED, ids=[query for query, _, _ in PINNED])
def test_a_pinned_window_does_not_slide_with_the_evaluation_time(
    query: str, span: timedelta, pinned: tuple[PinnedWindow, ...]
) -> None:
    result = lookback(parsed(query))

    assert result == Lookback(span, pinned)
    assert result.slides == (span > timedelta(0) or not pinned)
    assert result.pinned_at == (max(window.end for window in pinned) if pinned else None)


@pytest.mark.parametrize(
    "query",
    [
        "model_requests_total{version={{ version }}}",
        "sum(rate(model_requests_total{version={{version}}, code!={{  version  }}}[5m]))",
        'label_replace(vector(1), "version", {{ version }}, "", "")',
        "count_values({{ version }}, x)",
    ],
)
def test_the_version_placeholder_stands_where_a_string_may(query: str) -> None:
    result = parsed(query)

    assert uses_version(result)
    assert isinstance(render(result, None), NeedsVersion)
    text = render(result, "3")
    assert isinstance(text, str) and '"3"' in text and "{{" not in text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('x{version="{{ version }}"}', "without quotes"),
        ("x{version=~{{ version }}}", "regular expression"),
        ('label_replace(x, "a", "$1", "b", {{ version }})', "regular expression"),
        ('x{{{ version }}="a"}', "without quotes"),  # a quoted label name
        ("rate(x[{{ version }}])", "without quotes"),
        ("{{ version }}_total", "without quotes"),
    ],
)
def test_the_version_placeholder_is_refused_where_a_string_is_not_valid(query: str, message: str) -> None:
    result = parse_query(query)

    assert isinstance(result, PromqlProblem)
    assert message in result.message
    assert result.offset == query.index("{{ version")


HOSTILE_VERSIONS = [
    '3"} or vector(999) or x{a="',
    "3\\",
    '\\"',
    "line\nbreak",
    "tab\tcarriage\rreturn",
    "\x00\x07\x1b\x7f",
    "${{ version }}",
    "é😀\u2028",
    "`raw`",
    "'single'",
    "",
]


@pytest.mark.parametrize("version", HOSTILE_VERSIONS, ids=repr)
def test_a_rendered_version_parses_back_as_that_exact_label_value(version: str) -> None:
    query = parsed('sum by (code) (rate(requests_total{version={{ version }}, code="500"}[5m]))')

    text = render(query, version)

    assert isinstance(text, str)
    tree = promql_parser.parse(text)
    selector = tree.expr.args[0].vector_selector  # type: ignore[attr-defined]
    values = {matcher.name: matcher.value for matcher in selector.matchers.matchers}
    assert values == {"version": version, "code": "500"}


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_every_version_renders_to_a_literal_of_exactly_itself(version: str) -> None:
    query = parsed('label_replace(vector(1), "v", {{ version }}, "", "")')

    text = render(query, version)

    if not isinstance(text, str):  # lone surrogates cannot be sent as UTF-8 at all
        assert isinstance(text, PromqlProblem)
        return
    tree = promql_parser.parse(text)
    assert tree.args[2].val == version  # type: ignore[attr-defined]
    assert promql_parser.parse(quote(version)).val == version  # type: ignore[attr-defined]


def test_a_query_without_the_placeholder_renders_alike_with_or_without_a_version() -> None:
    query = parsed("sum(rate(x[5m]))  # a comment is not sent")

    assert not uses_version(query)
    assert render(query, None) == render(query, "7") == "sum(rate(x[5m]))"


def test_what_is_sent_is_the_tree_reprinted_not_the_text() -> None:
    query = parsed('sum( rate( x{b="2", a=~"1|3"} [5m] ) )')

    assert render(query, None) == 'sum(rate(x{a=~"1|3",b="2"}[5m]))'


@pytest.mark.parametrize(
    ("query", "message", "offset"),
    [
        (
            'vector(0)), "__watcher_query__", "0", "", "") or label_replace((vector(0)',
            "unexpected right parenthesis ')'",
            9,
        ),
        ('x{a="b}', "unterminated quoted string", 4),
        ("sum(rate(x[5m])))", "unexpected right parenthesis ')'", 16),
        ("sum(rate(x[5m]", "unclosed left parenthesis", None),
        ("rate(x)", "expected type matrix in call to function 'rate', got vector", None),
    ],
)
def test_a_query_that_does_not_parse_is_a_problem_with_the_parsers_message(
    query: str, message: str, offset: int | None
) -> None:
    result = parse_query(query)

    assert isinstance(result, PromqlProblem)
    assert result.message.startswith(message)
    if offset is not None:
        assert result.offset == offset


@pytest.mark.parametrize(
    "query",
    [
        "(" * 3000 + "x" + ")" * 3000,
        "-" * 5000 + "x",
        "x" + " + x" * 1500,
        "(" * 300 + "x" + ")" * 300,  # few enough operators to parse, too deep to use
        "x" * (MAX_QUERY_CHARS + 1),
    ],
    ids=["parentheses", "unary", "binary", "deep", "long"],
)
def test_deep_or_long_queries_are_refused_not_a_crash(query: str) -> None:
    assert isinstance(parse_query(query), PromqlProblem)


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("sum(x)", ResultType.VECTOR),
        ("scalar(sum(x))", ResultType.SCALAR),
        ("1 + 2", ResultType.SCALAR),
        ("time() - x", ResultType.VECTOR),
        ("x[5m]", ResultType.MATRIX),
        ("rate(x[5m])[1h:]", ResultType.MATRIX),
        ('"text"', ResultType.STRING),
        ("(vector(1))", ResultType.VECTOR),
    ],
)
def test_the_result_type_is_read_from_the_tree(query: str, kind: ResultType) -> None:
    assert parsed(query).result_type is kind


def test_operators_inside_strings_and_comments_do_not_count_toward_the_bound() -> None:
    names = "|".join(f"model-{index}-a-b" for index in range(400))
    query = f'sum(rate(x{{model=~"{names}"}}[5m]))  # ' + "-" * 2000

    assert lookback(parsed(query)) == Lookback(5 * M)


def test_rules_written_for_prometheus_2_still_parse() -> None:
    assert lookback(parsed("holt_winters(x[1h], 0.5, 0.1)")) == Lookback(H)
