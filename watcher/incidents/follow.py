"""After the firing: each rule of an open incident verified on clean windows, and the resolution.

After a rollback every rule of the incident is evaluated again once `verify_after` has passed and
its window holds only the restored version (SPEC.md section 3): all ok marks the incident
mitigated; one still breaching escalates it. An evaluation on a window that still holds the
version rolled away from proves nothing about the restored one and is not a verdict. The incident
resolves when every rule in it is back to inactive.

Runs inside the tick's one transaction, with no network call.
"""

from __future__ import annotations

from datetime import datetime

from watcher.decisions.attribution import Attribution, AttributionKind
from watcher.decisions.evaluation import Transition
from watcher.decisions.verification import VerifyVerdict, decide_verification
from watcher.incidents import lifecycle
from watcher.incidents.flow import audit, notify_incident, view_of
from watcher.incidents.lifecycle import AuditKind, Event
from watcher.model import IncidentStatus, Outcome, RuleState
from watcher.rules.rulefmt import Rule
from watcher.store.findings import FindingRecord
from watcher.store.records import IncidentRecord
from watcher.store.repository import Tx


def follow(
    tx: Tx,
    rule: Rule,
    transition: Transition,
    attribution: Attribution | None,
    now: datetime,
) -> bool:
    """Verify and resolve the open incidents the rule is in, as due; True while one stays open."""
    for incident_id in tx.open_incidents_of_rule(rule.id):
        _follow_one(tx, rule, incident_id, transition, attribution, now)
    return bool(tx.open_incidents_of_rule(rule.id))


def _follow_one(
    tx: Tx,
    rule: Rule,
    incident_id: int,
    transition: Transition,
    attribution: Attribution | None,
    now: datetime,
) -> None:
    incident = tx.incident(incident_id)
    finding = tx.finding(incident_id, rule.id)
    if incident is None or finding is None:
        return
    # Back to normal for real: inactive on an evaluation that is no breach. An episode that only
    # ended because its version went away (VERSION_CHANGED) still breaches, and keeps it open.
    recovered = transition.current.state is RuleState.INACTIVE and transition.outcome is not Outcome.BREACH
    if finding.active and recovered:
        tx.set_finding_active(incident_id, rule.id, False, now)
        if incident.status in (IncidentStatus.ROLLING_BACK, IncidentStatus.VERIFYING):
            audit(tx, AuditKind.RULE_RECOVERED, now, incident_id, rule, status=incident.status.value)
    if verification_due(incident, now) and window_is_clean(incident, attribution):
        _verify(tx, rule, incident, finding, transition.outcome, now)
    _resolve_if_all_inactive(tx, rule, incident_id, now)


def verification_due(incident: IncidentRecord, now: datetime) -> bool:
    due = incident.verify_due_at
    return incident.status is IncidentStatus.VERIFYING and due is not None and now >= due


def window_is_clean(incident: IncidentRecord, attribution: Attribution | None) -> bool:
    """The evaluation's window holds only the version the rollback restored."""
    if attribution is None:
        return True  # no versioned target: nothing else it could hold
    return attribution.kind is AttributionKind.ATTRIBUTED and attribution.version == incident.rollback_to


def _verify(
    tx: Tx,
    rule: Rule,
    incident: IncidentRecord,
    finding: FindingRecord,
    outcome: Outcome,
    now: datetime,
) -> None:
    if finding.verify_outcome == Outcome.OK.value:
        return  # judged already; the other rules of the incident are still to come
    verdict = decide_verification(outcome, incident.verify_attempts + 1)
    if verdict is VerifyVerdict.RETRY_LATER:
        tx.update_incident(incident.id, now, verify_attempts=incident.verify_attempts + 1)
        audit(tx, AuditKind.VERIFICATION_INCONCLUSIVE, now, incident.id, rule, outcome=outcome.value)
        return
    if verdict is VerifyVerdict.ESCALATED:
        _escalate(tx, rule, incident, outcome, now)
        return
    tx.set_finding_verdict(incident.id, rule.id, Outcome.OK.value)
    pending = [f.rule_id for f in tx.findings(incident.id) if f.verify_outcome != Outcome.OK.value]
    if pending:
        return
    step = lifecycle.advance(view_of(incident), Event.VERIFIED)
    if not step.moved or step.status is None:
        return
    tx.update_incident(
        incident.id, now, expect_status=[IncidentStatus.VERIFYING], status=step.status, verify_due_at=None
    )
    audit(tx, step.audit, now, incident.id, rule, outcome=outcome.value, verdict=verdict.value)
    notify_incident(
        tx, incident.id, now, f"Verified: every rule of this incident is ok on {incident.rollback_to}."
    )


def _escalate(tx: Tx, rule: Rule, incident: IncidentRecord, outcome: Outcome, now: datetime) -> None:
    step = lifecycle.advance(view_of(incident), Event.STILL_BREACHING)
    if not step.moved or step.status is None:
        return
    tx.update_incident(
        incident.id, now, expect_status=[IncidentStatus.VERIFYING], status=step.status, verify_due_at=None
    )
    tx.set_finding_verdict(incident.id, rule.id, outcome.value)
    audit(
        tx, step.audit, now, incident.id, rule, outcome=outcome.value, verdict=VerifyVerdict.ESCALATED.value
    )
    notify_incident(
        tx,
        incident.id,
        now,
        f"Escalated: {rule.name} is still {outcome.value} on {incident.rollback_to} after the rollback; "
        "no further automatic rollback.",
    )


def _resolve_if_all_inactive(tx: Tx, rule: Rule, incident_id: int, now: datetime) -> None:
    if any(finding.active for finding in tx.findings(incident_id)):
        return
    incident = tx.incident(incident_id)
    if incident is None:
        return
    step = lifecycle.advance(view_of(incident), Event.ALL_RULES_INACTIVE)
    if not step.moved or step.status is None:
        return
    tx.update_incident(incident_id, now, status=step.status, resolved_at=now)
    audit(tx, step.audit, now, incident_id, rule, status=step.status.value)
    notify_incident(tx, incident_id, now, "Resolved: every rule of this incident is back to normal.")
