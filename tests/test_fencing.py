"""Fencing tokens: a holder that lost its claim (paused, partitioned, slow) writes nothing.

On SQLite and PostgreSQL: every claim raises a token, every write made under it is conditional on
the token, and a refused write leaves only an audit row saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import Harness
from tests.support.mlflow_registry import ActAfterIntentTag
from tests.support.workspace import make_workspace
from watcher.incidents.dispatch import RollbackDispatcher
from watcher.model import IncidentStatus, RollbackStatus
from watcher.store.fencing import STALE_WRITE_REFUSED, FencedStore, StaleClaimError, fenced_by
from watcher.store.group_leases import GroupClaim, GroupLeases
from watcher.store.queue import WorkQueue, enqueue_message
from watcher.store.records import MessageKind, MessageStatus, OutboxMessage
from watcher.targets import TargetRegistry

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=15)


@pytest.fixture
def harness(tmp_path: Path, registry_template: Path, database_url: str) -> Iterator[Harness]:
    h = Harness(make_workspace(tmp_path / "ws", registry_template, database_url))
    try:
        yield h
    finally:
        h.close()


def _fire(h: Harness) -> datetime:
    """Breach past `for`: an incident opens and a rollback 3 -> 2 is written as intent."""
    h.tick(T0, 0.2)
    h.tick(T0 + timedelta(minutes=2))
    return T0 + timedelta(minutes=2)


def _promote_version_4(h: Harness) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{h.workspace.registry}")
    client.create_model_version("fraud-detector", source=str(h.workspace.root))
    client.set_registered_model_alias("fraud-detector", "champion", "4")


def test_a_holder_paused_inside_the_adapter_writes_nothing_once_another_took_over(harness: Harness) -> None:
    h = harness
    now = _fire(h)
    queue = WorkQueue(h.store)
    stale = queue.claim_intent("replica-a", now, LEASE)
    assert stale is not None and stale.fence == 1
    later = now + timedelta(seconds=30)

    def meanwhile() -> None:
        # A is paused here. B takes over, rolls back 3 -> 2; then an operator promotes 4.
        assert queue.reclaim_orphans("replica-b", later) == 1
        fresh = queue.claim_intent("replica-b", later, LEASE)
        assert fresh is not None and fresh.fence == 2
        result = h.dispatcher.carry_out(fresh, later)
        assert result.status is RollbackStatus.SUCCEEDED
        assert h.workspace.champion() == "2"
        _promote_version_4(h)
        seen_after_b.update(incident=h.store.incidents()[0], messages=queue.pending_message_count())

    seen_after_b: dict[str, Any] = {}

    targets_a = TargetRegistry(h.config.targets, h.config.base_dir)
    adapter = targets_a.adapter("fraud-prod")
    adapter._client_instance = ActAfterIntentTag(adapter._client(), meanwhile)  # type: ignore[attr-defined]
    a = RollbackDispatcher(h.store, targets_a, "replica-a", h.config.safety.verify_after)

    result = a.carry_out(stale, later)  # A resumes inside its adapter call

    assert result.status is None and "no longer current" in result.detail
    assert h.workspace.champion() == "4"  # the operator's promotion stands
    [intent] = queue.intents()
    assert intent.status is RollbackStatus.SUCCEEDED and intent.fence == 2
    kinds = [event.kind for event in h.store.audit_events()]
    assert kinds.count("rollback_succeeded") == 1
    assert "rollback_refused" not in kinds
    refusals = [event for event in h.store.audit_events() if event.kind == STALE_WRITE_REFUSED]
    assert [(r.actor, r.detail["claim"], r.detail["fence"]) for r in refusals] == [("replica-a", "intent", 1)]
    assert h.store.incidents()[0] == seen_after_b["incident"]  # B's verifying, not reopened by A
    assert seen_after_b["incident"].status is IncidentStatus.VERIFYING
    assert queue.pending_message_count() == seen_after_b["messages"]  # no message of A's


def test_finishing_or_retrying_under_an_outdated_claim_changes_nothing(harness: Harness) -> None:
    now = _fire(harness)
    queue = WorkQueue(harness.store)
    first = queue.claim_intent("replica-a", now, LEASE)
    assert first is not None
    queue.reclaim_orphans("replica-b", now)
    second = queue.claim_intent("replica-b", now, LEASE)
    assert second is not None and second.fence == first.fence + 1
    with harness.store.transaction() as tx:
        assert not queue.confirm_intent(tx.connection, first)
        assert not queue.finish_intent(tx.connection, first, RollbackStatus.FAILED, "late", now)
        assert not queue.retry_intent_later(tx.connection, first, now, "late")
        assert queue.confirm_intent(tx.connection, second)
    [intent] = queue.intents()
    assert intent.status is RollbackStatus.RUNNING and intent.result_detail is None
    with harness.store.transaction() as tx:
        assert queue.finish_intent(tx.connection, second, RollbackStatus.SUCCEEDED, "done", now)
    assert queue.intents()[0].status is RollbackStatus.SUCCEEDED


def test_an_outbox_message_is_recorded_only_by_its_current_claimer(harness: Harness) -> None:
    queue = WorkQueue(harness.store)
    with harness.store.transaction() as tx:
        enqueue_message(
            tx.connection, incident_id=None, kind=MessageKind.NOTICE, payload={"text": "x"}, now=T0
        )
    first = queue.claim_message("replica-a", T0, timedelta(seconds=10))
    assert first is not None
    later = T0 + timedelta(seconds=11)  # A's claim ran out: B claims the message
    second = queue.claim_message("replica-b", later, timedelta(seconds=10))
    assert isinstance(second, OutboxMessage) and second.fence == first.fence + 1
    assert not queue.mark_message(first, MessageStatus.SENT, later)
    assert not queue.retry_message_later(first, later, "late")
    assert queue.pending_message_count() == 1
    assert queue.mark_message(second, MessageStatus.SENT, later)
    assert queue.pending_message_count() == 0


def test_a_lease_token_grows_with_each_new_holder_and_not_on_renewal(harness: Harness) -> None:
    queue = WorkQueue(harness.store)
    ttl = timedelta(seconds=3)
    assert queue.claim_lease("leader", "a", T0, ttl) == 1
    assert queue.claim_lease("leader", "a", T0 + timedelta(seconds=2), ttl) == 1  # renewed
    assert queue.claim_lease("leader", "b", T0 + timedelta(seconds=3), ttl) is None  # still a's
    assert queue.claim_lease("leader", "b", T0 + timedelta(seconds=6), ttl) == 2  # a's ran out
    assert not queue.confirm_lease("leader", "a", 1)
    assert queue.confirm_lease("leader", "b", 2)
    assert queue.claim_lease("leader", "a", T0 + timedelta(seconds=7), ttl) is None


def test_an_evaluation_under_a_group_claim_another_replica_took_writes_nothing(harness: Harness) -> None:
    a, b = GroupLeases(harness.store, "a"), GroupLeases(harness.store, "b")
    ttl = timedelta(seconds=3)
    first = a.rebalance(["g"], {}, T0, ttl)
    assert first.held == {"g": 1}
    # a stalls; its lease runs out; b (alone alive now) takes the group with a newer token
    taken = b.rebalance(["g"], {}, T0 + timedelta(seconds=10), ttl)
    assert taken.held == {"g": 2}
    fenced = FencedStore(harness.db)
    with (
        fenced_by(GroupClaim("g", "a", 1)) as stale,
        pytest.raises(StaleClaimError),
        fenced.transaction() as tx,
    ):
        tx.set_pause(True, "written by a stale holder", "a", T0)
    assert stale.refused
    assert not harness.store.pause_state().paused
    with fenced_by(GroupClaim("g", "b", 2)) as current, fenced.transaction() as tx:
        tx.set_pause(True, "written by the holder", "b", T0)
    assert not current.refused and harness.store.pause_state().paused
    resumed = a.rebalance(["g"], first.held, T0 + timedelta(seconds=11), ttl)
    assert resumed.lost == ("g",) and resumed.held == {}
