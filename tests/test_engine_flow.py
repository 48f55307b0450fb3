"""The engine, the store and the dispatcher together, on SQLite and on PostgreSQL, with a real
SQL source and a real MLflow registry. Time is stepped by the test: no sleeping, no clock patching.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support.harness import RULE, Harness
from tests.support.workspace import DEFAULT_RULES, make_workspace
from watcher.decisions.evaluation import TransitionReason
from watcher.model import IncidentStatus, Outcome, RollbackStatus, RuleState, SeriesValues
from watcher.store.queue import WorkQueue

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def harness(tmp_path: Path, registry_template: Path, database_url: str) -> Iterator[Harness]:
    workspace = make_workspace(tmp_path / "ws", registry_template, database_url)
    h = Harness(workspace)
    yield h
    h.close()


def test_breach_held_past_for_rolls_back_and_verification_mitigates(harness: Harness) -> None:
    assert harness.tick(T0, 0.01) is Outcome.OK
    assert harness.tick(T0 + timedelta(seconds=30), 0.2) is Outcome.BREACH
    assert harness.state() is RuleState.PENDING
    harness.tick(T0 + timedelta(minutes=2, seconds=29))
    assert harness.state() is RuleState.PENDING
    assert harness.store.incidents() == []

    fired_at = T0 + timedelta(minutes=2, seconds=30)
    harness.tick(fired_at)
    assert harness.state() is RuleState.FIRING
    [incident] = harness.store.incidents()
    assert incident.status is IncidentStatus.ROLLING_BACK
    assert incident.live_version == "3"
    assert (incident.rollback_from, incident.rollback_to) == ("3", "2")
    assert incident.evidence["value"] == pytest.approx(0.2)
    assert incident.evidence["threshold"] == 0.05
    assert incident.evidence["samples"] == 1000
    assert incident.evidence["query"] == "SELECT value, samples FROM signal"
    assert incident.rule_hash and len(incident.rule_hash) == 64

    [result] = harness.dispatcher.run_due(fired_at)
    assert result.status is RollbackStatus.SUCCEEDED
    assert harness.workspace.champion() == "2"
    assert harness.store.incident(incident.id).status is IncidentStatus.VERIFYING  # type: ignore[union-attr]

    # Recovery before verify_after: the incident waits for its verdict.
    harness.tick(fired_at + timedelta(seconds=30), 0.01)
    assert harness.state() is RuleState.INACTIVE
    assert harness.store.incident(incident.id).status is IncidentStatus.VERIFYING  # type: ignore[union-attr]
    harness.tick(fired_at + timedelta(minutes=1))
    done = harness.store.incident(incident.id)
    assert done is not None and done.status is IncidentStatus.MITIGATED and done.resolved_at is not None

    kinds = [event.kind for event in harness.store.timeline(incident.id)]
    assert kinds[:1] == ["incident_opened"]
    for expected in ("rollback_requested", "rollback_attempt", "rollback_succeeded", "rollback_verified"):
        assert expected in kinds
    assert (
        kinds.index("rollback_requested")
        < kinds.index("rollback_attempt")
        < kinds.index("rollback_succeeded")
    )
    assert len(harness.store.incidents()) == 1


def test_second_breach_inside_cooldown_asks_for_approval(harness: Harness) -> None:
    harness.tick(T0, 0.2)
    harness.tick(T0 + timedelta(minutes=2))
    harness.dispatcher.run_due(T0 + timedelta(minutes=2))
    assert harness.workspace.champion() == "2"
    harness.tick(T0 + timedelta(minutes=3), 0.01)
    harness.tick(T0 + timedelta(minutes=4))
    start = T0 + timedelta(minutes=5)
    harness.tick(start, 0.3)
    harness.tick(start + timedelta(minutes=2))
    second = harness.store.incidents()[0]
    assert second.status is IncidentStatus.AWAITING_APPROVAL
    assert second.decision_reason == "cooldown"
    assert harness.dispatcher.run_due(start + timedelta(minutes=2)) == []
    assert harness.workspace.champion() == "2"


def test_error_and_no_data_never_open_an_incident(harness: Harness) -> None:
    harness.tick(T0, 0.2)
    harness.workspace.break_source()
    for minute in range(1, 6):
        assert harness.tick(T0 + timedelta(minutes=minute)) is Outcome.ERROR
    assert harness.store.incidents() == []
    assert harness.state() is RuleState.PENDING  # an error neither breaches nor resolves
    harness.workspace.set_value(None)
    assert harness.tick(T0 + timedelta(minutes=7)) is Outcome.NO_DATA
    assert harness.store.incidents() == []
    events = harness.store.audit_events()
    assert [e.kind for e in events] == ["rule_unhealthy"]  # reported once, after the 4th error


def test_pending_state_survives_a_restart(harness: Harness) -> None:
    harness.tick(T0, 0.2)
    harness.tick(T0 + timedelta(minutes=1))
    restarted = Harness(harness.workspace)
    try:
        assert restarted.state() is RuleState.PENDING
        restarted.tick(T0 + timedelta(minutes=1, seconds=59))
        assert restarted.state() is RuleState.PENDING
        restarted.tick(T0 + timedelta(minutes=2))
        assert restarted.state() is RuleState.FIRING
        assert len(restarted.store.incidents()) == 1
    finally:
        restarted.close()


def test_resolution_without_rollback_for_a_notify_rule(tmp_path: Path, registry_template: Path) -> None:
    workspace = make_workspace(
        tmp_path / "ws",
        registry_template,
        f"sqlite:///{tmp_path / 'w.db'}",
        rules=DEFAULT_RULES.replace("action: rollback", "action: notify"),
    )
    h = Harness(workspace)
    try:
        h.tick(T0, 0.2)
        h.tick(T0 + timedelta(minutes=2))
        [incident] = h.store.incidents()
        assert incident.status is IncidentStatus.OPEN and incident.decision_reason == "rule_notifies"
        h.tick(T0 + timedelta(minutes=3), 0.01)
        resolved = h.store.incident(incident.id)
        assert resolved is not None and resolved.status is IncidentStatus.RESOLVED
        assert workspace.champion() == "3"
    finally:
        h.close()


def test_audit_events_cannot_be_changed(harness: Harness) -> None:
    harness.tick(T0, 0.2)
    harness.tick(T0 + timedelta(minutes=2))
    from watcher.store.repository import Tx

    assert not [name for name in dir(Tx) if "audit" in name and name != "append_audit"]
    for statement in ("UPDATE audit_events SET actor = 'someone else'", "DELETE FROM audit_events"):
        with pytest.raises(Exception, match="append-only"), harness.db.begin() as connection:
            connection.execute(text(statement))
    assert harness.store.audit_events()[0].actor == "watcher"


def test_claim_is_exclusive(harness: Harness) -> None:
    harness.tick(T0, 0.2)
    harness.tick(T0 + timedelta(minutes=2))
    queue = WorkQueue(harness.store)
    first = queue.claim_intent("replica-a", T0 + timedelta(minutes=2), timedelta(minutes=5))
    second = queue.claim_intent("replica-b", T0 + timedelta(minutes=2), timedelta(minutes=5))
    assert first is not None and second is None


def test_a_second_rule_pending_on_the_bad_version_opens_nothing_against_the_restored_one(
    tmp_path: Path, registry_template: Path
) -> None:
    second_rule = DEFAULT_RULES.split("rules:\n", 1)[1].replace("name: error-rate", "name: error-rate-strict")
    second_rule = second_rule.replace("for: 2m", "for: 3m")
    rules = DEFAULT_RULES + second_rule
    workspace = make_workspace(
        tmp_path / "ws", registry_template, f"sqlite:///{tmp_path / 'w.db'}", rules=rules
    )
    h = Harness(workspace)
    strict = h.rules["fraud-detector/error-rate-strict"]
    try:
        h.tick(T0, 0.2)
        h.engine.tick(strict, T0)
        h.tick(T0 + timedelta(minutes=2))
        h.dispatcher.run_due(T0 + timedelta(minutes=2))
        assert workspace.champion() == "2"
        # Its pending time was counted on version 3: it does not carry over to version 2.
        after = h.engine.tick(strict, T0 + timedelta(minutes=3))
        assert after.incident_opened is None
        assert after.transition.reason is TransitionReason.VERSION_CHANGED
        assert after.transition.current.state is RuleState.INACTIVE
        [incident] = h.store.incidents()
        assert incident.live_version == "3"
        assert h.dispatcher.run_due(T0 + timedelta(minutes=3)) == []
        assert workspace.champion() == "2"
    finally:
        h.close()


def test_a_groups_quiet_writes_wait_for_write_quiet_and_a_breach_does_not(harness: Harness) -> None:
    from watcher.engine.tick import QuietWrite

    runtime = harness.rules[RULE]
    quiet: list[QuietWrite] = []
    harness.workspace.set_value(0.01)
    [measurement], [attribution], share = harness.engine.measure_group([runtime], T0)
    assert not isinstance(measurement, SeriesValues)

    harness.engine.settle(runtime, measurement, T0, share, quiet, attribution)

    assert [write.rule_id for write in quiet] == [RULE]
    assert RULE not in harness.store.rule_states()  # deferred to the group's one transaction
    harness.engine.write_quiet(quiet, T0)
    assert harness.store.rule_states()[RULE].status.last_evaluated_at == T0

    # Not quiet (a breach starts): written at once, whatever list is passed.
    harness.workspace.set_value(0.2)
    [measurement], [attribution], share = harness.engine.measure_group([runtime], T0 + timedelta(seconds=30))
    assert not isinstance(measurement, SeriesValues)
    later: list[QuietWrite] = []
    harness.engine.settle(runtime, measurement, T0 + timedelta(seconds=30), share, later, attribution)
    assert later == []
    assert harness.store.rule_states()[RULE].status.state is RuleState.PENDING
