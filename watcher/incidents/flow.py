"""What a firing or settling rule writes: the incident of its target and version, and its finding.

An incident is one bad version of one target (SPEC.md section 3). The first rule to fire on a
version opens it; another rule firing on the same target and version while it is open joins it as
a finding; a rule whose window still holds the version a rollback moved away from adds its breach
as settling evidence to the incident that made that change. At most one rollback per incident.

Every function here runs inside the tick's one transaction and makes no network call; what needed
the network (the live version, the rollback choice) was fetched before it opened. What each event
does to the incident is asked of `lifecycle.advance`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from watcher.decisions.attribution import Attribution
from watcher.decisions.evaluation import Transition
from watcher.decisions.known_good import RollbackChoice
from watcher.decisions.safety import DecisionKind, SafetyDecision
from watcher.incidents import lifecycle
from watcher.incidents.lifecycle import AuditKind, Event, IncidentView
from watcher.model import IncidentStatus, RollbackStatus, Value
from watcher.rules.rulefmt import Rule
from watcher.rules.templates import render_summary
from watcher.store.findings import FindingKind, NewFinding
from watcher.store.records import AuditEvent, IncidentRecord, IntentPurpose, MessageKind
from watcher.store.repository import NewIncident, Tx

ACTOR = "watcher"


@dataclass(frozen=True)
class FiringContext:
    """What the tick learned before opening its transaction."""

    live_version: str | None
    choice: RollbackChoice | None
    decision: SafetyDecision


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def evidence_for(rule: Rule, transition: Transition, measurement: Any, now: datetime) -> dict[str, Any]:
    evidence: dict[str, Any] = {
        "value": _finite(transition.value),
        "threshold": rule.threshold,
        "comparison": "above" if rule.above is not None else "below",
        "evaluated_at": now.isoformat(),
        "outcome": transition.outcome.value,
        "rule_hash": rule.content_hash,
    }
    if rule.prometheus is not None:
        evidence["query"] = rule.prometheus
    elif rule.sql is not None:
        evidence["query"] = rule.sql.query
    if isinstance(measurement, Value):
        evidence["samples"] = _finite(measurement.samples)
        evidence["labels"] = dict(measurement.labels)
        for key, item in measurement.evidence.items():
            evidence.setdefault(key, item)
    return evidence


def summary_for(rule: Rule, value: float | None, samples: float | None) -> str:
    if rule.summary:
        try:
            return render_summary(
                rule.summary,
                value=value,
                threshold=rule.threshold,
                samples=samples,
                labels=dict(rule.labels),
                rule=rule.name,
                model=rule.model,
                signal=rule.signal.value,
                severity=rule.severity.value,
            )
        except Exception as error:  # a template that fails at render time must not lose the incident
            return f"{rule.id}: summary template failed ({type(error).__name__})"
    comparison = ">" if rule.above is not None else "<"
    shown = "no data" if value is None else f"{value:.4g}"
    return f"{rule.id}: {rule.signal.value} {shown} {comparison} {rule.threshold:g}"


def audit(tx: Tx, kind: AuditKind, now: datetime, incident: int | None, rule: Rule | None, **kw: Any) -> None:
    tx.append_audit(
        AuditEvent(
            at=now,
            actor=kw.pop("actor", ACTOR),
            kind=kind.value,
            incident_id=incident,
            rule_id=rule.id if rule else kw.pop("rule_id", None),
            rule_hash=rule.content_hash if rule else None,
            target=kw.pop("target", rule.target if rule else None),
            from_version=kw.pop("from_version", None),
            to_version=kw.pop("to_version", None),
            detail=kw,
        )
    )


def notify_incident(tx: Tx, incident_id: int, now: datetime, thread_text: str | None) -> None:
    """Queue the incident message update (rendered at delivery) and a thread step."""
    tx.enqueue_message(incident_id=incident_id, kind=MessageKind.INCIDENT, payload={}, now=now)
    if thread_text:
        tx.enqueue_message(
            incident_id=incident_id,
            kind=MessageKind.THREAD,
            payload={"text": thread_text},
            now=now,
        )


def view_of(incident: IncidentRecord) -> IncidentView:
    return IncidentView(
        status=incident.status,
        resolved=incident.resolved_at is not None,
        rollback_status=incident.rollback_status,
        rolled_back_from=incident.rollback_from,
        undone=incident.undone_by is not None,
        acknowledged=incident.acknowledged_by is not None,
    )


def fire(
    tx: Tx,
    rule: Rule,
    transition: Transition,
    measurement: Any,
    context: FiringContext,
    now: datetime,
) -> int | None:
    """A rule fired on the live version: open that version's incident, or join the open one.

    Returns the id of an incident it opened (None when it joined one)."""
    version = context.live_version
    existing = tx.open_incident_for_version(rule.target, rule.model, version)
    if existing is None and rule.target is not None and version is not None:
        # Still breaching on the version a rollback restored: that incident's verdict covers it.
        existing = tx.open_incident_that_went_to(rule.target, version)
    if existing is not None:
        _join(tx, rule, transition, measurement, context, existing, now)
        return None
    return _open(tx, rule, transition, measurement, context, now)


def _finding(
    rule: Rule,
    incident_id: int,
    kind: FindingKind,
    transition: Transition,
    evidence: dict[str, Any],
    now: datetime,
) -> NewFinding:
    return NewFinding(
        incident_id=incident_id,
        rule_id=rule.id,
        rule_hash=rule.content_hash,
        kind=kind,
        value=_finite(transition.value),
        threshold=rule.threshold,
        at=now,
        active=kind is not FindingKind.SETTLING,
        evidence=evidence,
    )


def _open(
    tx: Tx, rule: Rule, transition: Transition, measurement: Any, context: FiringContext, now: datetime
) -> int:
    evidence = evidence_for(rule, transition, measurement, now)
    incident_id = tx.open_incident(
        NewIncident(
            rule_id=rule.id,
            rule_hash=rule.content_hash,
            model=rule.model,
            target=rule.target,
            signal=rule.signal.value,
            severity=rule.severity.value,
            action=rule.action.value,
            summary=summary_for(rule, _finite(transition.value), evidence.get("samples")),
            opened_at=now,
            live_version=context.live_version,
            evidence=evidence,
        )
    )
    tx.add_finding(
        _finding(rule, incident_id, FindingKind.OPENED, transition, evidence, now),
        above=rule.above is not None,
    )
    audit(
        tx,
        AuditKind.INCIDENT_OPENED,
        now,
        incident_id,
        rule,
        value=evidence["value"],
        threshold=rule.threshold,
        reason=transition.reason.value,
        live_version=context.live_version,
    )
    if rule.target and context.live_version:
        tx.mark_incident_on_live_version(rule.target, context.live_version)
    incident = tx.incident(incident_id)
    assert incident is not None
    thread = apply_decision(tx, rule, incident, context, now)
    notify_incident(tx, incident_id, now, thread)
    return incident_id


def _join(
    tx: Tx,
    rule: Rule,
    transition: Transition,
    measurement: Any,
    context: FiringContext,
    incident_id: int,
    now: datetime,
) -> None:
    evidence = evidence_for(rule, transition, measurement, now)
    new = tx.add_finding(
        _finding(rule, incident_id, FindingKind.JOINED, transition, evidence, now),
        above=rule.above is not None,
    )
    incident = tx.incident(incident_id)
    assert incident is not None
    if new:
        audit(
            tx,
            AuditKind.FINDING_ADDED,
            now,
            incident_id,
            rule,
            value=evidence["value"],
            threshold=rule.threshold,
            live_version=context.live_version,
        )
    thread = _finding_line(rule, transition) if new else None
    # The first rule that asks for a rollback decides it, whichever rule opened the incident.
    if rule.action.value != "notify" and incident.rollback_status is None:
        decided = apply_decision(tx, rule, incident, context, now, quiet_if_notify=True)
        thread = f"{thread} {decided}" if thread and decided else thread or decided
    notify_incident(tx, incident_id, now, thread)


def _finding_line(rule: Rule, transition: Transition) -> str:
    comparison = ">" if rule.above is not None else "<"
    value = _finite(transition.value)
    shown = "no data" if value is None else f"{value:.4g}"
    return f"{rule.id} also fired on this version: {shown} {comparison} {rule.threshold:g}."


def settling_evidence(
    tx: Tx, rule: Rule, transition: Transition, measurement: Any, attribution: Attribution, now: datetime
) -> int | None:
    """A breach on a window that still holds the version a rollback moved away from: evidence for
    the incident that made the change, never a new incident. Returns that incident's id."""
    if rule.target is None or attribution.version is None:
        return None
    incident_id = tx.open_incident_that_went_to(rule.target, attribution.version)
    if incident_id is None:
        return None
    evidence = evidence_for(rule, transition, measurement, now)
    evidence["settling_from"] = attribution.previous_version
    new = tx.add_finding(
        _finding(rule, incident_id, FindingKind.SETTLING, transition, evidence, now),
        above=rule.above is not None,
    )
    if new:
        audit(
            tx,
            AuditKind.SETTLING_EVIDENCE,
            now,
            incident_id,
            rule,
            value=evidence["value"],
            threshold=rule.threshold,
            window_holds=attribution.previous_version,
            live_version=attribution.version,
        )
        line = (
            f"{rule.id} breached too ({_finite(transition.value)}), on a window that still holds "
            f"{attribution.previous_version}: counted as evidence here, not against {attribution.version}."
        )
        notify_incident(tx, incident_id, now, line)
    return incident_id


