"""What each page shows, gathered from the store and Prometheus into plain view objects.

The templates only lay these out. Everything an incident page quotes from the database goes
through the incident's JSON view first, which masks secrets (a SQL rule's evidence may quote a
database URL with its password).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from watcher.charts.layout import layout
from watcher.charts.model import ChartData, Line, Mark, Point
from watcher.charts.series import (
    ChartRule,
    PrometheusRange,
    build_chart,
    incident_window,
    scoped_query,
    step_for,
    stored_points,
    timeline_marks,
    version_marks,
)
from watcher.charts.svg import render_svg
from watcher.http.page_reads import read_sightings
from watcher.incidents.json_view import incident_detail_json
from watcher.store.records import IncidentRecord
from watcher.store.repository import Store, StoredRuleState

RULES_PER_PAGE = 50
_FETCH_THREADS = 4  # range queries of one page run side by side, a few at a time


@dataclass(frozen=True)
class PageSources:
    """What the pages read besides the database: the loaded rules and Prometheus."""

    rules: Callable[[], Mapping[str, Any]]  # rule id -> watcher.rules.rulefmt.Rule
    prometheus: PrometheusRange | None = None


@dataclass(frozen=True)
class RuleChart:
    rule_id: str
    svg: str
    chart: ChartData


@dataclass(frozen=True)
class IncidentPage:
    incident: IncidentRecord
    document: dict[str, Any]  # the incident's JSON (secrets masked), with its timeline
    charts: tuple[RuleChart, ...]
    drift_columns: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class RuleRow:
    rule_id: str
    kind: str  # prometheus | sql | drift | unknown
    state: str
    last_value: float | None
    last_outcome: str | None
    last_evaluated_at: datetime | None
    healthy: bool
    svg: str
    loaded: bool = True


@dataclass(frozen=True)
class RulesPage:
    rows: tuple[RuleRow, ...]
    page: int
    pages: int
    total: int
    states: Mapping[str, int] = field(default_factory=dict)


def chart_rule(sources: PageSources, rule_id: str, signal: str, evidence: Mapping[str, Any]) -> ChartRule:
    rule = sources.rules().get(rule_id)
    return (
        ChartRule.from_rule(rule) if rule is not None else ChartRule.from_evidence(rule_id, signal, evidence)
    )


def incident_rule_charts(
    store: Store, sources: PageSources, incident: IncidentRecord, document: Mapping[str, Any], now: datetime
) -> list[ChartData]:
    """One chart per rule of the incident: the opening rule first, then its findings' rules."""
    findings = [f for f in document.get("findings") or [] if isinstance(f, dict)]
    evidences: dict[str, Mapping[str, Any]] = {incident.rule_id: incident.evidence}
    for finding in findings:
        rule_id = str(finding.get("rule"))
        evidences.setdefault(rule_id, finding.get("evidence") or {"threshold": finding.get("threshold")})
    rules = [chart_rule(sources, rule_id, incident.signal, ev) for rule_id, ev in evidences.items()]
    opening = rules[0]
    window = incident_window(opening, incident, now)
    marks: list[Mark] = timeline_marks(incident, store.timeline(incident.id))
    if incident.target:
        marks += version_marks(read_sightings(store, incident.target, *window), *window)
    states = store.rule_states()

    def one(rule: ChartRule) -> ChartData:
        lines = _lines(sources, rule, window, incident.live_version, states.get(rule.rule_id),
                       incident if rule.rule_id == incident.rule_id else None)  # fmt: skip
        return build_chart(rule, rule.rule_id, window, lines, marks)

    return _in_parallel(one, rules)


