"""Durable work queues: rollback intents, outbox messages, leases and press de-duplication.

Work is claimed with a conditional UPDATE (Healthchecks' sendalerts habit): of several workers or
replicas racing for one row, exactly one sees rowcount 1. A claim carries a lease; a worker that
dies leaves a claim that expires, and the row becomes claimable again for reconciliation.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from watcher.model import RollbackStatus
from watcher.store import tables as t
from watcher.store.records import IntentPurpose, MessageKind, MessageStatus, OutboxMessage, RollbackIntent
from watcher.store.repository import Store

ACTIVE_INTENT_STATUSES = (RollbackStatus.PENDING.value, RollbackStatus.RUNNING.value)


def _intent_from_row(row: RowMapping) -> RollbackIntent:
    return RollbackIntent(
        id=row["id"],
        key=row["key"],
        incident_id=row["incident_id"],
        target=row["target"],
        purpose=IntentPurpose(row["purpose"]),
        from_version=row["from_version"],
        to_version=row["to_version"],
        requested_by=row["requested_by"],
        reason=row["reason"],
        status=RollbackStatus(row["status"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        result_detail=row["result_detail"],
    )


def _message_from_row(row: RowMapping) -> OutboxMessage:
    return OutboxMessage(
        id=row["id"],
        incident_id=row["incident_id"],
        kind=MessageKind(row["kind"]),
        payload=dict(row["payload"] or {}),
        attempts=row["attempts"],
        created_at=row["created_at"],
    )


# --- writes inside a caller's transaction ------------------------------------------------------
def create_intent(
    connection: Connection,
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
    key = uuid.uuid4().hex
    result = connection.execute(
        insert(t.rollback_intents).values(
            key=key,
            incident_id=incident_id,
            target=target,
            purpose=purpose.value,
            from_version=from_version,
            to_version=to_version,
            requested_by=requested_by,
            reason=reason,
            status=RollbackStatus.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    intent_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    row = connection.execute(select(t.rollback_intents).where(t.rollback_intents.c.id == intent_id))
    return _intent_from_row(row.mappings().one())


def enqueue_message(
    connection: Connection,
    *,
    incident_id: int | None,
    kind: MessageKind,
    payload: dict[str, Any],
    now: datetime,
) -> None:
    connection.execute(
        insert(t.outbox_messages).values(
            incident_id=incident_id,
            kind=kind.value,
            payload=payload,
            status=MessageStatus.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


def record_press(
    connection: Connection,
    *,
    dedup_key: str,
    incident_id: int | None,
    action: str,
    user_id: str,
    result: str,
    now: datetime,
) -> bool:
    """True the first time a press is seen; False for a redelivery (nothing else to do then)."""
    try:
        with connection.begin_nested():
            connection.execute(
                insert(t.slack_presses).values(
                    dedup_key=dedup_key,
                    received_at=now,
                    incident_id=incident_id,
                    action=action,
                    user_id=user_id,
                    result=result,
                )
            )
    except IntegrityError:
        return False
    return True


class WorkQueue:
    """Claiming and finishing queued work, each step its own short transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # --- rollback intents ----------------------------------------------------------------------
    def claim_intent(self, holder: str, now: datetime, lease: timedelta) -> RollbackIntent | None:
        """The oldest due intent, pending or with an expired claim (its worker died)."""
        c = t.rollback_intents.c
        due = or_(
            and_(c.status == RollbackStatus.PENDING.value, c.next_attempt_at <= now),
            and_(c.status == RollbackStatus.RUNNING.value, c.claimed_until < now),
        )
        with self.store.engine.begin() as connection:
            candidates = connection.execute(
                select(c.id, c.status, c.claimed_until).where(due).order_by(c.id).limit(5)
            ).all()
            for intent_id, status, claimed_until in candidates:
                claimed = connection.execute(
                    update(t.rollback_intents)
                    .where(c.id == intent_id, c.status == status)
                    .where(
                        c.claimed_until.is_(None)
                        if claimed_until is None
                        else c.claimed_until == claimed_until
                    )
                    .values(
                        status=RollbackStatus.RUNNING.value,
                        claimed_by=holder,
                        claimed_until=now + lease,
                        attempts=c.attempts + 1,
                    )
                ).rowcount
                if claimed:
                    row = connection.execute(select(t.rollback_intents).where(c.id == intent_id))
                    return _intent_from_row(row.mappings().one())
        return None

    def finish_intent(
        self, connection: Connection, intent_id: int, status: RollbackStatus, detail: str, now: datetime
    ) -> None:
        connection.execute(
            update(t.rollback_intents)
            .where(t.rollback_intents.c.id == intent_id)
            .values(status=status.value, result_detail=detail, finished_at=now, claimed_until=None)
        )

    def retry_intent_later(self, intent_id: int, next_attempt_at: datetime, detail: str) -> None:
        with self.store.engine.begin() as connection:
            connection.execute(
                update(t.rollback_intents)
                .where(t.rollback_intents.c.id == intent_id)
                .values(
                    status=RollbackStatus.PENDING.value,
                    next_attempt_at=next_attempt_at,
                    result_detail=detail,
                    claimed_by=None,
                    claimed_until=None,
                )
            )

    def reclaim_orphans(self, holder: str, now: datetime) -> int:
        """Make intents claimed by another (dead or deposed) replica claimable now.

        Safe because every adapter call is idempotent per intent key and refuses when the
        version to replace is no longer live; waiting out a long claim would delay a rollback.
        """
        c = t.rollback_intents.c
        with self.store.engine.begin() as connection:
            return connection.execute(
                update(t.rollback_intents)
                .where(c.status == RollbackStatus.RUNNING.value, c.claimed_by != holder)
                .values(claimed_until=now - timedelta(seconds=1))
            ).rowcount

    def active_intent_for_target(self, target: str) -> RollbackIntent | None:
        c = t.rollback_intents.c
        with self.store.engine.connect() as connection:
            row = (
                connection.execute(
                    select(t.rollback_intents)
                    .where(c.target == target, c.status.in_(ACTIVE_INTENT_STATUSES))
                    .order_by(c.id)
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return _intent_from_row(row) if row else None

    def intents(self, *, incident_id: int | None = None) -> list[RollbackIntent]:
        statement = select(t.rollback_intents).order_by(t.rollback_intents.c.id)
        if incident_id is not None:
            statement = statement.where(t.rollback_intents.c.incident_id == incident_id)
        with self.store.engine.connect() as connection:
            return [_intent_from_row(row) for row in connection.execute(statement).mappings()]

    def rollback_times(self, target: str, since: datetime) -> list[datetime]:
        """When rollbacks of `target` were asked for, counting those done or under way."""
        c = t.rollback_intents.c
        statement = select(c.created_at).where(
            c.target == target,
            c.created_at >= since,
            c.status.in_([*ACTIVE_INTENT_STATUSES, RollbackStatus.SUCCEEDED.value]),
        )
        with self.store.engine.connect() as connection:
            return [row[0] for row in connection.execute(statement)]

    # --- outbox ----------------------------------------------------------------------------------
    def claim_message(self, holder: str, now: datetime, lease: timedelta) -> OutboxMessage | None:
        """The oldest undelivered message, if it is due: strict FIFO keeps Slack in order."""
        c = t.outbox_messages.c
        with self.store.engine.begin() as connection:
            head = (
                connection.execute(
                    select(t.outbox_messages)
                    .where(c.status == MessageStatus.PENDING.value)
                    .order_by(c.id)
                    .limit(1)
                )
                .mappings()
                .first()
            )
            if head is None or head["next_attempt_at"] > now:
                return None
            if head["claimed_until"] is not None and head["claimed_until"] >= now:
                return None
            claimed = connection.execute(
                update(t.outbox_messages)
                .where(c.id == head["id"], c.status == MessageStatus.PENDING.value)
                .where(
                    c.claimed_until.is_(None)
                    if head["claimed_until"] is None
                    else c.claimed_until == head["claimed_until"]
                )
                .values(claimed_by=holder, claimed_until=now + lease, attempts=c.attempts + 1)
            ).rowcount
            if not claimed:
                return None
            row = connection.execute(select(t.outbox_messages).where(c.id == head["id"]))
            return _message_from_row(row.mappings().one())

    def mark_message(
        self, message_id: int, status: MessageStatus, now: datetime, error: str | None = None
    ) -> None:
        with self.store.engine.begin() as connection:
            connection.execute(
                update(t.outbox_messages)
                .where(t.outbox_messages.c.id == message_id)
                .values(status=status.value, sent_at=now, last_error=error, claimed_until=None)
            )

    def retry_message_later(self, message_id: int, next_attempt_at: datetime, error: str) -> None:
        with self.store.engine.begin() as connection:
            connection.execute(
                update(t.outbox_messages)
                .where(t.outbox_messages.c.id == message_id)
                .values(
                    next_attempt_at=next_attempt_at, last_error=error, claimed_by=None, claimed_until=None
                )
            )

    def pending_message_count(self) -> int:
        c = t.outbox_messages.c
        with self.store.engine.connect() as connection:
            return len(connection.execute(select(c.id).where(c.status == MessageStatus.PENDING.value)).all())

    # --- leases ------------------------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
        """Take or renew the named lease; True while `holder` holds it."""
        c = t.leases.c
        with self.store.engine.begin() as connection:
            renewed = connection.execute(
                update(t.leases)
                .where(c.name == name, or_(c.holder == holder, c.expires_at < now))
                .values(holder=holder, expires_at=now + ttl)
            ).rowcount
            if renewed:
                return True
            exists = connection.execute(select(c.name).where(c.name == name)).first()
            if exists:
                return False
            try:
                with connection.begin_nested():
                    connection.execute(
                        insert(t.leases).values(name=name, holder=holder, expires_at=now + ttl)
                    )
            except IntegrityError:
                return False
            return True

    def release_lease(self, name: str, holder: str) -> None:
        with self.store.engine.begin() as connection:
            connection.execute(
                update(t.leases)
                .where(t.leases.c.name == name, t.leases.c.holder == holder)
                .values(expires_at=datetime(1970, 1, 1, tzinfo=UTC))
            )

    def lease_holder(self, name: str, now: datetime) -> str | None:
        c = t.leases.c
        with self.store.engine.connect() as connection:
            row = connection.execute(select(c.holder, c.expires_at).where(c.name == name)).first()
        if row is None or row[1] < now:
            return None
        return str(row[0])