def apply_decision(
    tx: Tx,
    rule: Rule,
    incident: IncidentRecord,
    context: FiringContext,
    now: datetime,
    *,
    quiet_if_notify: bool = False,
) -> str | None:
    """Act on the safety decision for this incident: roll back, ask, or only notify."""
    decision = context.decision
    to_version = context.choice.version if context.choice else None
    common: dict[str, Any] = {
        "decision_reason": decision.reason.value,
        "decision_detail": decision.detail,
        "rollback_from": context.live_version,
        "rollback_to": to_version,
    }
    view = view_of(incident)
    rolls = decision.kind is DecisionKind.ROLL_BACK and rule.target and context.live_version and to_version
    if rolls and lifecycle.advance(view, Event.ROLLBACK_DECIDED).moved:
        return _request_rollback(tx, rule, incident.id, context, to_version or "", common, now)
    asks = decision.kind is DecisionKind.ASK_APPROVAL and to_version
    if asks and lifecycle.advance(view, Event.APPROVAL_DECIDED).moved:
        tx.update_incident(incident.id, now, status=IncidentStatus.AWAITING_APPROVAL, **common)
        audit(
            tx,
            AuditKind.APPROVAL_REQUESTED,
            now,
            incident.id,
            rule,
            from_version=context.live_version,
            to_version=to_version,
            reason=decision.reason.value,
            why=decision.detail,
        )
        return f"Rollback to {to_version} awaits approval: {decision.detail}"
    if quiet_if_notify:
        return None
    # Nothing is proposed: naming a rollback target here would read as an offer.
    tx.update_incident(
        incident.id, now, decision_reason=decision.reason.value, decision_detail=decision.detail
    )
    audit(tx, AuditKind.NOTIFIED, now, incident.id, rule, reason=decision.reason.value, why=decision.detail)
    return f"No rollback: {decision.detail}"