def _lines(
    sources: PageSources,
    rule: ChartRule,
    window: tuple[datetime, datetime],
    version: str | None,
    state: StoredRuleState | None,
    incident: IncidentRecord | None,
) -> Any:
    if rule.query is not None:
        if sources.prometheus is None:
            from watcher.charts.series import RangeFailure

            return RangeFailure("no Prometheus configured")
        step = step_for(*window, rule.interval)
        return sources.prometheus.lines(scoped_query(rule.query, version), *window, step)
    status = state.status if state is not None else None
    last = (
        (status.last_evaluated_at, status.last_value)
        if status is not None and status.last_evaluated_at is not None and status.last_value is not None
        else None
    )
    points = tuple(p for p in stored_points(incident, last) if window[0] <= p.at <= window[1])
    return (Line("stored evaluations", points),)


def _in_parallel(work: Callable[[ChartRule], ChartData], rules: Sequence[ChartRule]) -> list[ChartData]:
    if len(rules) <= 1:
        return [work(rule) for rule in rules]
    with ThreadPoolExecutor(max_workers=_FETCH_THREADS, thread_name_prefix="watcher-chart") as pool:
        return list(pool.map(work, rules))


def incident_page(store: Store, sources: PageSources, incident_id: int, now: datetime) -> IncidentPage | None:
    incident = store.incident(incident_id)
    document = incident_detail_json(store, incident_id) if incident is not None else None
    if incident is None or document is None:
        return None
    charts = incident_rule_charts(store, sources, incident, document, now)
    columns = document.get("evidence", {}).get("columns") if incident.signal == "drift" else None
    drift = tuple(
        {"name": name, **score} for name, score in (columns or {}).items() if isinstance(score, dict)
    )
    return IncidentPage(
        incident,
        document,
        tuple(
            RuleChart(chart.title, render_svg(layout(chart), "chart incident-chart"), chart)
            for chart in charts
        ),
        drift,
    )


def _kind(rule: Any) -> str:
    if rule is None:
        return "unknown"
    return "prometheus" if rule.prometheus else "sql" if rule.sql else "drift"


def rules_page(store: Store, sources: PageSources, page: int, now: datetime) -> RulesPage:
    loaded = sources.rules()
    states = store.rule_states()
    rule_ids = sorted(set(loaded) | set(states))
    pages = max(1, -(-len(rule_ids) // RULES_PER_PAGE))
    page = min(max(1, page), pages)
    shown = rule_ids[(page - 1) * RULES_PER_PAGE : page * RULES_PER_PAGE]
    counts: dict[str, int] = {}
    for stored in states.values():
        counts[stored.status.state.value] = counts.get(stored.status.state.value, 0) + 1

    def one(rule_id: str) -> RuleRow:
        return _rule_row(sources, rule_id, loaded.get(rule_id), states.get(rule_id), now)

    with ThreadPoolExecutor(max_workers=_FETCH_THREADS, thread_name_prefix="watcher-chart") as pool:
        rows = tuple(pool.map(one, shown))
    return RulesPage(rows, page, pages, len(rule_ids), counts)


def _rule_row(
    sources: PageSources, rule_id: str, rule: Any, stored: StoredRuleState | None, now: datetime
) -> RuleRow:
    status = stored.status if stored is not None else None
    chart_rule = ChartRule.from_rule(rule) if rule is not None else None
    svg = ""
    if chart_rule is not None:
        span = max(timedelta(minutes=30), chart_rule.interval * 40)
        window = (now - span, now)
        lines = _lines(sources, chart_rule, window, None, stored, None)
        chart = build_chart(chart_rule, rule_id, window, lines)
        svg = render_svg(layout(chart, width=240, height=48, compact=True), "chart spark")
    return RuleRow(
        rule_id=rule_id,
        kind=_kind(rule),
        state=status.state.value if status is not None else "never evaluated",
        last_value=status.last_value if status is not None else None,
        last_outcome=status.last_outcome.value if status is not None and status.last_outcome else None,
        last_evaluated_at=status.last_evaluated_at if status is not None else None,
        healthy=not (status.unhealthy if status is not None else False),
        svg=svg,
        loaded=rule is not None,
    )


__all__ = ["IncidentPage", "PageSources", "Point", "RulesPage", "incident_page", "rules_page"]
