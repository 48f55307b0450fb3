"""What a transition writes: incidents, audit events, rollback intents and outbox messages.

Every function here runs inside the tick's one transaction and makes no network call; what
needed the network (the live version, the rollback choice) was fetched before it opened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from watcher.decisions.evaluation import Transition
from watcher.decisions.known_good import RollbackChoice
from watcher.decisions.safety import DecisionKind, SafetyDecision
from watcher.decisions.verification import VerifyVerdict
from watcher.model import IncidentStatus, RollbackStatus, Value
from watcher.rules.rulefmt import Rule
from watcher.rules.templates import render_summary
from watcher.store.queue import create_intent, enqueue_message
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


def _audit(tx: Tx, kind: str, now: datetime, incident: int | None, rule: Rule | None, **kw: Any) -> None:
    tx.append_audit(
        AuditEvent(
            at=now,
            actor=kw.pop("actor", ACTOR),
            kind=kind,
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
    enqueue_message(tx.connection, incident_id=incident_id, kind=MessageKind.INCIDENT, payload={}, now=now)
    if thread_text:
        enqueue_message(
            tx.connection,
            incident_id=incident_id,
            kind=MessageKind.THREAD,
            payload={"text": thread_text},
            now=now,
        )


def open_incident(
    tx: Tx, rule: Rule, transition: Transition, measurement: Any, context: FiringContext, now: datetime
) -> int | None:
    """Open the episode's incident and act on the safety decision; None if one is open already."""
    if tx.open_incident_for_rule(rule.id) is not None:
        return None  # e.g. a restart found the rule firing with its incident already open
    evidence = evidence_for(rule, transition, measurement, now)
    samples = evidence.get("samples")
    incident_id = tx.open_incident(
        NewIncident(
            rule_id=rule.id,
            rule_hash=rule.content_hash,
            model=rule.model,
            target=rule.target,
            signal=rule.signal.value,
            severity=rule.severity.value,
            action=rule.action.value,
            summary=summary_for(rule, _finite(transition.value), samples),
            opened_at=now,
            live_version=context.live_version,
            evidence=evidence,
        )
    )
    _audit(
        tx,
        "incident_opened",
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
    thread = _apply_decision(tx, rule, incident_id, context, now)
    notify_incident(tx, incident_id, now, thread)
    return incident_id


def _apply_decision(tx: Tx, rule: Rule, incident_id: int, context: FiringContext, now: datetime) -> str:
    decision = context.decision
    to_version = context.choice.version if context.choice else None
    common: dict[str, Any] = {
        "decision_reason": decision.reason.value,
        "decision_detail": decision.detail,
        "rollback_from": context.live_version,
        "rollback_to": to_version,
    }
    if decision.kind is DecisionKind.ROLL_BACK and rule.target and context.live_version and to_version:
        intent = create_intent(
            tx.connection,
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
            incident_id,
            now,
            status=IncidentStatus.ROLLING_BACK,
            rollback_status=RollbackStatus.PENDING,
            **common,
        )
        _audit(
            tx,
            "rollback_requested",
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
    if decision.kind is DecisionKind.ASK_APPROVAL and to_version:
        tx.update_incident(incident_id, now, status=IncidentStatus.AWAITING_APPROVAL, **common)
        _audit(
            tx,
            "approval_requested",
            now,
            incident_id,
            rule,
            from_version=context.live_version,
            to_version=to_version,
            reason=decision.reason.value,
            why=decision.detail,
        )
        return f"Rollback to {to_version} awaits approval: {decision.detail}"
    # Nothing is proposed: naming a rollback target here would read as an offer.
    tx.update_incident(
        incident_id, now, decision_reason=decision.reason.value, decision_detail=decision.detail
    )
    _audit(tx, "notified", now, incident_id, rule, reason=decision.reason.value, why=decision.detail)
    return f"No rollback: {decision.detail}"


def resolve_incident(
    tx: Tx, rule: Rule, incident: IncidentRecord, just_recovered: bool, now: datetime
) -> None:
    """The rule is inactive. A rollback still under way or being verified keeps its verdict to come."""
    if incident.status in (IncidentStatus.ROLLING_BACK, IncidentStatus.VERIFYING):
        if just_recovered:
            _audit(tx, "rule_recovered", now, incident.id, rule, status=incident.status.value)
        return
    final = (
        IncidentStatus.MITIGATED if incident.status is IncidentStatus.MITIGATED else IncidentStatus.RESOLVED
    )
    tx.update_incident(incident.id, now, status=final, resolved_at=now)
    _audit(tx, "incident_resolved", now, incident.id, rule, status=final.value)
    notify_incident(tx, incident.id, now, "Resolved: the rule is back to normal.")


def record_verification(
    tx: Tx,
    rule: Rule,
    incident: IncidentRecord,
    verdict: VerifyVerdict,
    outcome: str,
    rule_inactive: bool,
    retry_in: timedelta,
    now: datetime,
) -> None:
    if verdict is VerifyVerdict.RETRY_LATER:
        tx.update_incident(
            incident.id, now, verify_due_at=now + retry_in, verify_attempts=incident.verify_attempts + 1
        )
        _audit(tx, "verification_inconclusive", now, incident.id, rule, outcome=outcome)
        return
    if verdict is VerifyVerdict.MITIGATED:
        values: dict[str, Any] = {"status": IncidentStatus.MITIGATED, "verify_due_at": None}
        if rule_inactive:
            values["resolved_at"] = now
        tx.update_incident(incident.id, now, expect_status=[IncidentStatus.VERIFYING], **values)
        _audit(tx, "rollback_verified", now, incident.id, rule, outcome=outcome, verdict=verdict.value)
        notify_incident(tx, incident.id, now, f"Verified: {rule.name} is {outcome} after the rollback.")
        return
    tx.update_incident(
        incident.id,
        now,
        expect_status=[IncidentStatus.VERIFYING],
        status=IncidentStatus.ESCALATED,
        verify_due_at=None,
    )
    _audit(tx, "escalated", now, incident.id, rule, outcome=outcome, verdict=verdict.value)
    notify_incident(
        tx,
        incident.id,
        now,
        f"Escalated: {rule.name} is still {outcome} after the rollback; no further automatic rollback.",
    )


def record_unhealthy(tx: Tx, rule: Rule, message: str, now: datetime) -> None:
    _audit(tx, "rule_unhealthy", now, None, rule, error=message)
    enqueue_message(
        tx.connection,
        incident_id=None,
        kind=MessageKind.NOTICE,
        payload={"text": f":warning: Rule {rule.id} is unhealthy: its source keeps failing ({message})"},
        now=now,
    )
