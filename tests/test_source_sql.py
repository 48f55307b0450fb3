"""SqlSource against a real SQLite file and the real PostgreSQL, with the same cases on both."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.services import PostgresSchema, fresh_postgres_schema
from watcher.model import ErrorKind, Measurement, NoData, SourceError, Value
from watcher.ruletest.prometheus import free_port
from watcher.sources.sql import SqlSource, dispose_engines, engine_for, query_problems, sqlite_timestamp

pytestmark = pytest.mark.integration

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
TIMEOUT = timedelta(seconds=5)
# (minutes before AT, correct?): the window [AT - 1h, AT) holds the rows at -60, -50 and -10.
ROWS = [(90, 0), (60, 1), (50, 1), (10, 0), (0, 0)]
IN_WINDOW = "ts >= :window_start AND ts < :window_end"
ACCURACY = f"SELECT avg(correct) AS value, count(*) AS samples FROM predictions WHERE {IN_WINDOW}"


@dataclass(frozen=True)
class Database:
    backend: str
    url: str

    def contents(self) -> tuple[int, float]:
        """Row count and the largest `correct`, read outside the code under test."""
        engine = sa.create_engine(self.url, poolclass=sa.NullPool)
        try:
            with engine.connect() as connection:
                row = connection.execute(sa.text("SELECT count(*), max(correct) FROM predictions")).one()
                return int(row[0]), float(row[1])
        finally:
            engine.dispose()


def sqlite_database(directory: Path) -> Database:
    path = directory / "analytics.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE predictions (ts TEXT, correct REAL, note TEXT)")
        connection.executemany(
            "INSERT INTO predictions VALUES (?, ?, ?)",
            [(sqlite_timestamp(AT - timedelta(minutes=m)), c, "it's") for m, c in ROWS],
        )
    connection.close()
    return Database("sqlite", f"sqlite:///{path}")


def postgres_database(schema: PostgresSchema) -> Database:
    with schema.engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE predictions (ts timestamptz, correct real, note text)"))
        connection.execute(
            sa.text("INSERT INTO predictions VALUES (:ts, :correct, 'it''s')"),
            [{"ts": AT - timedelta(minutes=m), "correct": c} for m, c in ROWS],
        )
    return Database("postgresql", schema.url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield sqlite_database(tmp_path)
        dispose_engines()
        return
    with fresh_postgres_schema() as schema:
        yield postgres_database(schema)
        # Engines are cached per URL and each schema's URL is used once: let go before the drop.
        dispose_engines()


def measure(
    database: Database, query: str, min_samples: float | None = None, timeout: timedelta = TIMEOUT
) -> Measurement:
    return SqlSource(database.url, query, HOUR, timeout, min_samples).measure(AT)


def test_value_and_samples_are_read_over_the_window(database: Database) -> None:
    result = measure(database, ACCURACY)

    assert isinstance(result, Value)
    assert result.value == pytest.approx(2 / 3)
    assert result.samples == 3
    assert result.evidence["window_start"] == (AT - HOUR).isoformat()
    assert result.evidence["window_end"] == AT.isoformat()


def test_columns_are_read_by_position_without_names(database: Database) -> None:
    result = measure(database, f"SELECT count(*), 42 FROM predictions WHERE {IN_WINDOW}")

    assert isinstance(result, Value)
    assert (result.value, result.samples) == (3, 42)


def test_window_start_is_bound_as_a_parameter_never_pasted(database: Database) -> None:
    epoch = {
        "sqlite": "(julianday(:window_start) - 2440587.5) * 86400.0",
        "postgresql": "extract(epoch FROM CAST(:window_start AS timestamptz))",
    }[database.backend]
    sent: list[tuple[str, Any]] = []
    engine = engine_for(database.url, TIMEOUT)

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        sent.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        result = measure(
            database, f"SELECT {epoch} AS value, 1 AS samples FROM predictions WHERE note = 'it''s' LIMIT 1"
        )
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)

    assert isinstance(result, Value)
    assert result.value == pytest.approx((AT - HOUR).timestamp())
    statement, parameters = sent[-1]
    assert "2025" not in statement
    bound = parameters["window_start"] if isinstance(parameters, dict) else parameters[0]
    expected = sqlite_timestamp(AT - HOUR) if database.backend == "sqlite" else AT - HOUR
    assert bound == expected


def test_postgres_timestamp_without_time_zone_is_read_as_utc() -> None:
    """Naive UTC timestamps compare right even when the session's TimeZone is not UTC."""
    with fresh_postgres_schema() as schema:
        with schema.engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE events (ts timestamp without time zone)"))
            connection.execute(
                sa.text("INSERT INTO events VALUES (:ts)"),
                [{"ts": (AT - timedelta(minutes=m)).replace(tzinfo=None)} for m, _ in ROWS],
            )
        tokyo = sa.make_url(schema.url).update_query_dict(
            {"options": f"-csearch_path={schema.name} -cTimeZone=Asia/Tokyo"}
        )
        url = tokyo.render_as_string(hide_password=False)

        result = SqlSource(
            url, f"SELECT count(*) AS value FROM events WHERE {IN_WINDOW}", HOUR, TIMEOUT
        ).measure(AT)
        dispose_engines()

    assert isinstance(result, Value)
    assert result.value == 3


def test_only_named_parameters_are_bound(database: Database) -> None:
    result = measure(database, "SELECT count(*) AS value FROM predictions WHERE ts < :window_end")

    assert isinstance(result, Value)
    assert result.value == 4


def test_null_is_no_data(database: Database) -> None:
    result = measure(database, f"SELECT avg(correct) AS value FROM predictions WHERE {IN_WINDOW} AND 1 = 0")

    assert isinstance(result, NoData)
    assert "NULL" in result.reason


def test_zero_rows_is_no_data(database: Database) -> None:
    result = measure(database, "SELECT correct AS value FROM predictions WHERE 1 = 0")

    assert isinstance(result, NoData)


def test_two_rows_are_a_bad_answer(database: Database) -> None:
    result = measure(database, f"SELECT correct AS value FROM predictions WHERE {IN_WINDOW}")

    assert isinstance(result, SourceError)
    assert result.kind is ErrorKind.BAD_ANSWER
    assert not result.retryable


def test_too_few_samples_is_no_data(database: Database) -> None:
    result = measure(database, ACCURACY, min_samples=500)

    assert isinstance(result, NoData)
    assert result.reason == "only 3 samples, at least 500 needed"


def test_min_samples_without_a_samples_column_is_a_bad_query(database: Database) -> None:
    result = measure(database, "SELECT 1 AS value", min_samples=1)

    assert isinstance(result, SourceError)
    assert result.kind is ErrorKind.BAD_QUERY


@pytest.mark.parametrize(
    ("query", "expected_text"),
    [
        ("SELEC avg(correct) AS value FROM predictions", "syntax error"),
        ("SELECT x AS value FROM nowhere", "nowhere"),
    ],
    ids=["syntax", "missing-table"],
)
def test_bad_sql_is_a_bad_query(database: Database, query: str, expected_text: str) -> None:
    result = measure(database, query)

    assert isinstance(result, SourceError)
    assert result.kind is ErrorKind.BAD_QUERY
    assert not result.retryable
    assert expected_text in result.message


def test_unknown_parameter_is_a_bad_query_before_any_connection(database: Database) -> None:
    result = measure(database, "SELECT 1 AS value WHERE :model = 'x'")

    assert isinstance(result, SourceError)
    assert result.kind is ErrorKind.BAD_QUERY
    assert ":model" in result.message


def test_cast_glued_to_a_parameter_is_explained() -> None:
    assert query_problems("SELECT 1 WHERE ts >= :window_start::timestamptz") == [
        "':window_start::' is not read as a parameter; "
        "write CAST(:window_start AS ...) or (:window_start)::..."
    ]
    assert query_problems("SELECT x::int FROM t WHERE ts >= CAST(:window_start AS timestamptz)") == []


WRITES = {
    "sqlite": [
        "DELETE FROM predictions RETURNING 1 AS value",
        "DELETE FROM predictions; SELECT 1 AS value",
        "UPDATE predictions SET correct = 5",
    ],
    "postgresql": [
        "WITH gone AS (DELETE FROM predictions RETURNING 1) SELECT count(*) AS value FROM gone",
        "DELETE FROM predictions; SELECT 1 AS value",
        "UPDATE predictions SET correct = 5",
    ],
}


def test_writes_are_refused_and_never_committed(database: Database) -> None:
    before = database.contents()

    results = [measure(database, query) for query in WRITES[database.backend]]

    assert all(isinstance(r, SourceError) and r.kind is ErrorKind.BAD_QUERY for r in results), results
    assert database.contents() == before == (len(ROWS), 1.0)


def test_slow_query_times_out(database: Database) -> None:
    slow = {
        # Counts forever: only the interruption at the timeout ends it.
        "sqlite": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
        "SELECT count(*) AS value FROM n",
        "postgresql": "SELECT 1 AS value FROM pg_sleep(30)",
    }[database.backend]

    result = measure(database, slow, timeout=timedelta(seconds=1))

    assert isinstance(result, SourceError)
    assert result.kind is ErrorKind.TIMEOUT
    assert result.retryable


def test_unreachable_postgres_is_retryable_and_hides_the_password() -> None:
    url = f"postgresql+psycopg://watcher:hunter2-secret@127.0.0.1:{free_port()}/analytics"

    result = SqlSource(url, "SELECT 1 AS value", HOUR, TIMEOUT).measure(AT)
    dispose_engines()

    assert isinstance(result, SourceError)
    assert result.kind is ErrorKind.UNREACHABLE
    assert result.retryable
    assert "hunter2-secret" not in result.message
    assert "127.0.0.1" in result.message


def test_missing_sqlite_file_is_retryable_and_never_created(tmp_path: Path) -> None:
    path = tmp_path / "not-yet.db"

    result = SqlSource(f"sqlite:///{path}", "SELECT 1 AS value", HOUR, TIMEOUT).measure(AT)
    dispose_engines()

    assert isinstance(result, SourceError)
    assert result.kind is ErrorKind.UNREACHABLE
    assert result.retryable
    assert not path.exists()


def test_bad_url_is_a_config_error() -> None:
    result = SqlSource("nosuchdb://x", "SELECT 1 AS value", HOUR, TIMEOUT).measure(AT)

    assert isinstance(result, SourceError)
    assert result.kind is ErrorKind.CONFIG
    assert not result.retryable
