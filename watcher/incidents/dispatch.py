"""The rollback worker: claims written intents and carries them out through the target's adapter.

An intent is claimed by a conditional UPDATE, audited before the adapter is called (no audit, no
action), and checked against the target first: if the target already serves the version asked
for, the intent is recorded as done (a crash after the adapter succeeded is reconciled, never
repeated); if it serves neither, someone moved it on and the rollback is reconciled as refused,
never done. The adapter itself re-checks the live version as close to its write as the target
allows. Retryable failures come back later on the one retry policy; permanent ones escalate.

Every write made under the claim (the attempt's audit, the outcome, the incident, the outbox) is
conditional on the claim's fencing token: a worker paused past its claim while another replica
took the intent over finds its writes refused, audited as such, and dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError

from watcher.failpoints import crash_if_armed
from watcher.incidents import lifecycle
from watcher.incidents.flow import view_of
from watcher.incidents.lifecycle import AuditKind, Event
from watcher.model import RollbackStatus
from watcher.remediations.base import AdapterFailure, LiveVersion, RollbackResult
from watcher.retry import DEFAULT_RETRY_POLICY, RetryPolicy
from watcher.store.fencing import ClaimKind, Refusal, refusal_event
from watcher.store.queue import WorkQueue
from watcher.store.records import AuditEvent, IntentPurpose, MessageKind, RollbackIntent
from watcher.store.repository import Store, Tx

if TYPE_CHECKING:
    from watcher.metrics import Metrics
    from watcher.targets import TargetRegistry

log = logging.getLogger(__name__)

# A claim outlives the slowest adapter call we allow (a Kubernetes rollout waits up to minutes);
# a replica that takes over reclaims orphaned claims at once instead of waiting for this.
CLAIM_LEASE = timedelta(minutes=15)
# When a rollback stopped by a database error is due again, once the retry policy has run out.
_DATABASE_RETRY = timedelta(minutes=1)


@dataclass(frozen=True)
class DispatchResult:
    intent: RollbackIntent
    status: RollbackStatus | None  # None: will be retried later
    detail: str


class RollbackDispatcher:
    def __init__(
        self,
        store: Store,
        targets: TargetRegistry,
        holder: str,
        verify_after: timedelta,
        metrics: Metrics | None = None,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    ) -> None:
        self.store = store
        self.queue = WorkQueue(store)
        self.targets = targets
        self.holder = holder
        self.verify_after = verify_after
        self.metrics = metrics
        self.retry_policy = retry_policy

    def run_due(self, now: datetime, limit: int = 20) -> list[DispatchResult]:
        results = []
        for _ in range(limit):
            intent = self.queue.claim_intent(self.holder, now, CLAIM_LEASE)
            if intent is None:
                break
            try:
                results.append(self.carry_out(intent, now))
            except DBAPIError:
                self._give_back(intent, now)
                raise
        return results

    def _give_back(self, intent: RollbackIntent, now: datetime) -> None:
        """A database error stopped the dispatch: the rollback is still wanted, so it goes back in the
        queue, due again soon (under this claim only), instead of staying claimed for CLAIM_LEASE.
        Safe whatever was done before the error: a retry first reads the live version, and one the
        adapter already moved is recorded as done, not done twice. If the database cannot take even
        this, the claim's lease still runs out."""
        next_at = self.retry_policy.next_attempt_at(intent.attempts, now) or now + _DATABASE_RETRY
        try:
            with self.store.transaction() as tx:
                self.queue.retry_intent_later(
                    tx.connection, intent, next_at, "database error during dispatch"
                )
        except DBAPIError:
            log.warning("could not put rollback %s back in the queue", intent.key, exc_info=True)

    def carry_out(self, intent: RollbackIntent, now: datetime) -> DispatchResult:
        if not self._audit(intent, "rollback_attempt", now, attempt=intent.attempts):
            return self._refused(intent, "rollback_attempt")
        try:
            adapter = self.targets.adapter(intent.target)
        except LookupError as error:
            return self._finish(intent, RollbackStatus.FAILED, f"unknown target: {error}", now)
        settled = self._settled_by_live_version(intent, adapter.live_version(), now)
        if settled is not None:
            return settled
        preflight = adapter.preflight(intent.to_version)
        if not preflight.ok:
            return self._finish(
                intent, RollbackStatus.FAILED, "preflight: " + "; ".join(preflight.problems), now
            )
        crash_if_armed("before_adapter")
        try:
            outcome = adapter.rollback(
                intent_key=intent.key, from_version=intent.from_version, to_version=intent.to_version
            )
        except Exception as error:  # a plug-in that raises is treated as a retryable failure
            log.exception("adapter for %s raised during rollback", intent.target)
            return self._retry_or_fail(intent, f"adapter raised {type(error).__name__}", now)
        crash_if_armed("after_adapter")
        if outcome.result in (RollbackResult.DONE, RollbackResult.ALREADY_DONE):
            return self._finish(
                intent,
                RollbackStatus.SUCCEEDED,
                outcome.detail or outcome.result.value,
                now,
                record=outcome.record,
            )
        if outcome.result is RollbackResult.VERSION_CHANGED:
            return self._finish(intent, RollbackStatus.REFUSED, outcome.detail or "version changed", now)
        failure = outcome.failure
        message = failure.message if failure else (outcome.detail or "failed")
        if failure is not None and failure.retryable:
            return self._retry_or_fail(intent, message, now)
        return self._finish(intent, RollbackStatus.FAILED, message, now, record=outcome.record)

    def _settled_by_live_version(
        self, intent: RollbackIntent, live: LiveVersion | AdapterFailure, now: datetime
    ) -> DispatchResult | None:
        """What the live version decides before any change: already done (a crash after the
        adapter succeeded), unknown for now, or moved on by someone else (reconciled, never done)."""
        if isinstance(live, LiveVersion) and live.version == intent.to_version:
            detail = "the target already serves the version asked for"
            if intent.attempts > 1:
                detail = "reconciled after a restart: " + detail
            return self._finish(intent, RollbackStatus.SUCCEEDED, detail, now)
        if isinstance(live, AdapterFailure) and live.retryable:
            return self._retry_or_fail(intent, f"live version unknown: {live.message}", now)
        if isinstance(live, LiveVersion) and live.version != intent.from_version:
            detail = (
                f"{intent.target} serves {live.version}, no longer {intent.from_version}: "
                "reconciled, nothing done"
            )
            return self._finish(
                intent, RollbackStatus.REFUSED, detail, now, record={"live_before": live.version}
            )
        return None

    def _retry_or_fail(self, intent: RollbackIntent, detail: str, now: datetime) -> DispatchResult:
        next_at = self.retry_policy.next_attempt_at(intent.attempts, now)
        if next_at is None:
            return self._finish(
                intent, RollbackStatus.FAILED, f"gave up after {intent.attempts} attempts: {detail}", now
            )
        with self.store.transaction() as tx:
            if not self.queue.retry_intent_later(tx.connection, intent, next_at, detail):
                tx.append_audit(self._refusal_event(intent, "rollback_retry_scheduled", now))
                refused = True
            else:
                refused = False
                tx.append_audit(
                    self._event(
                        intent,
                        "rollback_retry_scheduled",
                        now,
                        error=detail,
                        next_attempt_at=next_at.isoformat(),
                    )
                )
        if refused:
            return self._refused(intent, "rollback_retry_scheduled")
        return DispatchResult(intent, None, detail)

    def _finish(
        self,
        intent: RollbackIntent,
        status: RollbackStatus,
        detail: str,
        now: datetime,
        record: dict[str, str] | None = None,
    ) -> DispatchResult:
        kind = {
            RollbackStatus.SUCCEEDED: AuditKind.ROLLBACK_SUCCEEDED
            if intent.purpose is not IntentPurpose.UNDO
            else AuditKind.UNDO_SUCCEEDED,
            RollbackStatus.REFUSED: AuditKind.ROLLBACK_REFUSED,
            RollbackStatus.FAILED: AuditKind.ROLLBACK_FAILED,
        }[status].value
        with self.store.transaction() as tx:
            if not self.queue.finish_intent(tx.connection, intent, status, detail, now):
                tx.append_audit(self._refusal_event(intent, kind, now))
                stale = True
            else:
                stale = False
                self._record_outcome(tx, intent, status, kind, detail, now, record)
        if stale:
            return self._refused(intent, kind)
        if self.metrics is not None:
            self.metrics.rollback(intent.target, status.value)
        log.info(
            "rollback %s of %s: %s (%s)",
            intent.key,
            intent.target,
            status.value,
            detail,
            extra={
                "event": kind,
                "target": intent.target,
                "from_version": intent.from_version,
                "to_version": intent.to_version,
                "incident": intent.incident_id,
            },
        )
        return DispatchResult(intent, status, detail)

    def _record_outcome(
        self,
        tx: Tx,
        intent: RollbackIntent,
        status: RollbackStatus,
        kind: str,
        detail: str,
        now: datetime,
        record: dict[str, str] | None,
    ) -> None:
        """The outcome's writes, made once the claim was confirmed in the same transaction."""
        tx.append_audit(self._event(intent, kind, now, detail=detail, **(record or {})))
        if status is RollbackStatus.SUCCEEDED:
            tx.record_live_version(intent.target, intent.to_version, now)
        if intent.incident_id is None:
            return
        text = self._update_incident(tx, intent, status, detail, now)
        tx.enqueue_message(incident_id=intent.incident_id, kind=MessageKind.INCIDENT, payload={}, now=now)
        tx.enqueue_message(
            incident_id=intent.incident_id,
            kind=MessageKind.THREAD,
            payload={"text": text},
            now=now,
        )

    def _refused(self, intent: RollbackIntent, write: str) -> DispatchResult:
        """A write of a stale claim was refused: another replica holds the intent now."""
        if self.metrics is not None:
            self.metrics.fenced_write_refused(ClaimKind.INTENT.value)
        log.warning(
            "refused %s of rollback %s: the claim (token %d) is no longer current",
            write,
            intent.key,
            intent.fence,
            extra={"event": "stale_write_refused", "target": intent.target, "incident": intent.incident_id},
        )
        return DispatchResult(intent, None, f"refused: the claim on intent {intent.key} is no longer current")

    def _refusal_event(self, intent: RollbackIntent, write: str, now: datetime) -> AuditEvent:
        refusal = Refusal(ClaimKind.INTENT, intent.key, self.holder, intent.fence, write)
        return refusal_event(
            refusal,
            now,
            incident_id=intent.incident_id,
            target=intent.target,
            from_version=intent.from_version,
            to_version=intent.to_version,
        )

    def _update_incident(
        self, tx: Tx, intent: RollbackIntent, status: RollbackStatus, detail: str, now: datetime
    ) -> str:
        """What the outcome does to the intent's incident, as the incident lifecycle says."""
        assert intent.incident_id is not None
        incident = tx.incident(intent.incident_id)
        event = _outcome_event(intent.purpose, status)
        if incident is None or event is None:
            return f"Undo of the rollback {status.value}: {detail}"
        step = lifecycle.advance(view_of(incident), event)
        values: dict[str, Any] = {} if step.status is None else {"status": step.status}
        if event is Event.UNDO_SUCCEEDED:
            who = intent.requested_by
            tx.update_incident(
                incident.id,
                now,
                undone_by=who,
                verify_due_at=None,
                decision_reason="undone",
                decision_detail=f"rollback undone by {who}",
                **values,
            )
            return f"Rollback undone by {who}: {intent.target} is back on {intent.to_version}."
        if event is Event.ROLLBACK_SUCCEEDED:
            tx.update_incident(
                incident.id,
                now,
                rollback_status=RollbackStatus.SUCCEEDED,
                rollback_from=intent.from_version,
                rollback_to=intent.to_version,
                verify_due_at=now + self.verify_after,
                verify_attempts=0,
                **values,
            )
            tx.reset_finding_verdicts(incident.id)  # every rule is judged again on the restored version
            return (
                f"Rolled back {intent.target} from {intent.from_version} to {intent.to_version}; "
                f"verifying once {int(self.verify_after.total_seconds())}s have passed and each rule's "
                "window holds only the restored version."
            )
        tx.update_incident(incident.id, now, rollback_status=status, **values)
        return f"Rollback {status.value}: {detail}. Escalated: a human must decide."

    def _event(self, intent: RollbackIntent, kind: str, now: datetime, **detail: Any) -> AuditEvent:
        return AuditEvent(
            at=now,
            actor=self.holder_actor(intent),
            kind=kind,
            incident_id=intent.incident_id,
            target=intent.target,
            from_version=intent.from_version,
            to_version=intent.to_version,
            detail={"intent": intent.key, "purpose": intent.purpose.value, **detail},
        )

    def _audit(self, intent: RollbackIntent, kind: str, now: datetime, **detail: Any) -> bool:
        """Audit a step under the intent's claim; False (and the refusal audited) when it is stale."""
        with self.store.transaction() as tx:
            if not self.queue.confirm_intent(tx.connection, intent):
                tx.append_audit(self._refusal_event(intent, kind, now))
                return False
            tx.append_audit(self._event(intent, kind, now, **detail))
            return True

    @staticmethod
    def holder_actor(intent: RollbackIntent) -> str:
        # The person who asked stays the actor of what follows from their request.
        return intent.requested_by


def _outcome_event(purpose: IntentPurpose, status: RollbackStatus) -> Event | None:
    """The lifecycle event an intent's outcome is; None: it changes nothing (an undo that failed
    or was refused leaves the incident as it was)."""
    if purpose is IntentPurpose.UNDO:
        return Event.UNDO_SUCCEEDED if status is RollbackStatus.SUCCEEDED else None
    if status is RollbackStatus.SUCCEEDED:
        return Event.ROLLBACK_SUCCEEDED
    return Event.ROLLBACK_FAILED
