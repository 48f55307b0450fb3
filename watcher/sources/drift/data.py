"""Reading the data a drift rule compares: CSV or Parquet files, or a SQL query's rows.

Expected failures come back as SourceError values:
- a missing or unreadable file: UNREACHABLE, retryable (it may be written later); a file that is
  there but cannot be parsed: BAD_ANSWER, not retryable;
- a database that cannot be reached or is busy: UNREACHABLE, retryable; the timeout: TIMEOUT,
  retryable; a query the database refuses (syntax, unknown table or column, a bind parameter
  without a value): BAD_QUERY, not retryable; an unusable URL: CONFIG, not retryable.

SQL windows are bound as parameters, never pasted: :window_end is the evaluation time and, when
the query has a window, :window_start is that much earlier; both are timezone-aware UTC datetimes
handed to the driver as such. On SQLite the standard library's sqlite3 adapter renders them as ISO
8601 text with a space, e.g. '2024-05-01 12:00:00+00:00' or '2024-05-01 12:00:00.250000+00:00'
(no fraction when the microseconds are 0), which compares correctly with timestamps stored as
text in the same form.

The timeout bounds each query: PostgreSQL gets a statement_timeout for the transaction and a
connect_timeout; SQLite is interrupted by a progress handler once the deadline passes. Error
messages carry the driver's message and never the URL's password.

This module imports pandas and SQLAlchemy: import it only when a drift rule runs.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from watcher.model import ErrorKind, SourceError, TimeWindow
from watcher.sources.drift.spec import SqlRef

PARQUET_SUFFIXES = frozenset({".parquet", ".pq", ".parq"})
CSV_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})
_COMPRESSION_SUFFIXES = frozenset({".gz", ".bz2", ".zip", ".xz", ".zst"})
# Driver messages can be long; the first lines say what went wrong.
_MAX_MESSAGE = 400
# How often (in SQLite virtual machine instructions) the deadline is checked.
_SQLITE_PROGRESS_STEPS = 1000
# PostgreSQL's code for a statement cancelled by statement_timeout.
_PG_QUERY_CANCELED = "57014"
# SQLite reports these query mistakes as OperationalError, like an unreachable database.
_SQLITE_QUERY_MISTAKES = ("no such table", "no such column", "syntax error", 'near "', "no such function")
# What pandas and pyarrow raise for a file that is missing, unreadable or malformed (pyarrow's
# errors derive from these builtins too).
_READ_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, NotImplementedError)


# --- files ----------------------------------------------------------------------------------------


def file_version(path: Path) -> tuple[int, int] | SourceError:
    """(mtime in ns, size): what makes a cached reference file stale."""
    try:
        status = path.stat()
    except OSError as error:
        return SourceError(ErrorKind.UNREACHABLE, f"cannot read {path}: {error.strerror}", retryable=True)
    return status.st_mtime_ns, status.st_size


def _file_format(path: Path) -> str | SourceError:
    suffixes = [suffix.lower() for suffix in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    suffix = suffixes[-1] if suffixes else ""
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in CSV_SUFFIXES:
        return "csv"
    return SourceError(
        ErrorKind.CONFIG, f"{path}: not a CSV (.csv) or Parquet (.parquet) file", retryable=False
    )


def file_columns(path: Path) -> tuple[str, ...] | SourceError:
    """The column names of a CSV or Parquet file, reading only its header or schema."""
    file_format = _file_format(path)
    if isinstance(file_format, SourceError):
        return file_format
    try:
        if file_format == "parquet":
            import pyarrow.parquet as pq

            return tuple(pq.read_schema(path).names)
        return tuple(str(name) for name in pd.read_csv(path, nrows=0, sep=_separator(path)).columns)
    except _READ_ERRORS as error:
        return _file_error(path, error)


def read_file(path: Path, columns: Sequence[str] | None) -> pd.DataFrame | SourceError:
    """The file's rows, only `columns` (all when None); the columns must exist (see file_columns)."""
    file_format = _file_format(path)
    if isinstance(file_format, SourceError):
        return file_format
    wanted = list(columns) if columns is not None else None
    try:
        if file_format == "parquet":
            return pd.read_parquet(path, columns=wanted)
        return pd.read_csv(path, usecols=wanted, sep=_separator(path))
    except _READ_ERRORS as error:
        return _file_error(path, error)


def _separator(path: Path) -> str:
    return "\t" if ".tsv" in (suffix.lower() for suffix in path.suffixes) else ","


def _file_error(path: Path, error: Exception) -> SourceError:
    if isinstance(error, OSError) and not isinstance(error, UnicodeError):
        reason = error.strerror or str(error)
        return SourceError(ErrorKind.UNREACHABLE, f"cannot read {path}: {reason}", retryable=True)
    return SourceError(
        ErrorKind.BAD_ANSWER, f"cannot parse {path}: {_first_line(str(error))}", retryable=False
    )


# --- SQL ------------------------------------------------------------------------------------------


def window_for(ref: SqlRef, at: datetime) -> TimeWindow | None:
    if ref.window is None:
        return None
    start = at - ref.window
    if ref.not_before is not None:
        start = max(start, ref.not_before)  # a young version's window starts when it went live
    return TimeWindow(start=start, end=at)


