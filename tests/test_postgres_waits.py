"""The daemon's PostgreSQL sessions: a replica stopped inside a transaction (SIGSTOP, a long
pause) keeps its row locks only until the server ends its idle session, and a live replica waiting
for one of those locks waits that out instead of giving up first."""

from __future__ import annotations

import contextlib
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.services import fresh_postgres_schema
from watcher.engine.tick import utc_now
from watcher.incidents.dispatch import CLAIM_LEASE, RollbackDispatcher
from watcher.store import migrate
from watcher.store.database import open_engine
from watcher.store.queue import WorkQueue, create_intent
from watcher.store.records import IntentPurpose
from watcher.store.repository import Store
from watcher.targets import TargetRegistry

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_write_waits_out_the_row_lock_of_a_replica_stopped_inside_a_transaction() -> None:
    """The stopped replica locked the row, its last statement was still running when it stopped
    (here a one-second statement), and it never sends another: its session is ended once idle
    past the bound, and the live replica's write, waiting all that time, then goes through.

    With a lock wait bounded as tightly as the idle session (2 s each), the waiter gave up first
    whenever it began waiting before the stopped session went idle: in the three-replica test, a
    rollback a live replica had claimed then failed its first write and stayed claimed, undone."""
    with fresh_postgres_schema() as schema:
        engine = open_engine(schema.url)
        try:
            with engine.begin() as setup:
                setup.execute(sa.text("CREATE TABLE claims (id integer PRIMARY KEY, fence integer NOT NULL)"))
                setup.execute(sa.text("INSERT INTO claims VALUES (1, 0)"))
            stopped = engine.connect()
            stopped.begin()
            stopped.execute(sa.text("UPDATE claims SET fence = fence + 1 WHERE id = 1"))
            last_statement = threading.Thread(
                target=lambda: stopped.execute(sa.text("SELECT pg_sleep(1)")), daemon=True
            )
            last_statement.start()
            with engine.begin() as live:
                written = live.execute(sa.text("UPDATE claims SET fence = fence + 1 WHERE id = 1")).rowcount
            last_statement.join(timeout=10)
            assert written == 1
            with engine.connect() as reader:
                # The stopped replica's update was rolled back with its session; the live one stands.
                assert reader.execute(sa.text("SELECT fence FROM claims WHERE id = 1")).scalar() == 1
            with contextlib.suppress(sa.exc.DBAPIError):
                stopped.close()  # its session was ended by the server
        finally:
            engine.dispose()


def test_a_rollback_whose_dispatch_met_a_database_error_is_due_again_soon(tmp_path: Path) -> None:
    with fresh_postgres_schema() as schema:
        engine = open_engine(schema.url)
        blocker = schema.engine.connect()  # a session of no watcher: its locks last until it ends
        try:
            migrate.upgrade(engine)
            store = Store(engine)
            now = utc_now()
            with store.transaction() as tx:
                create_intent(
                    tx.connection,
                    incident_id=None,
                    target="churn-prod",
                    purpose=IntentPurpose.MANUAL,
                    from_version="2",
                    to_version="1",
                    requested_by="U012ABCDEF",
                    reason="drill",
                    now=now,
                )
            dispatcher = RollbackDispatcher(store, TargetRegistry({}, tmp_path), "replica-a", timedelta(0))
            # The audit table is locked past the wait bound: the attempt's audit, written after the
            # claim and before any action, gives up with a database error.
            blocker.begin()
            blocker.execute(sa.text("LOCK TABLE audit_events IN EXCLUSIVE MODE"))
            with pytest.raises(sa.exc.OperationalError):
                dispatcher.run_due(now)
            blocker.rollback()
            # Nothing was done; the rollback is still wanted, and is due again within a minute.
            again = WorkQueue(store).claim_intent("replica-b", now + timedelta(minutes=1), CLAIM_LEASE)
            assert again is not None and again.target == "churn-prod"
        finally:
            blocker.close()
            engine.dispose()
