"""The life of an incident as one pure function, as `evaluation.step` is for a rule.

`advance(incident, event)` answers what an event does to an incident: its new status (or none),
whether it resolves, the audit kind to write, and the line for the Slack thread. The engine, the
dispatcher, the Slack actions and the message's buttons all ask it, so an incident's life is
written down once. Nothing here reads the clock or touches the store: callers pass what they know.

An incident is one bad version of one target (SPEC.md section 3): the first rule to fire on it
opens it; other rules join as findings; at most one rollback; verified on clean windows; resolved
when every rule in it is inactive.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from watcher.model import IncidentStatus, RollbackStatus


class AuditKind(StrEnum):
    """Every kind of audit event watcher writes: one vocabulary for the whole trail."""

    INCIDENT_OPENED = "incident_opened"
    FINDING_ADDED = "finding_added"
    SETTLING_EVIDENCE = "settling_evidence"
    ROLLBACK_REQUESTED = "rollback_requested"
    APPROVAL_REQUESTED = "approval_requested"
    NOTIFIED = "notified"
    ROLLBACK_ATTEMPT = "rollback_attempt"
    ROLLBACK_SUCCEEDED = "rollback_succeeded"
    ROLLBACK_FAILED = "rollback_failed"
    ROLLBACK_REFUSED = "rollback_refused"
    ROLLBACK_RETRY_SCHEDULED = "rollback_retry_scheduled"
    ROLLBACK_RECONCILED = "rollback_reconciled"
    UNDO_REQUESTED = "undo_requested"
    UNDO_SUCCEEDED = "undo_succeeded"
    UNDO_FAILED = "undo_failed"
    APPROVED = "approved"
    RULE_RECOVERED = "rule_recovered"
    VERIFICATION_INCONCLUSIVE = "verification_inconclusive"
    ROLLBACK_VERIFIED = "rollback_verified"
    ESCALATED = "escalated"
    INCIDENT_RESOLVED = "incident_resolved"
    ACKNOWLEDGED = "acknowledged"
    SILENCED = "silenced"
    PRESS_REFUSED = "press_refused"
    RULE_UNHEALTHY = "rule_unhealthy"
    PAUSED = "paused"
    RESUMED = "resumed"
    MANUAL_ROLLBACK_REQUESTED = "manual_rollback_requested"
    STALE_WRITE_REFUSED = "stale_write_refused"


class Event(StrEnum):
    """What can happen to an incident."""

    FINDING_JOINED = "finding_joined"  # another rule fired on the same target and version
    SETTLING_EVIDENCE = "settling_evidence"  # a rule breached on a window still holding this version
    ROLLBACK_DECIDED = "rollback_decided"  # the safety decision: roll back now
    APPROVAL_DECIDED = "approval_decided"  # the safety decision: ask a human
    NOTIFY_DECIDED = "notify_decided"  # the safety decision: no rollback
    APPROVED = "approved"  # Roll back pressed
    ROLLBACK_SUCCEEDED = "rollback_succeeded"
    ROLLBACK_FAILED = "rollback_failed"
    UNDO_SUCCEEDED = "undo_succeeded"
    VERIFIED = "verified"  # every rule of the incident ok on the restored version
    STILL_BREACHING = "still_breaching"  # a rule of the incident breaches on the restored version
    VERIFY_INCONCLUSIVE = "verify_inconclusive"
    RULE_RECOVERED = "rule_recovered"  # one rule back to inactive, others still active
    ALL_RULES_INACTIVE = "all_rules_inactive"
    ACKNOWLEDGED = "acknowledged"
    SILENCED = "silenced"


class Action(StrEnum):
    """The buttons a message can carry."""

    ROLLBACK = "rollback"
    UNDO = "undo"
    ACK = "ack"
    SILENCE = "silence"


@dataclass(frozen=True)
class IncidentView:
    """What the lifecycle needs to know of an incident."""

    status: IncidentStatus
    resolved: bool
    rollback_status: RollbackStatus | None = None
    rolled_back_from: str | None = None
    undone: bool = False
    acknowledged: bool = False
    silenced: bool = False


@dataclass(frozen=True)
class Step:
    """What an event does: `status` None keeps the current one; `refused` names why nothing moved."""

    status: IncidentStatus | None
    audit: AuditKind
    resolves: bool = False
    refused: str | None = None

    @property
    def moved(self) -> bool:
        return self.refused is None


_BUSY = frozenset({IncidentStatus.ROLLING_BACK, IncidentStatus.VERIFYING})
_QUIETABLE = frozenset({IncidentStatus.OPEN, IncidentStatus.ESCALATED, IncidentStatus.ACKNOWLEDGED})
# After a rollback succeeded, going back still makes sense while nobody has undone it yet.
_UNDOABLE = frozenset(
    {
        IncidentStatus.VERIFYING,
        IncidentStatus.MITIGATED,
        IncidentStatus.ESCALATED,
        IncidentStatus.ACKNOWLEDGED,
        IncidentStatus.SILENCED,
    }
)


def advance(incident: IncidentView, event: Event) -> Step:
    """The one answer to "what does `event` do to `incident`?"."""
    handler = _HANDLERS[event]
    return handler(incident)


def _refuse(kind: AuditKind, why: str) -> Step:
    return Step(None, kind, refused=why)


def _finding(incident: IncidentView) -> Step:
    return Step(None, AuditKind.FINDING_ADDED)


def _settling(incident: IncidentView) -> Step:
    return Step(None, AuditKind.SETTLING_EVIDENCE)


def _rollback_decided(incident: IncidentView) -> Step:
    if incident.rollback_status is not None or incident.status in _BUSY:
        return _refuse(AuditKind.NOTIFIED, "this incident has a rollback already")
    return Step(IncidentStatus.ROLLING_BACK, AuditKind.ROLLBACK_REQUESTED)


def _approval_decided(incident: IncidentView) -> Step:
    if incident.rollback_status is not None or incident.status in _BUSY:
        return _refuse(AuditKind.NOTIFIED, "this incident has a rollback already")
    return Step(IncidentStatus.AWAITING_APPROVAL, AuditKind.APPROVAL_REQUESTED)


def _notify_decided(incident: IncidentView) -> Step:
    return Step(None, AuditKind.NOTIFIED)


def _approved(incident: IncidentView) -> Step:
    if incident.status is not IncidentStatus.AWAITING_APPROVAL or incident.resolved:
        return _refuse(AuditKind.PRESS_REFUSED, "the rollback no longer awaits approval")
    return Step(IncidentStatus.ROLLING_BACK, AuditKind.APPROVED)


def _rollback_succeeded(incident: IncidentView) -> Step:
    return Step(IncidentStatus.VERIFYING, AuditKind.ROLLBACK_SUCCEEDED)


def _rollback_failed(incident: IncidentView) -> Step:
    return Step(IncidentStatus.ESCALATED, AuditKind.ROLLBACK_FAILED)


def _undo_succeeded(incident: IncidentView) -> Step:
    # A resolved incident keeps its status; an open one is plain open again (no verdict to await).
    return Step(None if incident.resolved else IncidentStatus.OPEN, AuditKind.UNDO_SUCCEEDED)


def _verified(incident: IncidentView) -> Step:
    if incident.status is not IncidentStatus.VERIFYING:
        return _refuse(AuditKind.ROLLBACK_VERIFIED, "no verification is due")
    return Step(IncidentStatus.MITIGATED, AuditKind.ROLLBACK_VERIFIED)


def _still_breaching(incident: IncidentView) -> Step:
    if incident.status is not IncidentStatus.VERIFYING:
        return _refuse(AuditKind.ESCALATED, "no verification is due")
    return Step(IncidentStatus.ESCALATED, AuditKind.ESCALATED)


def _inconclusive(incident: IncidentView) -> Step:
    return Step(None, AuditKind.VERIFICATION_INCONCLUSIVE)


def _rule_recovered(incident: IncidentView) -> Step:
    return Step(None, AuditKind.RULE_RECOVERED)


def _all_inactive(incident: IncidentView) -> Step:
    if incident.resolved:
        return _refuse(AuditKind.INCIDENT_RESOLVED, "resolved already")
    if incident.status in _BUSY:
        # A rollback under way or being verified keeps its verdict to come.
        return _refuse(AuditKind.RULE_RECOVERED, "a rollback is under way or being verified")
    final = (
        IncidentStatus.MITIGATED if incident.status is IncidentStatus.MITIGATED else IncidentStatus.RESOLVED
    )
    return Step(final, AuditKind.INCIDENT_RESOLVED, resolves=True)


def _acknowledged(incident: IncidentView) -> Step:
    if incident.resolved or incident.acknowledged:
        return _refuse(AuditKind.PRESS_REFUSED, "nothing to acknowledge")
    status = IncidentStatus.ACKNOWLEDGED if incident.status in _QUIETABLE else None
    return Step(status, AuditKind.ACKNOWLEDGED)


def _silenced(incident: IncidentView) -> Step:
    if incident.resolved:
        return _refuse(AuditKind.PRESS_REFUSED, "the incident is resolved")
    status = IncidentStatus.SILENCED if incident.status in _QUIETABLE else None
    return Step(status, AuditKind.SILENCED)


_HANDLERS = {
    Event.FINDING_JOINED: _finding,
    Event.SETTLING_EVIDENCE: _settling,
    Event.ROLLBACK_DECIDED: _rollback_decided,
    Event.APPROVAL_DECIDED: _approval_decided,
    Event.NOTIFY_DECIDED: _notify_decided,
    Event.APPROVED: _approved,
    Event.ROLLBACK_SUCCEEDED: _rollback_succeeded,
    Event.ROLLBACK_FAILED: _rollback_failed,
    Event.UNDO_SUCCEEDED: _undo_succeeded,
    Event.VERIFIED: _verified,
    Event.STILL_BREACHING: _still_breaching,
    Event.VERIFY_INCONCLUSIVE: _inconclusive,
    Event.RULE_RECOVERED: _rule_recovered,
    Event.ALL_RULES_INACTIVE: _all_inactive,
    Event.ACKNOWLEDGED: _acknowledged,
    Event.SILENCED: _silenced,
}


def available_actions(incident: IncidentView) -> tuple[Action, ...]:
    """The buttons that make sense now, in display order: each only while its event would move."""
    if incident.resolved and incident.status is IncidentStatus.RESOLVED:
        return ()
    actions: list[Action] = []
    if advance(incident, Event.APPROVED).moved:
        actions.append(Action.ROLLBACK)
    if _undoable(incident):
        actions.append(Action.UNDO)
    if not incident.acknowledged and incident.status is not IncidentStatus.ACKNOWLEDGED:
        actions.append(Action.ACK)
    if not incident.silenced:
        actions.append(Action.SILENCE)
    return tuple(actions)


def _undoable(incident: IncidentView) -> bool:
    return (
        incident.status in _UNDOABLE
        and incident.rolled_back_from is not None
        and incident.rollback_status is RollbackStatus.SUCCEEDED
        and not incident.undone
    )
