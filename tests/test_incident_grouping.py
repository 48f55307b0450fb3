"""One bad release, one incident: grouping per target and version, settling after a rollback, and
verification on clean windows, through the real engine, store, dispatcher and MLflow registry."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.harness import RULE, Harness
from tests.support.workspace import DEFAULT_RULES, make_workspace
from watcher.decisions.evaluation import TransitionReason
from watcher.incidents.json_view import incident_detail_json
from watcher.model import IncidentStatus, RuleState
from watcher.store.queue import WorkQueue

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SECOND = "fraud-detector/latency"
SECOND_RULE = """\
  - name: latency
    signal: latency
    sql:
      url: sqlite:///signal.db
      query: SELECT value, samples FROM latency
      window: 5m
    above: 0.5
    for: 1m
    every: 30s
    action: rollback
"""


@pytest.fixture
def h(tmp_path: Path, registry_template: Path) -> Iterator[Harness]:
    workspace = make_workspace(
        tmp_path / "ws",
        registry_template,
        f"sqlite:///{tmp_path / 'w.db'}",
        rules=DEFAULT_RULES + SECOND_RULE,
    )
    harness = Harness(workspace)
    set_latency(harness, 0.1)
    try:
        yield harness
    finally:
        harness.close()


def set_latency(h: Harness, value: float) -> None:
    with sqlite3.connect(h.workspace.signal_db) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS latency (value REAL, samples INTEGER)")
        connection.execute("DELETE FROM latency")
        connection.execute("INSERT INTO latency VALUES (?, 1000)", (value,))


def tick_both(h: Harness, at: datetime) -> None:
    h.engine.tick_group([h.rules[RULE], h.rules[SECOND]], at)


def test_two_rules_firing_on_one_version_make_one_incident_and_one_rollback(h: Harness) -> None:
    h.workspace.set_value(0.2)
    set_latency(h, 0.9)
    tick_both(h, T0)
    tick_both(h, T0 + timedelta(minutes=1))  # latency fires first (for: 1m) and opens the incident
    tick_both(h, T0 + timedelta(minutes=2))  # error-rate fires on the same version: it joins

    [incident] = h.store.incidents()
    assert incident.rule_id == SECOND and incident.live_version == "3"
    findings = h.store.findings([incident.id])[incident.id]
    assert [(f.rule_id, f.kind.value) for f in findings] == [(SECOND, "opened"), (RULE, "joined")]
    rollbacks = [i for i in WorkQueue(h.store).intents() if i.incident_id == incident.id]
    assert len(rollbacks) == 1 and (rollbacks[0].from_version, rollbacks[0].to_version) == ("3", "2")

    document = incident_detail_json(h.store, incident.id)
    assert document is not None
    assert [f["rule"] for f in document["findings"]] == [SECOND, RULE]
    assert document["findings"][1]["threshold"] == 0.05 and document["findings"][1]["value"] == 0.2
    assert [v["version"] for v in document["versions"]] == ["3"]
    assert "finding_added" in [event["kind"] for event in document["timeline"]]


def test_a_rule_settling_after_the_rollback_is_evidence_not_a_new_incident(h: Harness) -> None:
    # The latency rule reads five minutes back: after the rollback its window still holds version 3.
    h.rules[SECOND] = replace(h.rules[SECOND], lookback=timedelta(minutes=5))
    h.workspace.set_value(0.2)
    h.tick(T0)
    h.tick(T0 + timedelta(minutes=2))
    h.dispatcher.run_due(T0 + timedelta(minutes=2))
    assert h.workspace.champion() == "2"

    set_latency(h, 0.9)
    h.workspace.set_value(0.01)
    settling = h.engine.tick(h.rules[SECOND], T0 + timedelta(minutes=3))
    assert settling.transition.reason is TransitionReason.SETTLING
    assert settling.transition.current.state is RuleState.INACTIVE
    [incident] = h.store.incidents()
    assert incident.live_version == "3"
    findings = h.store.findings([incident.id])[incident.id]
    assert (SECOND, "settling") in [(f.rule_id, f.kind.value) for f in findings]
    assert h.engine.tick(h.rules[SECOND], T0 + timedelta(minutes=4)).incident_opened is None
    assert len(WorkQueue(h.store).intents()) == 1  # no rollback proposed against version 2


def test_verification_waits_for_a_clean_window_then_mitigates(h: Harness) -> None:
    h.rules[SECOND] = replace(h.rules[SECOND], lookback=timedelta(minutes=5))
    h.workspace.set_value(0.2)
    h.tick(T0)
    h.tick(T0 + timedelta(minutes=2))
    h.dispatcher.run_due(T0 + timedelta(minutes=2))
    set_latency(h, 0.9)
    h.engine.tick(h.rules[SECOND], T0 + timedelta(minutes=3))  # settling evidence joins
    h.workspace.set_value(0.01)
    set_latency(h, 0.1)

    # verify_after (1m) has passed, but the latency rule's window still holds version 3.
    tick_both(h, T0 + timedelta(minutes=4))
    [incident] = h.store.incidents()
    assert incident.status is IncidentStatus.VERIFYING

    tick_both(h, T0 + timedelta(minutes=7, seconds=30))  # both windows hold only version 2 now
    [incident] = h.store.incidents()
    assert incident.status is IncidentStatus.MITIGATED
    assert incident.resolved_at is not None  # every rule of it is inactive


def test_a_rule_still_breaching_on_the_restored_version_escalates_without_a_second_rollback(
    h: Harness,
) -> None:
    h.workspace.set_value(0.2)
    h.tick(T0)
    h.tick(T0 + timedelta(minutes=2))
    h.dispatcher.run_due(T0 + timedelta(minutes=2))
    assert h.workspace.champion() == "2"
    h.tick(T0 + timedelta(minutes=3, seconds=30))  # still 0.2, on a clean window of version 2
    [incident] = h.store.incidents()
    assert incident.status is IncidentStatus.ESCALATED
    for minute in range(4, 9):
        h.tick(T0 + timedelta(minutes=minute))
    assert len(h.store.incidents()) == 1
    assert len(WorkQueue(h.store).intents()) == 1
    assert h.workspace.champion() == "2"
