"""Durable work queues: rollback intents, outbox messages, leases and press de-duplication.

Work is claimed with a conditional UPDATE (Healthchecks' sendalerts habit): of several workers or
replicas racing for one row, exactly one sees rowcount 1. A claim carries a lease; a worker that
dies leaves a claim that expires, and the row becomes claimable again for reconciliation.

Every claim also raises the row's fencing token (`fence`), and every write made under the claim
is one conditional UPDATE on that token: a holder that was paused past its lease and resumes
finds its token outdated, and its write changes nothing (Kleppmann's fencing tokens).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from watcher.model import RollbackStatus
from watcher.store import tables as t
from watcher.store.records import IntentPurpose, MessageKind, MessageStatus, OutboxMessage, RollbackIntent

if TYPE_CHECKING:  # the repository's transaction writes through this module (store.queue_writes)
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
        fence=row["fence"],
        finished_at=row["finished_at"],
    )


def _message_from_row(row: RowMapping) -> OutboxMessage:
    return OutboxMessage(
        id=row["id"],
        incident_id=row["incident_id"],
        kind=MessageKind(row["kind"]),
        payload=dict(row["payload"] or {}),
        attempts=row["attempts"],
        created_at=row["created_at"],
        fence=row["fence"],
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
                        fence=c.fence + 1,
                    )
                ).rowcount
                if claimed:
                    row = connection.execute(select(t.rollback_intents).where(c.id == intent_id))
                    return _intent_from_row(row.mappings().one())
        return None

    def confirm_intent(self, connection: Connection, intent: RollbackIntent) -> bool:
        """True while `intent`'s claim is the current one; the row stays locked until the caller's
        transaction ends, so no newer claim can slip in between this check and its writes."""
        c = t.rollback_intents.c
        return bool(
            connection.execute(
                update(t.rollback_intents)
                .where(c.id == intent.id, c.fence == intent.fence, c.status == RollbackStatus.RUNNING.value)
                .values(fence=c.fence)
            ).rowcount
        )

    def finish_intent(
        self,
        connection: Connection,
        intent: RollbackIntent,
        status: RollbackStatus,
        detail: str,
        now: datetime,
    ) -> bool:
        """Record the outcome, only under the claim `intent` was read with; False: refused."""
        c = t.rollback_intents.c
        return bool(
            connection.execute(
                update(t.rollback_intents)
                .where(c.id == intent.id, c.fence == intent.fence, c.status == RollbackStatus.RUNNING.value)
                .values(status=status.value, result_detail=detail, finished_at=now, claimed_until=None)
            ).rowcount
        )

    def retry_intent_later(
        self, connection: Connection, intent: RollbackIntent, next_attempt_at: datetime, detail: str
    ) -> bool:
        """Put the intent back in the queue, only under the current claim; False: refused."""
        c = t.rollback_intents.c
        return bool(
            connection.execute(
                update(t.rollback_intents)
                .where(c.id == intent.id, c.fence == intent.fence, c.status == RollbackStatus.RUNNING.value)
                .values(
                    status=RollbackStatus.PENDING.value,
                    next_attempt_at=next_attempt_at,
                    result_detail=detail,
                    claimed_by=None,
                    claimed_until=None,
                )
            ).rowcount
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
                .values(
                    claimed_by=holder, claimed_until=now + lease, attempts=c.attempts + 1, fence=c.fence + 1
                )
            ).rowcount
            if not claimed:
                return None
            row = connection.execute(select(t.outbox_messages).where(c.id == head["id"]))
            return _message_from_row(row.mappings().one())

    def mark_message(
        self, message: OutboxMessage, status: MessageStatus, now: datetime, error: str | None = None
    ) -> bool:
        """Record a delivery, only under the claim `message` was read with; False: refused."""
        c = t.outbox_messages.c
        with self.store.engine.begin() as connection:
            return bool(
                connection.execute(
                    update(t.outbox_messages)
                    .where(c.id == message.id, c.fence == message.fence)
                    .values(status=status.value, sent_at=now, last_error=error, claimed_until=None)
                ).rowcount
            )

    def confirm_message(self, connection: Connection, message: OutboxMessage) -> bool:
        """True while `message`'s claim is current (the row locked until the transaction ends)."""
        c = t.outbox_messages.c
        statement = update(t.outbox_messages).where(c.id == message.id, c.fence == message.fence)
        return bool(connection.execute(statement.values(fence=c.fence)).rowcount)

    def retry_message_later(self, message: OutboxMessage, next_attempt_at: datetime, error: str) -> bool:
        c = t.outbox_messages.c
        with self.store.engine.begin() as connection:
            return bool(
                connection.execute(
                    update(t.outbox_messages)
                    .where(c.id == message.id, c.fence == message.fence)
                    .values(
                        next_attempt_at=next_attempt_at, last_error=error, claimed_by=None, claimed_until=None
                    )
                ).rowcount
            )

    def pending_message_count(self) -> int:
        c = t.outbox_messages.c
        with self.store.engine.connect() as connection:
            return len(connection.execute(select(c.id).where(c.status == MessageStatus.PENDING.value)).all())

    # --- leases ------------------------------------------------------------------------------------
    def claim_lease(self, name: str, holder: str, now: datetime, ttl: timedelta) -> int | None:
        """Take or renew the named lease: its fencing token while `holder` holds it, else None.

        A renewal keeps the token; a new holder (taking an expired lease) raises it."""
        c = t.leases.c
        with self.store.engine.begin() as connection:
            renewed = connection.execute(
                update(t.leases).where(c.name == name, c.holder == holder).values(expires_at=now + ttl)
            ).rowcount
            if not renewed:
                renewed = connection.execute(
                    update(t.leases)
                    .where(c.name == name, c.expires_at < now)
                    .values(holder=holder, expires_at=now + ttl, fence=c.fence + 1)
                ).rowcount
            if renewed:
                return int(connection.execute(select(c.fence).where(c.name == name)).scalar_one())
            if connection.execute(select(c.name).where(c.name == name)).first() is not None:
                return None
            try:
                with connection.begin_nested():
                    connection.execute(
                        insert(t.leases).values(name=name, holder=holder, expires_at=now + ttl, fence=1)
                    )
            except IntegrityError:
                return None
            return 1

    def acquire_lease(self, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
        """Take or renew the named lease; True while `holder` holds it."""
        return self.claim_lease(name, holder, now, ttl) is not None

    def confirm_lease(self, name: str, holder: str, fence: int, connection: Connection | None = None) -> bool:
        """True while `holder`'s claim with token `fence` is the current one: the conditional write
        every unit of work under the lease starts with (in the caller's transaction if given)."""
        c = t.leases.c
        statement = update(t.leases).where(c.name == name, c.holder == holder, c.fence == fence)
        if connection is not None:
            return bool(connection.execute(statement.values(fence=c.fence)).rowcount)
        with self.store.engine.begin() as own:
            return bool(own.execute(statement.values(fence=c.fence)).rowcount)

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
