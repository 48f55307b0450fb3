"""Where a chart's data comes from: Prometheus range queries (through prometheus-api-client) for
PromQL rules, what the store kept for SQL and drift rules, and the store's version history and
audit trail for the marks.

A chart never fails a page: an unreachable Prometheus or a bad answer becomes the chart's note.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from watcher.charts.model import ChartData, Line, Mark, MarkKind, Point, breach_test, state_spans
from watcher.decisions.known_good import VersionSighting
from watcher.logs import redact
from watcher.store.records import AuditEvent, IncidentRecord

MAX_POINTS = 300  # per line: enough for a 760 px chart, small enough for a light page
_VERSION_PLACEHOLDER = re.compile(r"\{\{\s*\.?version\s*\}\}")


@dataclass(frozen=True)
class RangeFailure:
    message: str


@dataclass(frozen=True)
class ChartRule:
    """What a chart needs to know of a rule; from the loaded rule, or from an incident's evidence
    when the rule is gone from the rule files."""

    rule_id: str
    query: str | None  # PromQL; None for SQL and drift rules
    threshold: float | None
    comparison: str
    for_: timedelta = timedelta(0)
    keep_firing_for: timedelta = timedelta(0)
    interval: timedelta = timedelta(seconds=30)

    @classmethod
    def from_rule(cls, rule: Any) -> ChartRule:
        return cls(
            rule_id=rule.id,
            query=rule.prometheus,
            threshold=rule.threshold,
            comparison="above" if rule.above is not None else "below",
            for_=rule.for_,
            keep_firing_for=rule.keep_firing_for,
            interval=rule.interval,
        )

    @classmethod
    def from_evidence(cls, rule_id: str, signal: str, evidence: Mapping[str, Any]) -> ChartRule:
        threshold = evidence.get("threshold")
        query = evidence.get("query")
        return cls(
            rule_id=rule_id,
            query=query if isinstance(query, str) and signal not in ("drift", "sql") else None,
            threshold=float(threshold) if isinstance(threshold, int | float) else None,
            comparison="below" if evidence.get("comparison") == "below" else "above",
        )


class PrometheusRange:
    """Range queries through prometheus-api-client, bounded: one attempt per request plus one
    retry of a refused connection, each within `timeout` (its default Retry turns one timeout
    into about 10 s, too long for a page)."""

    def __init__(self, url: str, headers: Mapping[str, str], timeout: timedelta) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util import Retry

        retry = Retry(total=1, connect=1, read=0, status=0, other=0, backoff_factor=0, raise_on_status=False)
        self._timeout = max(0.5, timeout.total_seconds())
        # Header values and each of their words ("Bearer <token>"): none may reach a page.
        words = [word for value in headers.values() for word in (value, *value.split())]
        self._secrets = sorted({word for word in words if len(word) >= 4}, key=len, reverse=True)
        self._client = PrometheusConnect(
            url.rstrip("/"), headers=dict(headers) or None, retry=retry, timeout=self._timeout, method="POST"
        )

    def lines(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> tuple[Line, ...] | RangeFailure:
        try:
            result = self._client.custom_query_range(
                query, start, end, step=f"{max(1, int(step.total_seconds()))}s",
                params={"timeout": f"{self._timeout:g}s"},
            )  # fmt: skip
        except Exception as error:  # any failure (transport, HTTP status, JSON) is the chart's note
            return RangeFailure(self._clean(f"Prometheus range query failed: {_describe(error)}"))
        return parse_matrix(result)

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return redact(text)


def _describe(error: Exception) -> str:
    text = f"{type(error).__name__}: {error}"
    if type(error).__name__ == "PrometheusApiClientException":
        return str(error).split(" (", 1)[0]  # the status only: the body may echo the request
    if "timed out" in text.lower() or "timeout" in type(error).__name__.lower():
        return "timed out"
    return text[:200]


def parse_matrix(result: Any) -> tuple[Line, ...] | RangeFailure:
    if not isinstance(result, list):
        return RangeFailure("Prometheus answered with something other than a matrix")
    lines = []
    for series in result[:5]:  # a rule's query aggregates to one series; more is shown, not all
        labels = series.get("metric", {}) if isinstance(series, dict) else {}
        points = []
        for pair in series.get("values", []) if isinstance(series, dict) else []:
            try:
                points.append(Point(datetime.fromtimestamp(float(pair[0]), UTC), float(pair[1])))
            except (TypeError, ValueError, IndexError):
                continue
        label = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) or "value"
        lines.append(Line(label, tuple(points)))
    return tuple(lines)


def scoped_query(query: str, version: str | None) -> str:
    """The query as it ran for `version`: `{{ version }}` stands for the version quoted as a
    PromQL string (SPEC section 2)."""
    if version is None:
        return query
    quoted = json.dumps(version)  # a JSON string is a valid PromQL double-quoted string
    return _VERSION_PLACEHOLDER.sub(lambda _: quoted, query)


def step_for(start: datetime, end: datetime, interval: timedelta) -> timedelta:
    """The resolution: the rule's interval, coarser when that would be more than MAX_POINTS."""
    span = (end - start).total_seconds()
    seconds = max(interval.total_seconds(), math.ceil(span / MAX_POINTS), 1.0)
    return timedelta(seconds=math.ceil(seconds))


