"""Operator actions shared by the CLI and Slack: manual rollback, undo, pause and resume.

Each writes its audit event in the same transaction as the change; a rollback is written as an
intent first and carried out by the dispatcher (at once, here, for the CLI).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from watcher.decisions.known_good import choose_rollback_version
from watcher.incidents.dispatch import CLAIM_LEASE, RollbackDispatcher
from watcher.model import RollbackStatus
from watcher.store.queue import WorkQueue
from watcher.store.records import AuditEvent, IntentPurpose
from watcher.store.repository import Store
from watcher.targets import TargetRegistry


@dataclass(frozen=True)
class ManualRollbackResult:
    status: RollbackStatus | None
    from_version: str | None
    to_version: str | None
    detail: str


def manual_rollback(
    store: Store,
    targets: TargetRegistry,
    dispatcher: RollbackDispatcher,
    *,
    target: str,
    to_version: str | None,
    reason: str,
    actor: str,
    stable_after: timedelta,
    now: datetime,
) -> ManualRollbackResult:
    live = targets.live_version(target)
    if live is None:
        return ManualRollbackResult(None, None, to_version, f"cannot read the live version of {target}")
    if to_version is None:
        choice = choose_rollback_version(
            live=live,
            sightings=store.sightings(target),
            adapter_previous=targets.previous_version(target),
            stable_after=stable_after,
            now=now,
        )
        if choice.version is None:
            return ManualRollbackResult(None, live, None, "no known-good or previous version; give --to")
        to_version = choice.version
    if to_version == live:
        return ManualRollbackResult(None, live, to_version, f"{target} already serves {live}")
    with store.transaction() as tx:
        intent = tx.create_intent(
            incident_id=None,
            target=target,
            purpose=IntentPurpose.MANUAL,
            from_version=live,
            to_version=to_version,
            requested_by=actor,
            reason=reason,
            now=now,
        )
        tx.append_audit(
            AuditEvent(
                at=now,
                actor=actor,
                kind="manual_rollback_requested",
                target=target,
                from_version=live,
                to_version=to_version,
                detail={"reason": reason, "intent": intent.key},
            )
        )
    claimed = WorkQueue(store).claim_intent(dispatcher.holder, now, CLAIM_LEASE)
    if claimed is None or claimed.id != intent.id:
        return ManualRollbackResult(None, live, to_version, "queued: a running watcher will carry it out")
    result = dispatcher.carry_out(claimed, now)
    return ManualRollbackResult(result.status, live, to_version, result.detail)


def set_paused(store: Store, *, paused: bool, reason: str | None, actor: str, now: datetime) -> None:
    with store.transaction() as tx:
        tx.append_audit(
            AuditEvent(
                at=now,
                actor=actor,
                kind="paused" if paused else "resumed",
                detail={"reason": reason},
            )
        )
        tx.set_pause(paused, reason, actor, now)
