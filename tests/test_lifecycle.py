"""The incident lifecycle, pure and table-driven: what each event does to each kind of incident."""

from __future__ import annotations

import pytest

from watcher.incidents.lifecycle import Action, AuditKind, Event, IncidentView, advance, available_actions
from watcher.model import IncidentStatus, RollbackStatus

OPEN = IncidentView(IncidentStatus.OPEN, resolved=False)
AWAITING = IncidentView(IncidentStatus.AWAITING_APPROVAL, resolved=False)
ROLLING = IncidentView(IncidentStatus.ROLLING_BACK, resolved=False, rollback_status=RollbackStatus.PENDING)
VERIFYING = IncidentView(
    IncidentStatus.VERIFYING, resolved=False, rollback_status=RollbackStatus.SUCCEEDED, rolled_back_from="3"
)
MITIGATED = IncidentView(
    IncidentStatus.MITIGATED, resolved=False, rollback_status=RollbackStatus.SUCCEEDED, rolled_back_from="3"
)
ESCALATED = IncidentView(IncidentStatus.ESCALATED, resolved=False)
RESOLVED = IncidentView(IncidentStatus.RESOLVED, resolved=True)


@pytest.mark.parametrize(
    ("incident", "event", "status", "audit", "moved", "resolves"),
    [
        (
            OPEN,
            Event.ROLLBACK_DECIDED,
            IncidentStatus.ROLLING_BACK,
            AuditKind.ROLLBACK_REQUESTED,
            True,
            False,
        ),
        (
            OPEN,
            Event.APPROVAL_DECIDED,
            IncidentStatus.AWAITING_APPROVAL,
            AuditKind.APPROVAL_REQUESTED,
            True,
            False,
        ),
        (OPEN, Event.NOTIFY_DECIDED, None, AuditKind.NOTIFIED, True, False),
        # At most one rollback per incident.
        (VERIFYING, Event.ROLLBACK_DECIDED, None, AuditKind.NOTIFIED, False, False),
        (ROLLING, Event.APPROVAL_DECIDED, None, AuditKind.NOTIFIED, False, False),
        (OPEN, Event.FINDING_JOINED, None, AuditKind.FINDING_ADDED, True, False),
        (VERIFYING, Event.SETTLING_EVIDENCE, None, AuditKind.SETTLING_EVIDENCE, True, False),
        (AWAITING, Event.APPROVED, IncidentStatus.ROLLING_BACK, AuditKind.APPROVED, True, False),
        (OPEN, Event.APPROVED, None, AuditKind.PRESS_REFUSED, False, False),
        (
            ROLLING,
            Event.ROLLBACK_SUCCEEDED,
            IncidentStatus.VERIFYING,
            AuditKind.ROLLBACK_SUCCEEDED,
            True,
            False,
        ),
        (ROLLING, Event.ROLLBACK_FAILED, IncidentStatus.ESCALATED, AuditKind.ROLLBACK_FAILED, True, False),
        (VERIFYING, Event.VERIFIED, IncidentStatus.MITIGATED, AuditKind.ROLLBACK_VERIFIED, True, False),
        (VERIFYING, Event.STILL_BREACHING, IncidentStatus.ESCALATED, AuditKind.ESCALATED, True, False),
        (OPEN, Event.VERIFIED, None, AuditKind.ROLLBACK_VERIFIED, False, False),
        (VERIFYING, Event.VERIFY_INCONCLUSIVE, None, AuditKind.VERIFICATION_INCONCLUSIVE, True, False),
        # Every rule inactive: resolved, unless a rollback's verdict is still to come.
        (OPEN, Event.ALL_RULES_INACTIVE, IncidentStatus.RESOLVED, AuditKind.INCIDENT_RESOLVED, True, True),
        (
            MITIGATED,
            Event.ALL_RULES_INACTIVE,
            IncidentStatus.MITIGATED,
            AuditKind.INCIDENT_RESOLVED,
            True,
            True,
        ),
        (VERIFYING, Event.ALL_RULES_INACTIVE, None, AuditKind.RULE_RECOVERED, False, False),
        (ROLLING, Event.ALL_RULES_INACTIVE, None, AuditKind.RULE_RECOVERED, False, False),
        (RESOLVED, Event.ALL_RULES_INACTIVE, None, AuditKind.INCIDENT_RESOLVED, False, False),
        (OPEN, Event.ACKNOWLEDGED, IncidentStatus.ACKNOWLEDGED, AuditKind.ACKNOWLEDGED, True, False),
        (VERIFYING, Event.ACKNOWLEDGED, None, AuditKind.ACKNOWLEDGED, True, False),
        (ESCALATED, Event.SILENCED, IncidentStatus.SILENCED, AuditKind.SILENCED, True, False),
        (RESOLVED, Event.SILENCED, None, AuditKind.PRESS_REFUSED, False, False),
        (MITIGATED, Event.UNDO_SUCCEEDED, IncidentStatus.OPEN, AuditKind.UNDO_SUCCEEDED, True, False),
    ],
)
def test_what_an_event_does(
    incident: IncidentView,
    event: Event,
    status: IncidentStatus | None,
    audit: AuditKind,
    moved: bool,
    resolves: bool,
) -> None:
    step = advance(incident, event)
    assert (step.status, step.audit, step.moved, step.resolves) == (status, audit, moved, resolves)


def test_every_event_has_an_answer_for_every_status() -> None:
    for status in IncidentStatus:
        for event in Event:
            advance(IncidentView(status, resolved=status is IncidentStatus.RESOLVED), event)


@pytest.mark.parametrize(
    ("incident", "actions"),
    [
        (AWAITING, (Action.ROLLBACK, Action.ACK, Action.SILENCE)),
        (VERIFYING, (Action.UNDO, Action.ACK, Action.SILENCE)),
        (OPEN, (Action.ACK, Action.SILENCE)),
        (IncidentView(IncidentStatus.ACKNOWLEDGED, resolved=False, acknowledged=True), (Action.SILENCE,)),
        (IncidentView(IncidentStatus.OPEN, resolved=False, silenced=True), (Action.ACK,)),
        (RESOLVED, ()),
    ],
)
def test_buttons_are_those_whose_press_would_act(incident: IncidentView, actions: tuple[Action, ...]) -> None:
    assert available_actions(incident) == actions
