"""Charts: spans from values, one drawing rendered as SVG and as PNG, range queries bounded."""

from __future__ import annotations

import re
import struct
from datetime import UTC, datetime, timedelta

from tests.support.slow_server import CannedHttpServer, SlowHttpServer
from watcher.charts.layout import layout
from watcher.charts.model import ChartData, Line, Mark, MarkKind, Point, SpanKind, breach_test, state_spans
from watcher.charts.png import SCALE, render_png
from watcher.charts.series import PrometheusRange, RangeFailure, parse_matrix, scoped_query, step_for
from watcher.charts.svg import render_svg

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
STEP = timedelta(seconds=15)


def points(values: list[float | None]) -> tuple[Point, ...]:
    """One point per 15 s; None leaves a hole (no data)."""
    return tuple(Point(T0 + STEP * i, v) for i, v in enumerate(values) if v is not None)


def chart(values: list[float | None], marks: tuple[Mark, ...] = ()) -> ChartData:
    line = Line("value", points(values))
    spans = state_spans(line.points, breach_test(0.5, "above"), timedelta(seconds=30), STEP)
    return ChartData("fraud/p99", T0, T0 + STEP * len(values), (line,), 0.5, "above", spans, marks)


def test_a_run_of_breaches_is_pending_for_its_for_then_firing_until_it_ends() -> None:
    spans = state_spans(
        points([0.1, 0.9, 0.9, 0.9, 0.9, 0.2]), breach_test(0.5, "above"), timedelta(seconds=30), STEP
    )
    assert [(s.kind, s.start, s.end) for s in spans] == [
        (SpanKind.PENDING, T0 + STEP, T0 + STEP * 3),
        (SpanKind.FIRING, T0 + STEP * 3, T0 + STEP * 5),
    ]


def test_a_run_shorter_than_for_stays_pending_and_a_hole_ends_a_run() -> None:
    spans = state_spans(points([0.9, 0.9, None, None, None, None, 0.9, 0.1]), breach_test(0.5, "above"),
                        timedelta(minutes=5), STEP)  # fmt: skip
    assert [s.kind for s in spans] == [SpanKind.PENDING, SpanKind.PENDING]


def test_below_rules_breach_under_the_threshold_and_nan_never_breaches() -> None:
    breaches = breach_test(0.8, "below")
    assert breaches(0.7) and not breaches(0.9) and not breaches(float("nan"))


def test_svg_holds_every_point_of_the_series_and_leaves_holes_open() -> None:
    svg = render_svg(layout(chart([0.1, 0.2, 0.3, 0.2, None, None, None, None, 0.6, 0.7, 0.8, 0.9])))
    series = re.findall(r'<polyline class="series" data-series="0" points="([^"]+)"', svg)
    assert [len(found.split()) for found in series] == [4, 4]  # two stretches around the hole
    assert 'data-points="8"' in svg
    assert "threshold 0.5 (above)" in svg


def test_marks_inside_the_window_are_drawn_and_labelled_escaped() -> None:
    marks = (
        Mark(T0 + STEP * 2, MarkKind.ROLLBACK, "rollback 3 → 2"),
        Mark(T0 + STEP, MarkKind.VERSION, "<v3> live"),
        Mark(T0 - timedelta(hours=1), MarkKind.VERSION, "too early"),
    )
    svg = render_svg(layout(chart([0.1, 0.2, 0.9, 0.9], marks)))
    assert "rollback 3 → 2" in svg and "&lt;v3&gt; live" in svg and "too early" not in svg
    assert svg.count('<polyline class="version"') == 1


def test_png_is_the_same_drawing_at_twice_the_pixels() -> None:
    drawing = layout(chart([0.1, 0.2, 0.9, 0.9, 0.9, 0.1]), width=600, height=200)
    png = render_png(drawing)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (600 * SCALE, 200 * SCALE)


def test_an_empty_chart_says_why() -> None:
    empty = ChartData(
        "fraud/p99", T0, T0 + STEP, (), 0.5, "above", note="Prometheus range query failed: timed out"
    )
    assert "timed out" in render_svg(layout(empty))


def test_matrix_answers_become_lines_and_junk_is_skipped() -> None:
    lines = parse_matrix(
        [
            {
                "metric": {"job": "api"},
                "values": [[T0.timestamp(), "0.5"], ["x", "1"], [T0.timestamp() + 15, "NaN"]],
            }
        ]
    )
    assert not isinstance(lines, RangeFailure)
    assert lines[0].label == 'job="api"' and len(lines[0].points) == 2
    assert isinstance(parse_matrix({"oops": 1}), RangeFailure)


def test_queries_naming_the_version_are_scoped_to_the_incidents_version() -> None:
    assert scoped_query("x{version={{ version }}}", "v3") == 'x{version="v3"}'
    assert scoped_query("x", None) == "x"


def test_the_step_keeps_a_long_window_to_a_few_hundred_points() -> None:
    assert step_for(T0, T0 + timedelta(minutes=10), timedelta(seconds=15)) == timedelta(seconds=15)
    assert step_for(T0, T0 + timedelta(days=1), timedelta(seconds=15)) == timedelta(seconds=288)


def test_a_slow_prometheus_costs_one_request_and_becomes_a_note() -> None:
    with SlowHttpServer(delay=5) as slow:
        answer = PrometheusRange(
            slow.url, {"Authorization": "Bearer s3cret-token"}, timedelta(seconds=0.5)
        ).lines("up", T0, T0 + timedelta(minutes=5), STEP)
        assert isinstance(answer, RangeFailure) and "timed out" in answer.message
        assert len(slow.requests) == 1  # no retry of a timeout


def test_an_error_answer_is_a_note_without_the_credentials(canned_http_server: CannedHttpServer) -> None:
    canned_http_server.answer(status=401, body=b"bad token s3cret-token")
    answer = PrometheusRange(canned_http_server.url, {"Authorization": "Bearer s3cret-token"},
                             timedelta(seconds=2)).lines("up", T0, T0 + STEP, STEP)  # fmt: skip
    assert isinstance(answer, RangeFailure)
    assert "s3cret" not in answer.message and "401" in answer.message
    sent = canned_http_server.requests[0]
    assert sent.path == "/api/v1/query_range" and sent.query["query"] == ["up"]