def query_parameters(ref: SqlRef, at: datetime) -> dict[str, datetime | str | None]:
    """:window_end is always the evaluation time; :window_start only when the query has a window;
    :version is the live version of the rule's target."""
    window = window_for(ref, at)
    if window is None:
        return {"window_end": at, "version": ref.version}
    return {"window_start": window.start, "window_end": window.end, "version": ref.version}


_engines: dict[tuple[str, float], Engine] = {}
_engines_lock = threading.Lock()


def _engine(url: str, timeout: timedelta) -> Engine | SourceError:
    key = (url, timeout.total_seconds())
    with _engines_lock:
        engine = _engines.get(key)
        if engine is not None:
            return engine
        try:
            parsed = sa.make_url(url)
            engine = sa.create_engine(parsed, connect_args=_connect_args(parsed, timeout))
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError, ValueError) as error:
            return SourceError(
                ErrorKind.CONFIG, f"unusable database URL: {_scrub(str(error), url)}", retryable=False
            )
        _engines[key] = engine
        return engine


def _connect_args(url: sa.URL, timeout: timedelta) -> dict[str, Any]:
    seconds = timeout.total_seconds()
    if url.get_backend_name() == "postgresql":
        # libpq takes whole seconds and treats values below 2 as 2.
        return {"connect_timeout": max(2, math.ceil(seconds))}
    if url.get_backend_name() == "sqlite":
        return {"timeout": seconds}  # how long to wait for a lock
    return {}


def read_query(ref: SqlRef, at: datetime, timeout: timedelta) -> pd.DataFrame | SourceError:
    """Run the query with its window bound and return its rows."""
    engine = _engine(ref.url, timeout)
    if isinstance(engine, SourceError):
        return engine
    deadline = time.monotonic() + timeout.total_seconds()
    try:
        with engine.connect() as connection, _bounded(connection, timeout, deadline):
            statement = sa.text(ref.query)
            used = statement.compile().params
            bound = {name: value for name, value in query_parameters(ref, at).items() if name in used}
            result = connection.execute(statement, bound)
            names = [str(name) for name in result.keys()]  # noqa: SIM118 (a Result, not a dict)
            rows = result.fetchall()
    except sa.exc.DBAPIError as error:
        return _database_error(error, ref.url, timed_out=time.monotonic() >= deadline)
    except sa.exc.SQLAlchemyError as error:
        message = _scrub(_first_line(str(error)), ref.url)
        return SourceError(ErrorKind.BAD_QUERY, f"query refused: {message}", retryable=False)
    return pd.DataFrame.from_records(rows, columns=names, coerce_float=True)


@contextmanager
def _bounded(connection: Connection, timeout: timedelta, deadline: float) -> Iterator[None]:
    backend = connection.engine.url.get_backend_name()
    if backend == "postgresql":
        milliseconds = max(1, int(timeout.total_seconds() * 1000))
        # is_local=true: the setting ends with this transaction, the pooled connection keeps none.
        connection.execute(
            sa.text("SELECT set_config('statement_timeout', :value, true)"), {"value": str(milliseconds)}
        )
        yield
        return
    if backend == "sqlite":
        driver: Any = connection.connection.driver_connection
        driver.set_progress_handler(lambda: int(time.monotonic() >= deadline), _SQLITE_PROGRESS_STEPS)
        try:
            yield
        finally:
            driver.set_progress_handler(None, 0)
        return
    yield


def _database_error(error: sa.exc.DBAPIError, url: str, timed_out: bool) -> SourceError:
    original = error.orig if error.orig is not None else error
    message = _scrub(_first_line(str(original)), url)
    where = sa.make_url(url).render_as_string(hide_password=True)
    if timed_out or getattr(original, "sqlstate", None) == _PG_QUERY_CANCELED:
        return SourceError(ErrorKind.TIMEOUT, f"{where}: query timed out ({message})", retryable=True)
    if isinstance(error, sa.exc.OperationalError) and not _is_sqlite_query_mistake(url, message):
        return SourceError(ErrorKind.UNREACHABLE, f"{where}: {message}", retryable=True)
    return SourceError(ErrorKind.BAD_QUERY, f"{where}: query refused: {message}", retryable=False)


def _is_sqlite_query_mistake(url: str, message: str) -> bool:
    if not url.startswith("sqlite"):
        return False
    lowered = message.lower()
    return any(marker in lowered for marker in _SQLITE_QUERY_MISTAKES)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line[:_MAX_MESSAGE]


def _scrub(text: str, url: str) -> str:
    """Remove the URL's password from a message, should a driver ever echo it."""
    try:
        password = sa.make_url(url).password
    except sa.exc.ArgumentError:
        return text
    if password:
        text = text.replace(str(password), "***")
    return text


def describe(source: Path | SqlRef) -> str:
    """Where data comes from, for messages: the path, or the URL without its password."""
    if isinstance(source, Path):
        return str(source)
    try:
        return sa.make_url(source.url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "an unusable database URL"