def incident_window(rule: ChartRule, incident: IncidentRecord, now: datetime) -> tuple[datetime, datetime]:
    """From well before the breach (its pending time included) to now or a while past resolution."""
    lead = max(timedelta(minutes=5), rule.for_ * 6, rule.interval * 20)
    start = incident.opened_at - lead
    if incident.resolved_at is None:
        return start, max(now, incident.opened_at + rule.interval)
    return start, min(now, incident.resolved_at + lead / 2)


def version_marks(sightings: Sequence[VersionSighting], start: datetime, end: datetime) -> list[Mark]:
    return [
        Mark(s.first_seen, MarkKind.VERSION, f"{s.version} live")
        for previous, s in itertools.pairwise(sightings)
        if start <= s.first_seen <= end and s.version != previous.version
    ]


_EVENT_MARKS = {
    "rollback_succeeded": MarkKind.ROLLBACK,
    "undo_succeeded": MarkKind.ROLLBACK,
    "rollback_verified": MarkKind.VERIFIED,
    "escalated": MarkKind.OPENED,
}


def timeline_marks(incident: IncidentRecord, timeline: Sequence[AuditEvent]) -> list[Mark]:
    marks = [Mark(incident.opened_at, MarkKind.OPENED, "opened")]
    for event in timeline:
        kind = _EVENT_MARKS.get(event.kind)
        if kind is MarkKind.ROLLBACK:
            word = "undo" if event.kind.startswith("undo") else "rollback"
            marks.append(
                Mark(event.at, kind, f"{word} {event.from_version or '?'} → {event.to_version or '?'}")
            )
        elif kind is not None:
            marks.append(Mark(event.at, kind, event.kind.replace("rollback_", "")))
    if incident.resolved_at is not None:
        marks.append(Mark(incident.resolved_at, MarkKind.RESOLVED, "resolved"))
    return marks


def stored_points(incident: IncidentRecord | None, last: tuple[datetime, float] | None) -> tuple[Point, ...]:
    """SQL and drift rules: watcher keeps no series of their values, only the incident's evidence
    and the rule's last evaluation; these are the points there are."""
    points: dict[datetime, float] = {}
    if incident is not None:
        value, at = incident.evidence.get("value"), incident.evidence.get("evaluated_at")
        if isinstance(value, int | float) and isinstance(at, str):
            with contextlib.suppress(ValueError):
                points[datetime.fromisoformat(at)] = float(value)
    if last is not None:
        points[last[0]] = last[1]
    return tuple(Point(at, value) for at, value in sorted(points.items()))


def build_chart(
    rule: ChartRule,
    title: str,
    window: tuple[datetime, datetime],
    lines: tuple[Line, ...] | RangeFailure,
    marks: Sequence[Mark] = (),
) -> ChartData:
    """The chart with its pending and firing spans worked out from the values at its resolution."""
    start, end = window
    if isinstance(lines, RangeFailure):
        return ChartData(
            title, start, end, (), rule.threshold, rule.comparison, (), tuple(marks), lines.message
        )
    step = step_for(start, end, rule.interval)
    breaches = breach_test(rule.threshold, rule.comparison)
    main = lines[0].points if lines else ()
    spans = state_spans(main, breaches, rule.for_, step, rule.keep_firing_for)
    note = None if any(line.points for line in lines) else "no data in this window"
    return ChartData(title, start, end, lines, rule.threshold, rule.comparison, spans, tuple(marks), note)
