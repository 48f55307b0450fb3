"""Engine creation: SQLite in WAL mode for one replica, PostgreSQL for several."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _enable_sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (CLI, HTTP API) work while the daemon writes; busy_timeout turns a brief
    # lock into a wait instead of an error; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# A replica stopped mid-transaction (SIGSTOP, a long pause, a lost network) must not keep row locks
# past its leases: the server ends a session idle inside a transaction, and a wait for a lock
# gives up instead of hanging. Every transaction of the daemon is short (no network call inside).
# A wait outlasts the idle bound with room for the stopped replica's last statement: a live replica
# waiting on a stopped one's lock gets it when that session is ended, rather than giving up first
# (a rollback it had claimed then stayed claimed, undone, until its claim ran out).
_PG_SESSION_SETTINGS = (
    "SET idle_in_transaction_session_timeout = '2s'",
    "SET lock_timeout = '5s'",
)


def _bound_postgres_waits(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for statement in _PG_SESSION_SETTINGS:
        cursor.execute(statement)
    cursor.close()
    dbapi_connection.commit()


def open_engine(url: str) -> Engine:
    """An engine for the watcher database (not for the SQL sources rules read)."""
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _enable_sqlite_wal)
        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    event.listen(engine, "connect", _bound_postgres_waits)
    return engine


def redact_url(url: str) -> str:
    """The URL with any password masked, fit for logs and errors."""
    return make_url(url).render_as_string(hide_password=True)
