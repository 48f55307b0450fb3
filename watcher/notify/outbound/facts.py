"""From the store's incident and audit rows to the renderer-neutral IncidentFacts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from watcher.model import RollbackStatus, Severity, Signal
from watcher.notify.outbound.message import DriftColumn, FindingFact, IncidentFacts, TimelineEntry
from watcher.store.findings import FindingKind, FindingRecord
from watcher.store.records import AuditEvent, IncidentRecord

_EVENT_TEXTS = {
    "incident_opened": "Incident opened",
    "rollback_requested": "Rollback requested",
    "approval_requested": "Approval requested",
    "approved": "Rollback approved",
    "rollback_attempt": "Rollback attempt",
    "rollback_succeeded": "Rollback done",
    "rollback_failed": "Rollback failed",
    "rollback_refused": "Rollback refused: the live version changed",
    "rollback_verified": "Rollback verified",
    "escalated": "Escalated",
    "undo_requested": "Undo requested",
    "undo_succeeded": "Rollback undone",
    "acknowledged": "Acknowledged",
    "silenced": "Silenced for 1h",
    "incident_resolved": "Resolved",
    "notified": "Notified",
    "finding_added": "Another rule fired on this version",
    "settling_evidence": "Evidence from a window still holding this version",
}


def _entry(event: AuditEvent) -> TimelineEntry:
    text = _EVENT_TEXTS.get(event.kind, event.kind.replace("_", " ").capitalize())
    if event.from_version or event.to_version:
        text += f" ({event.from_version or '?'} → {event.to_version or '?'})"
    return TimelineEntry(at=event.at, actor=event.actor, kind=event.kind, text=text)


def _drift_columns(evidence: dict[str, Any]) -> tuple[DriftColumn, ...]:
    columns = evidence.get("columns")
    if not isinstance(columns, dict):
        return ()
    found = []
    for name, score in columns.items():
        if isinstance(score, dict) and isinstance(score.get("score"), int | float):
            found.append(
                DriftColumn(
                    name=str(name),
                    score=float(score["score"]),
                    threshold=float(score.get("threshold") or 0.0),
                    method=str(score.get("method", "")),
                    drifted=bool(score.get("drifted")),
                )
            )
    return tuple(found)


def _slack_user(actor: str | None) -> str | None:
    """Actors are stored as `slack:U…`; the message mentions the bare user id."""
    return actor.removeprefix("slack:") if actor else actor


def build_facts(
    incident: IncidentRecord,
    timeline: Sequence[AuditEvent],
    *,
    prometheus_url: str | None,
    http_base_url: str | None,
    findings: Sequence[FindingRecord] = (),
) -> IncidentFacts:
    evidence = incident.evidence
    comparison: Literal["above", "below"] = "below" if evidence.get("comparison") == "below" else "above"
    is_drift = incident.signal == Signal.DRIFT.value
    rolled_back = incident.rollback_status is RollbackStatus.SUCCEEDED
    value = evidence.get("value")
    samples = evidence.get("samples")
    return IncidentFacts(
        id=incident.id,
        rule_id=incident.rule_id,
        model=incident.model,
        rule_name=incident.rule_id.split("/", 1)[-1],
        target=incident.target,
        signal=Signal(incident.signal),
        severity=Severity(incident.severity),
        status=incident.status,
        summary=incident.summary,
        value=float(value) if isinstance(value, int | float) else None,
        threshold=float(evidence.get("threshold") or 0.0),
        comparison=comparison,
        samples=float(samples) if isinstance(samples, int | float) else None,
        live_version=incident.live_version,
        rollback_to=incident.rollback_to,
        rolled_back_from=incident.rollback_from if rolled_back else None,
        rollback_status=incident.rollback_status,
        decision_reason=incident.decision_reason,
        decision_detail=incident.decision_detail,
        query=evidence.get("query") if isinstance(evidence.get("query"), str) else None,
        prometheus_url=prometheus_url if not is_drift else None,
        drift_columns=_drift_columns(evidence) if is_drift else (),
        report_url=f"{http_base_url}/reports/{incident.id}.html" if is_drift and http_base_url else None,
        opened_at=incident.opened_at,
        resolved_at=incident.resolved_at,
        acknowledged_by=incident.acknowledged_by,
        silenced_until=incident.silenced_until,
        undone_by=_slack_user(incident.undone_by),
        timeline=tuple(_entry(event) for event in timeline),
        findings=tuple(
            FindingFact(f.rule_id, f.peak_value, f.threshold, f.kind is FindingKind.SETTLING)
            for f in findings
            if f.kind is not FindingKind.OPENED
        ),
    )