def _request_rollback(
    tx: Tx,
    rule: Rule,
    incident_id: int,
    context: FiringContext,
    to_version: str,
    common: dict[str, Any],
    now: datetime,
) -> str:
    decision = context.decision
    assert rule.target and context.live_version
    intent = tx.create_intent(
        incident_id=incident_id,
        target=rule.target,
        purpose=IntentPurpose.ROLLBACK,
        from_version=context.live_version,
        to_version=to_version,
        requested_by=ACTOR,
        reason=decision.detail,
        now=now,
    )
    tx.update_incident(
        incident_id, now, status=IncidentStatus.ROLLING_BACK, rollback_status=RollbackStatus.PENDING, **common
    )
    audit(
        tx,
        AuditKind.ROLLBACK_REQUESTED,
        now,
        incident_id,
        rule,
        from_version=context.live_version,
        to_version=to_version,
        intent=intent.key,
        reason=decision.reason.value,
        why=decision.detail,
    )
    return f"Rolling back {rule.target} from {context.live_version} to {to_version}: {decision.detail}"


def record_unhealthy(tx: Tx, rule: Rule, message: str, now: datetime) -> None:
    audit(tx, AuditKind.RULE_UNHEALTHY, now, None, rule, error=message)
    tx.enqueue_message(
        incident_id=None,
        kind=MessageKind.NOTICE,
        payload={"text": f":warning: Rule {rule.id} is unhealthy: its source keeps failing ({message})"},
        now=now,
    )
