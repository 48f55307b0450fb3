"""`--plot FILE.html`: one self-contained page, a chart per rule, drawn by watcher.charts (the
same drawing as the incident pages) as inline SVG.

Each chart shows the rule's value over the replay, its threshold, the pending and firing spans as
the engine had them (not re-derived), the target's version changes and the would-be rollbacks.
No script, no font, no request to anywhere: the page opens the same offline.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime

from watcher.backtest.history import VersionChange
from watcher.backtest.replay import ReplayResult, RuleTrace
from watcher.charts.layout import layout
from watcher.charts.model import ChartData, Line, Mark, MarkKind, Point, Span, SpanKind
from watcher.charts.svg import render_svg
from watcher.incidents.json_view import iso_utc
from watcher.model import RuleState

WIDTH, HEIGHT = 1000, 280
_STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#1d2430;background:#fff;max-width:1040px}
h1{font-size:20px} h2{font-size:15px;margin:28px 0 2px} p.meta{color:#5a6270;margin:0 0 6px}
svg.chart{width:100%;height:auto}
"""
_SPAN_KINDS = {RuleState.PENDING: SpanKind.PENDING, RuleState.FIRING: SpanKind.FIRING}


def state_spans(trace: RuleTrace) -> tuple[Span, ...]:
    """The pending and firing stretches of the replay, as the engine's states had them."""
    spans: list[Span] = []
    current: tuple[RuleState, datetime] | None = None
    for point in trace.points:
        if current is not None and point.state is not current[0]:
            spans.append(Span(current[1], point.at, _SPAN_KINDS[current[0]]))
            current = None
        if current is None and point.state in _SPAN_KINDS:
            current = (point.state, point.at)
    if current is not None and trace.points:
        spans.append(Span(current[1], trace.points[-1].at, _SPAN_KINDS[current[0]]))
    return tuple(spans)


def _marks(changes: Sequence[VersionChange]) -> tuple[Mark, ...]:
    return tuple(
        Mark(change.at, MarkKind.ROLLBACK, f"would roll back to {change.version}")
        if change.replayed
        else Mark(change.at, MarkKind.VERSION, change.version)
        for change in changes
    )


def chart_data(
    trace: RuleTrace, changes: Sequence[VersionChange], start: datetime, end: datetime
) -> ChartData:
    rule = trace.rule
    points = tuple(Point(p.at, p.value) for p in trace.points if p.value is not None)
    return ChartData(
        title=rule.id,
        start=start,
        end=end,
        lines=(Line(rule.id, points),),
        threshold=rule.threshold,
        comparison="above" if rule.above is not None else "below",
        spans=state_spans(trace),
        marks=_marks(changes),
        note=None if points else "no value in this range",
    )


def _section(title: str, result: ReplayResult) -> list[str]:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for rule_id, trace in sorted(result.traces.items()):
        rule = trace.rule
        target = rule.target or ""
        changes = result.history.target(target).changes if target else []
        comparison = "above" if rule.above is not None else "below"
        parts.append(f"<h2>{html.escape(rule_id)}</h2>")
        parts.append(
            f'<p class="meta">breach when {comparison} {rule.threshold:g}; target '
            f"{html.escape(target or 'none')}; evaluated every {trace.step}s</p>"
        )
        data = chart_data(trace, changes, result.window.start, result.window.end)
        parts.append(render_svg(layout(data, width=WIDTH, height=HEIGHT)))
    return parts


def render_page(sections: Sequence[tuple[str, ReplayResult]]) -> str:
    body: list[str] = []
    for title, result in sections:
        window = f"{iso_utc(result.window.start)} to {iso_utc(result.window.end)}"
        body.extend(_section(f"Backtest {window}, {title}", result))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>watcher backtest</title>'
        f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )
