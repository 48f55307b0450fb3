"""DriftSource: files and SQL windows in, a Value / NoData / SourceError out, reference cached.

Real files, a real SQLite database and (where stated) the real PostgreSQL of the test environment;
the scores themselves are checked against Evidently in test_drift_equivalence.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tests.support.services import fresh_postgres_schema
from watcher.model import DriftMethod, ErrorKind, NoData, SourceError, Value
from watcher.sources.drift.cache import ReferenceCache
from watcher.sources.drift.source import DriftSource
from watcher.sources.drift.spec import SqlRef

AT = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=20)
ROOT = Path(__file__).resolve().parent.parent


def features(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(100 + shift * 50, 20, rows),
            "merchant": rng.choice(["food", "travel", "games"], rows).astype(object),
            "hour": rng.integers(0, 24, rows),
        }
    )


def source(reference: Path | SqlRef, current: Path | SqlRef, **options: object) -> DriftSource:
    settings: dict[str, object] = {
        "columns": ["amount", "merchant", "hour"],
        "method": DriftMethod.AUTO,
        "threshold": None,
        "timeout": TIMEOUT,
        "cache": ReferenceCache(),
    }
    settings.update(options)
    return DriftSource(reference, current, **settings)  # type: ignore[arg-type]


@pytest.fixture
def reference_csv(tmp_path: Path) -> Path:
    path = tmp_path / "reference.csv"
    features(3000, seed=1).to_csv(path, index=False)
    return path


# --- files ----------------------------------------------------------------------------------------


def test_csv_reference_against_a_parquet_current_file(tmp_path: Path, reference_csv: Path) -> None:
    current = tmp_path / "current.parquet"
    features(2000, seed=2, shift=1.0).to_parquet(current)
    value = source(reference_csv, current).measure(AT)
    assert isinstance(value, Value), value
    assert value.samples == 2000
    evidence = value.evidence
    assert evidence["method"] == "auto"
    assert evidence["reference_rows"] == 3000 and evidence["current_rows"] == 2000
    assert evidence["columns"]["amount"] == {
        "method": "wasserstein",
        "score": pytest.approx(evidence["columns"]["amount"]["score"]),
        "threshold": 0.1,
        "drifted": True,
        "type": "num",
    }
    assert evidence["columns"]["merchant"]["type"] == "cat"
    assert evidence["columns"]["hour"]["type"] == "num"  # integers with more than 10 values
    assert evidence["drifted_columns"] == ["amount"]
    assert value.value == pytest.approx(1 / 3)
    json.dumps(evidence, allow_nan=False)  # evidence goes into the database as JSON


def test_parquet_reference_against_a_csv_current_file(tmp_path: Path) -> None:
    reference, current = tmp_path / "reference.parquet", tmp_path / "current.csv"
    features(3000, seed=1).to_parquet(reference)
    features(1500, seed=3).to_csv(current, index=False)
    value = source(reference, current, method=DriftMethod.PSI).measure(AT)
    assert isinstance(value, Value), value
    assert value.value == 0.0
    assert {column["method"] for column in value.evidence["columns"].values()} == {"psi"}


def test_without_a_column_list_free_text_and_timestamps_are_left_out(tmp_path: Path) -> None:
    frame = features(1500, seed=4)
    frame["note"] = [f"free text {i}" for i in range(len(frame))]
    frame["ts"] = pd.date_range("2025-01-01", periods=len(frame), freq="min")
    reference, current = tmp_path / "reference.parquet", tmp_path / "current.parquet"
    frame.to_parquet(reference)
    frame.to_parquet(current)
    value = source(reference, current, columns=None).measure(AT)
    assert isinstance(value, Value), value
    assert sorted(value.evidence["columns"]) == ["amount", "hour", "merchant"]
    assert set(value.evidence["skipped_columns"]) == {"note", "ts"}


def test_a_missing_file_is_a_retryable_error(tmp_path: Path, reference_csv: Path) -> None:
    missing = tmp_path / "nowhere.parquet"
    for outcome in (source(reference_csv, missing).measure(AT), source(missing, reference_csv).measure(AT)):
        assert isinstance(outcome, SourceError), outcome
        assert outcome.kind is ErrorKind.UNREACHABLE and outcome.retryable
        assert "nowhere.parquet" in outcome.message


@pytest.mark.parametrize("side", ["current", "reference"])
def test_a_listed_column_absent_from_either_side_is_named(tmp_path: Path, side: str) -> None:
    full, partial = tmp_path / "full.csv", tmp_path / "partial.csv"
    features(1200, seed=5).to_csv(full, index=False)
    features(1200, seed=6).drop(columns=["hour"]).to_csv(partial, index=False)
    reference, current = (full, partial) if side == "current" else (partial, full)
    outcome = source(reference, current).measure(AT)
    assert isinstance(outcome, SourceError), outcome
    assert outcome.kind is ErrorKind.BAD_QUERY and not outcome.retryable
    assert "'hour'" in outcome.message and side in outcome.message


def test_a_method_that_does_not_fit_a_column_type_is_a_config_error(
    tmp_path: Path, reference_csv: Path
) -> None:
    outcome = source(reference_csv, reference_csv, method=DriftMethod.KS).measure(AT)
    assert isinstance(outcome, SourceError), outcome
    assert outcome.kind is ErrorKind.CONFIG and "'merchant'" in outcome.message


def test_a_column_without_values_in_the_current_data_is_no_data(tmp_path: Path, reference_csv: Path) -> None:
    current = tmp_path / "current.parquet"
    frame = features(100, seed=7)
    frame["amount"] = np.nan
    frame.to_parquet(current)
    outcome = source(reference_csv, current).measure(AT)
    assert isinstance(outcome, NoData) and "'amount'" in outcome.reason


# --- the reference cache --------------------------------------------------------------------------


def _fixed_width_reference(path: Path, seed: int, shift: float) -> None:
    # Same row count and number formatting: two versions of the file have exactly the same size.
    rng = np.random.default_rng(seed)
    values = np.clip(rng.normal(0.3 + shift, 0.05, 2000), 0.0, 0.999999)
    path.write_text("score\n" + "".join(f"{value:.6f}\n" for value in values))


def test_the_reference_is_read_once_and_again_when_the_file_changes(tmp_path: Path) -> None:
    reference, current = tmp_path / "reference.csv", tmp_path / "current.csv"
    _fixed_width_reference(reference, seed=1, shift=0.0)
    _fixed_width_reference(current, seed=2, shift=0.0)
    cache = ReferenceCache()
    drift = DriftSource(reference, current, ["score"], DriftMethod.AUTO, None, TIMEOUT, cache=cache)

    first = drift.measure(AT)
    assert isinstance(first, Value) and first.value == 0.0
    assert drift.measure(AT + timedelta(minutes=5)) == first
    assert cache.reads == 1

    # New content, same size and modification time: the cached statistics are still used.
    stamp = reference.stat()
    _fixed_width_reference(reference, seed=3, shift=0.4)
    assert reference.stat().st_size == stamp.st_size
    os.utime(reference, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert drift.measure(AT) == first
    assert cache.reads == 1

    # The modification time moves: the file is read again and its new content counts.
    os.utime(reference, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    changed = drift.measure(AT)
    assert isinstance(changed, Value) and changed.value == 1.0
    assert cache.reads == 2


def test_a_changed_query_is_a_different_reference(tmp_path: Path) -> None:
    database = tmp_path / "reference.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE ref (amount REAL, merchant TEXT, hour INTEGER)")
        connection.executemany(
            "INSERT INTO ref VALUES (?, ?, ?)", features(1500, seed=8).itertuples(index=False)
        )
    current = tmp_path / "current.csv"
    features(1500, seed=9).to_csv(current, index=False)
    cache = ReferenceCache()
    url = f"sqlite:///{database}"
    for query in (
        "SELECT * FROM ref",
        "SELECT * FROM ref",
        "SELECT amount * 3 AS amount, merchant, hour FROM ref",
    ):
        drift = DriftSource(
            SqlRef(url, query),
            current,
            ["amount", "merchant", "hour"],
            DriftMethod.AUTO,
            None,
            TIMEOUT,
            cache=cache,
        )
        assert isinstance(drift.measure(AT), Value)
    assert cache.reads == 2


# --- SQL windows ----------------------------------------------------------------------------------


def _feature_database(path: Path) -> str:
    """Rows each minute from 10:00 to 12:59 on AT's day; the drifted ones between 11:00 and 12:00."""
    rng = np.random.default_rng(10)
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE features (ts TEXT, amount REAL, merchant TEXT)")
        for minute in range(180):
            ts = AT.replace(hour=10) + timedelta(minutes=minute)
            inside = AT - timedelta(hours=1) <= ts < AT
            for _ in range(20):
                amount = rng.normal(300 if inside else 100, 20)
                merchant = str(rng.choice(["food", "travel", "games"]))
                # The sqlite3 adapter's text for a UTC datetime, as the window bounds are bound.
                connection.execute(
                    "INSERT INTO features VALUES (?, ?, ?)", (ts.isoformat(" "), amount, merchant)
                )
    return f"sqlite:///{path}"


def test_a_sqlite_window_binds_utc_datetimes_as_parameters(tmp_path: Path, reference_csv: Path) -> None:
    url = _feature_database(tmp_path / "features.db")
    query = "SELECT amount, merchant FROM features WHERE ts >= :window_start AND ts < :window_end"
    current = SqlRef(url, query, window=timedelta(hours=1))
    drift = source(reference_csv, current, columns=["amount", "merchant"])
    value = drift.measure(AT)
    assert isinstance(value, Value), value
    # 11:00 inclusive to 12:00 exclusive: 60 minutes of 20 rows, all of them shifted.
    assert value.samples == 1200
    assert value.evidence["drifted_columns"] == ["amount"]

    earlier = drift.measure(AT - timedelta(hours=1))  # 10:00 to 11:00: like the reference
    assert isinstance(earlier, Value) and earlier.samples == 1200
    assert earlier.evidence["drifted_columns"] == []


def test_an_empty_window_is_no_data(tmp_path: Path, reference_csv: Path) -> None:
    url = _feature_database(tmp_path / "features.db")
    query = "SELECT amount, merchant FROM features WHERE ts >= :window_start AND ts < :window_end"
    outcome = source(reference_csv, SqlRef(url, query, timedelta(hours=1)), columns=["amount"]).measure(
        AT + timedelta(days=1)
    )
    assert isinstance(outcome, NoData), outcome


def test_a_query_the_database_refuses_is_a_bad_query(tmp_path: Path, reference_csv: Path) -> None:
    url = _feature_database(tmp_path / "features.db")
    for query in ("SELECT * FROM no_such_table", "SELECT * FROM features WHERE ts >= :window_start"):
        outcome = source(reference_csv, SqlRef(url, query, window=None)).measure(AT)
        assert isinstance(outcome, SourceError), outcome
        assert outcome.kind is ErrorKind.BAD_QUERY and not outcome.retryable


def test_an_unreachable_database_is_retryable_and_keeps_its_password(
    reference_csv: Path, tmp_path: Path
) -> None:
    unreachable = [
        "postgresql+psycopg://watcher:s3cret-pass@127.0.0.1:1/analytics",
        f"sqlite:///{tmp_path}/missing-directory/features.db",
    ]
    for url in unreachable:
        outcome = source(reference_csv, SqlRef(url, "SELECT 1 AS amount")).measure(AT)
        assert isinstance(outcome, SourceError), outcome
        assert outcome.kind is ErrorKind.UNREACHABLE and outcome.retryable, outcome
        assert "s3cret-pass" not in outcome.message


def test_a_sqlite_query_past_the_timeout_is_interrupted(reference_csv: Path, tmp_path: Path) -> None:
    endless = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
        "SELECT i AS amount FROM n WHERE i < 0"
    )
    drift = source(
        reference_csv, SqlRef(f"sqlite:///{tmp_path}/x.db", endless), timeout=timedelta(milliseconds=300)
    )
    outcome = drift.measure(AT)
    assert isinstance(outcome, SourceError), outcome
    assert outcome.kind is ErrorKind.TIMEOUT and outcome.retryable


@pytest.mark.integration
def test_postgresql_window_and_statement_timeout(reference_csv: Path) -> None:
    with fresh_postgres_schema() as schema:
        with schema.engine.begin() as connection:
            connection.execute(
                sa.text("CREATE TABLE features (ts timestamptz, amount float8, merchant text)")
            )
            rows = [
                {"ts": AT - timedelta(minutes=m), "amount": 100.0 + m % 7, "merchant": "food"}
                for m in range(1, 121)
            ]
            connection.execute(sa.text("INSERT INTO features VALUES (:ts, :amount, :merchant)"), rows)
        window = "SELECT amount, merchant FROM features WHERE ts >= :window_start AND ts < :window_end"
        value = source(
            reference_csv, SqlRef(schema.url, window, timedelta(hours=1)), columns=["amount", "merchant"]
        ).measure(AT)
        assert isinstance(value, Value), value
        assert value.samples == 60

        slow = "SELECT pg_sleep(5) AS wait, 1.0 AS amount"
        outcome = source(
            reference_csv, SqlRef(schema.url, slow), columns=["amount"], timeout=timedelta(milliseconds=300)
        ).measure(AT)
        assert isinstance(outcome, SourceError), outcome
        assert outcome.kind is ErrorKind.TIMEOUT and outcome.retryable


# --- the report and the imports -------------------------------------------------------------------


def test_the_html_report_is_evidently_s_and_names_the_columns(tmp_path: Path, reference_csv: Path) -> None:
    current = tmp_path / "current.parquet"
    features(1200, seed=11, shift=1.0).to_parquet(current)
    html = source(reference_csv, current).render_report(AT)
    assert isinstance(html, str), html
    assert html.lstrip().lower().startswith("<html") or "<html" in html[:2000].lower()
    for column in ("amount", "merchant", "hour"):
        assert column in html
    assert "Wasserstein" in html  # the test Evidently ran on amount, as in the evidence


def test_the_report_of_an_empty_window_is_no_data(tmp_path: Path, reference_csv: Path) -> None:
    url = _feature_database(tmp_path / "features.db")
    query = "SELECT amount FROM features WHERE ts >= :window_start AND ts < :window_end"
    outcome = source(reference_csv, SqlRef(url, query, timedelta(hours=1)), columns=["amount"]).render_report(
        AT + timedelta(days=1)
    )
    assert isinstance(outcome, NoData)


def test_heavy_libraries_are_imported_only_when_needed(tmp_path: Path, reference_csv: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from datetime import datetime, timedelta, timezone
        from pathlib import Path
        from watcher.model import DriftMethod
        from watcher.sources.drift.source import DriftSource
        heavy = ("pandas", "numpy", "scipy", "evidently")
        print(sorted(name for name in heavy if name in sys.modules))
        source = DriftSource(Path({str(reference_csv)!r}), Path({str(reference_csv)!r}), None,
                             DriftMethod.AUTO, None, timedelta(seconds=10))
        print(type(source.measure(datetime.now(timezone.utc))).__name__)
        print(sorted(name for name in heavy if name in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    at_import, outcome, after_measure = result.stdout.splitlines()
    assert at_import == "[]"
    assert outcome == "Value"
    assert after_measure == "['numpy', 'pandas', 'scipy']"


def test_a_reference_column_of_another_type_is_a_bad_answer_naming_it(tmp_path: Path) -> None:
    reference, current = tmp_path / "reference.csv", tmp_path / "current.csv"
    features(1200, seed=12).assign(amount="unknown").to_csv(reference, index=False)
    features(1200, seed=13).to_csv(current, index=False)
    outcome = source(reference, current).measure(AT)
    assert isinstance(outcome, SourceError), outcome
    assert outcome.kind is ErrorKind.BAD_ANSWER and "'amount'" in outcome.message
