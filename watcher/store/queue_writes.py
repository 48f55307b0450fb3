"""The work queues' writes as methods of the transaction: intents, outbox messages and presses.

`QueueWrites` is mixed into `Tx`, so the engine, the dispatcher and the Slack actions write
through the store's one door (`tx.create_intent(...)`, `tx.enqueue_message(...)`,
`tx.record_press(...)`); the statements themselves live with the queues in store.queue.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from watcher.store import queue
from watcher.store.records import IntentPurpose, MessageKind, RollbackIntent


class QueueWrites:
    connection: Connection

    def create_intent(
        self,
        *,
        incident_id: int | None,
        target: str,
        purpose: IntentPurpose,
        from_version: str,
        to_version: str,
        requested_by: str,
        reason: str,
        now: datetime,
    ) -> RollbackIntent:
        """A rollback written as intent before it is made (the dispatcher carries it out)."""
        return queue.create_intent(
            self.connection,
            incident_id=incident_id,
            target=target,
            purpose=purpose,
            from_version=from_version,
            to_version=to_version,
            requested_by=requested_by,
            reason=reason,
            now=now,
        )

    def enqueue_message(
        self, *, incident_id: int | None, kind: MessageKind, payload: dict[str, Any], now: datetime
    ) -> None:
        """A Slack message, delivered by the outbox once this transaction commits."""
        queue.enqueue_message(self.connection, incident_id=incident_id, kind=kind, payload=payload, now=now)

    def record_press(
        self,
        *,
        dedup_key: str,
        incident_id: int | None,
        action: str,
        user_id: str,
        result: str,
        now: datetime,
    ) -> bool:
        """True the first time a press is seen; False for a redelivery."""
        return queue.record_press(
            self.connection,
            dedup_key=dedup_key,
            incident_id=incident_id,
            action=action,
            user_id=user_id,
            result=result,
            now=now,
        )
