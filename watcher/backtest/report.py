"""What a replay would have done, read back from its throwaway store: text and JSON.

Every would-be incident is read as the daemon wrote it (incident, audit timeline, intents); the
action is the decision its timeline records: a rollback requested, an approval asked, or a notice.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from watcher.backtest.replay import ReplayResult, RuleTrace
from watcher.incidents.json_view import incident_to_json, iso_utc, json_safe
from watcher.rules.durations import format_duration
from watcher.store.records import AuditEvent, IncidentRecord


class Would(StrEnum):
    ROLLBACK = "rollback"
    APPROVE = "approve"
    NOTIFY = "notify"


_DECISIONS = {
    "rollback_requested": Would.ROLLBACK,
    "approval_requested": Would.APPROVE,
    "notified": Would.NOTIFY,
}


@dataclass(frozen=True)
class RulePeak:
    rule_id: str
    peak: float | None
    comparison: str  # above | below
    threshold: float


@dataclass(frozen=True)
class WouldBeIncident:
    record: IncidentRecord
    would: Would
    action_at: datetime
    first_breach_at: datetime
    rollback_from: str | None
    rollback_to: str | None
    peaks: tuple[RulePeak, ...]
    document: dict[str, Any]

    @property
    def to_action_seconds(self) -> float:
        return max(0.0, (self.action_at - self.first_breach_at).total_seconds())


@dataclass(frozen=True)
class Totals:
    incidents: int
    rollbacks: int
    approvals: int
    notifications: int
    to_action_mean: float | None  # seconds from first breach to action
    to_action_max: float | None


def _decision(timeline: Sequence[AuditEvent]) -> tuple[Would, AuditEvent | None]:
    for event in timeline:
        if event.kind in _DECISIONS:
            return _DECISIONS[event.kind], event
    return Would.NOTIFY, None


def _rules_in(record: IncidentRecord, timeline: Sequence[AuditEvent]) -> list[str]:
    """The opening rule first, then every other rule the timeline names (findings that joined)."""
    return list(dict.fromkeys([record.rule_id, *(e.rule_id for e in timeline if e.rule_id)]))


def _peak(trace: RuleTrace | None, start: datetime, end: datetime | None) -> float | None:
    if trace is None:
        return None
    values = [
        p.value
        for p in trace.points
        if p.value is not None and start <= p.at and (end is None or p.at <= end)
    ]
    if not values:
        return None
    return max(values) if trace.rule.above is not None else min(values)


def summarize(result: ReplayResult) -> list[WouldBeIncident]:
    found: list[WouldBeIncident] = []
    for record in result.incidents:
        timeline = result.timelines.get(record.id, [])
        would, event = _decision(timeline)
        first = result.first_breach.get(record.id, record.opened_at)
        peaks = []
        for rule_id in _rules_in(record, timeline):
            trace = result.traces.get(rule_id)
            if trace is None:
                continue
            rule = trace.rule
            comparison = "above" if rule.above is not None else "below"
            peaks.append(
                RulePeak(rule_id, _peak(trace, first, record.resolved_at), comparison, rule.threshold)
            )
        intents = [intent for intent in result.intents if intent.incident_id == record.id]
        document = incident_to_json(record, intents, findings=result.findings.get(record.id, []))
        rollback = document.get("rollback") or {}
        found.append(
            WouldBeIncident(
                record=record,
                would=would,
                action_at=event.at if event is not None else record.opened_at,
                first_breach_at=first,
                rollback_from=rollback.get("from"),
                rollback_to=rollback.get("to"),
                peaks=tuple(peaks),
                document=document,
            )
        )
    return found


def totals(incidents: Sequence[WouldBeIncident]) -> Totals:
    delays = [incident.to_action_seconds for incident in incidents]
    return Totals(
        incidents=len(incidents),
        rollbacks=sum(1 for incident in incidents if incident.would is Would.ROLLBACK),
        approvals=sum(1 for incident in incidents if incident.would is Would.APPROVE),
        notifications=sum(1 for incident in incidents if incident.would is Would.NOTIFY),
        to_action_mean=statistics.fmean(delays) if delays else None,
        to_action_max=max(delays) if delays else None,
    )


# --- JSON --------------------------------------------------------------------------------------


def incident_json(incident: WouldBeIncident) -> dict[str, Any]:
    document = dict(incident.document)
    document["would"] = incident.would.value
    document["first_breach_at"] = iso_utc(incident.first_breach_at)
    document["action_at"] = iso_utc(incident.action_at)
    document["to_action_seconds"] = incident.to_action_seconds
    document["rules"] = [
        {"rule": p.rule_id, "peak": p.peak, p.comparison: p.threshold} for p in incident.peaks
    ]
    safe: dict[str, Any] = json_safe(document)
    return safe


def totals_json(summary: Totals) -> dict[str, Any]:
    return {
        "incidents": summary.incidents,
        "rollbacks": summary.rollbacks,
        "approvals": summary.approvals,
        "notifications": summary.notifications,
        "first_breach_to_action_seconds": {"mean": summary.to_action_mean, "max": summary.to_action_max},
    }


def report_json(result: ReplayResult) -> dict[str, Any]:
    incidents = summarize(result)
    return {
        "from": iso_utc(result.window.start),
        "to": iso_utc(result.window.end),
        "evaluations": result.evaluations,
        "unjudged": dict(sorted(result.unjudged.items())),
        "incidents": [incident_json(incident) for incident in incidents],
        "totals": totals_json(totals(incidents)),
    }


# --- text --------------------------------------------------------------------------------------


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else format_duration(_as_delta(value))


def _as_delta(seconds: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=round(seconds))


def _action(incident: WouldBeIncident) -> str:
    versions = f"{incident.rollback_from or '?'} -> {incident.rollback_to or '?'}"
    if incident.would is Would.ROLLBACK:
        return f"rollback {versions}"
    if incident.would is Would.APPROVE:
        return f"approval (rollback {versions})" if incident.rollback_to else "approval"
    return "notify"


def incident_line(incident: WouldBeIncident) -> str:
    record = incident.record
    rules = ", ".join(
        f"{p.rule_id} peak {_number(p.peak)} ({p.comparison} {p.threshold:g})" for p in incident.peaks
    )
    resolved = iso_utc(record.resolved_at) or "still open"
    return (
        f"{record.target or record.model} {record.live_version or '(version unknown)'}  "
        f"opened {iso_utc(record.opened_at)}  resolved {resolved}  {rules}  {_action(incident)}"
    )


def totals_line(summary: Totals) -> str:
    return (
        f"{summary.incidents} incidents, {summary.rollbacks} rollbacks, {summary.approvals} approvals, "
        f"{summary.notifications} notifications; first breach to action: "
        f"{_seconds(summary.to_action_mean)} on average, {_seconds(summary.to_action_max)} at most"
    )


def report_lines(result: ReplayResult) -> list[str]:
    incidents = summarize(result)
    lines = [incident_line(incident) for incident in incidents] or ["no incidents"]
    return [*lines, totals_line(totals(incidents)) + unjudged_note(result)]


def unjudged_note(result: ReplayResult) -> str:
    """Why an incident after a would-be rollback may stay open: nothing recorded can judge it."""
    if not result.unjudged:
        return ""
    moments = sum(result.unjudged.values())
    rules = len(result.unjudged)
    return (
        f"; not judged after a would-be rollback (the record holds the other version's data): "
        f"{moments} evaluations of {rules} rule{'s' if rules != 1 else ''}"
    )


def side_by_side(left_title: str, left: Sequence[str], right_title: str, right: Sequence[str]) -> list[str]:
    """Two reports in two columns, the left padded to its widest line."""
    left_all, right_all = [left_title, *left], [right_title, *right]
    width = max(len(line) for line in left_all)
    rows = max(len(left_all), len(right_all))
    padded_left = [*left_all, *[""] * (rows - len(left_all))]
    padded_right = [*right_all, *[""] * (rows - len(right_all))]
    return [f"{a.ljust(width)} | {b}".rstrip() for a, b in zip(padded_left, padded_right, strict=True)]
