"""SQL as a source: one read-only query over a time window, answering one row `value[, samples]`.

The window is bound as `:window_start` / `:window_end` through SQLAlchemy `text()` parameters,
never pasted into the text, and only the parameters the query names are bound.

Read-only use: every query runs in a transaction that is always rolled back. On PostgreSQL the
transaction is also READ ONLY, has a statement_timeout of the evaluation timeout and the TimeZone
UTC (so `timestamp without time zone` columns holding UTC compare right). A SQLite file is opened
read-only (`mode=ro`); a query still running at the timeout is interrupted.

SQLite has no timestamp type: there the window is bound as text in the fixed-width UTC format of
`sqlite_timestamp()`, `YYYY-MM-DD HH:MM:SS.ffffff+00:00` (what Python's sqlite3 writes for an aware
UTC datetime with microseconds). Text comparisons (`ts >= :window_start`) are exact for a `ts`
column in that same format. A UTC `ts` with a space separator but without microseconds or offset
compares right except at the very boundary instant; for any other format (`T` separator, `Z`,
other offsets) compare through SQLite's date functions: `julianday(ts) >= julianday(:window_start)`.

SQLAlchemy's `text()` does not read `:window_start::timestamptz` as a parameter (the `::` cast
follows it directly); write `CAST(:window_start AS timestamptz)` instead. `query_problems()` says so.

Engines are cached per (URL, timeout), module-wide, with a small pool.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from watcher.model import ErrorKind, Measurement, NoData, SourceError, TimeWindow, Value
from watcher.sources.base import NO_SCOPE, QueryScope

WINDOW_PARAMETERS = frozenset({"window_start", "window_end", "version"})
_MAX_ERROR_TEXT = 500
# SQLite calls the progress handler every this many virtual-machine instructions.
_SQLITE_PROGRESS_STEPS = 10_000
# SQLite errors worth another try at the next evaluation (besides locks, which count as timeouts);
# every other SQLite error is the query's fault.
_SQLITE_RETRYABLE = ("unable to open", "disk i/o error")

_CAST_AFTER_PARAMETER = re.compile(r"(?<![:\w\\]):(\w+)::")

_engines: dict[tuple[str, float], Engine] = {}
_engines_lock = threading.Lock()


def sqlite_timestamp(at: datetime) -> str:
    """The text SQLite sources bind for a window bound, and the format a SQLite `ts` should use."""
    if at.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return at.astimezone(UTC).isoformat(sep=" ", timespec="microseconds")


def query_parameters(query: str) -> frozenset[str]:
    """The bind parameter names (`:name`) the query text uses."""
    return frozenset(sa.text(query).compile().params)


def query_problems(query: str) -> list[str]:
    """What is wrong with the query's parameters, for rule validation and for `measure`."""
    problems = [
        f"unknown parameter :{name}; only :window_start, :window_end and :version are bound"
        for name in sorted(query_parameters(query) - WINDOW_PARAMETERS)
    ]
    # text() does not read ":name::type" as a parameter (it would clash with PostgreSQL casts).
    problems += [
        f"':{name}::' is not read as a parameter; write CAST(:{name} AS ...) or (:{name})::..."
        for name in sorted(set(_CAST_AFTER_PARAMETER.findall(query)))
    ]
    return problems


def dispose_engines() -> None:
    """Close every cached engine's connections (at shutdown, or between tests)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.dispose()


class SqlSource:
    """A rule's `sql:` block: one row `value[, samples]` over `[at - window, at)`."""

    def __init__(
        self,
        url: str,
        query: str,
        window: timedelta,
        timeout: timedelta,
        min_samples: float | None = None,
    ) -> None:
        self._url = url
        self._query = query
        self._statement = sa.text(query)
        self._parameters = query_parameters(query)
        self._problems = query_problems(query)
        self._window = window
        self._timeout = timeout
        self._min_samples = min_samples
        self._secrets = _url_secrets(url)

    def measure(self, at: datetime, scope: QueryScope = NO_SCOPE) -> Measurement:
        if at.tzinfo is None:
            raise ValueError("evaluation time must be timezone-aware")
        if self._problems:
            return SourceError(ErrorKind.BAD_QUERY, "; ".join(self._problems), retryable=False)
        if "version" in self._parameters and scope.version is None:
            return NoData("the target's live version is not known yet (:version)")
        # A young version's window starts when it went live: its predecessor's rows never count.
        start = scope.clip(at - self._window)
        window = TimeWindow(start=start.astimezone(UTC), end=at.astimezone(UTC))
        try:
            engine = engine_for(self._url, self._timeout)
            columns, rows = self._run(engine, window, scope.version)
        except sa.exc.SQLAlchemyError as error:
            return self._scrubbed(_classify(error, _display_url(self._url)))
        return self._interpret(columns, rows, window)

    def _run(
        self, engine: Engine, window: TimeWindow, version: str | None
    ) -> tuple[list[str], Sequence[sa.Row[Any]]]:
        parameters: dict[str, Any] = {**_bound_window(window, engine.dialect.name), "version": version}
        with engine.connect() as connection:
            try:
                with _bounded(connection, self._timeout):
                    result = connection.execute(
                        self._statement, {k: v for k, v in parameters.items() if k in self._parameters}
                    )
                    if not result.returns_rows:
                        return [], []
                    # Two rows are enough to know there are too many.
                    return list(result.keys()), result.fetchmany(2)
            finally:
                connection.rollback()

    def _interpret(self, columns: list[str], rows: Sequence[sa.Row[Any]], window: TimeWindow) -> Measurement:
        if not columns:
            return SourceError(ErrorKind.BAD_QUERY, "the query returns no rows; it must be a SELECT", False)
        if not rows:
            return NoData("query returned no row")
        if len(rows) > 1:
            return SourceError(
                ErrorKind.BAD_ANSWER, "query returned more than one row; it must return exactly one", False
            )
        value_at, samples_at = _value_and_samples_columns(columns)
        row = rows[0]
        value = _number(row[value_at])
        if value is None:
            return NoData("query returned NULL")
        if isinstance(value, str):
            return SourceError(ErrorKind.BAD_ANSWER, f"value is not a number: {value}", False)
        samples = self._samples(None if samples_at is None else row[samples_at], samples_at is not None)
        if isinstance(samples, SourceError | NoData):
            return samples
        if math.isnan(value):
            return NoData("query returned NaN")
        if math.isinf(value):
            return SourceError(ErrorKind.BAD_ANSWER, f"query returned {value}", False)
        evidence = {
            "query": self._query,
            "window_start": window.start.isoformat(),
            "window_end": window.end.isoformat(),
        }
        return Value(value=value, samples=samples, evidence=evidence)

    def _samples(self, cell: Any, present: bool) -> float | NoData | SourceError | None:
        """The samples column, or NoData when it is below `min_samples`."""
        if not present:
            if self._min_samples is None:
                return None
            return SourceError(
                ErrorKind.BAD_QUERY, "min_samples is set but the query returns no samples column", False
            )
        # NULL behind a count (SUM over no rows) means nothing was observed.
        samples = _number(cell)
        samples = 0.0 if samples is None else samples
        if isinstance(samples, str):
            return SourceError(ErrorKind.BAD_ANSWER, f"samples is not a number: {samples}", False)
        if self._min_samples is not None and samples < self._min_samples:
            return NoData(f"only {samples:g} samples, at least {self._min_samples:g} needed")
        return samples

    def _scrubbed(self, error: SourceError) -> SourceError:
        message = error.message
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return SourceError(error.kind, message, error.retryable)


def engine_for(url: str, timeout: timedelta) -> Engine:
    """The cached engine for `url`; raises sa.exc.ArgumentError for a malformed URL."""
    key = (url, timeout.total_seconds())
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _create_engine(sa.make_url(url), timeout)
            _engines[key] = engine
        return engine


def _create_engine(url: URL, timeout: timedelta) -> Engine:
    seconds = timeout.total_seconds()
    if url.get_backend_name() == "sqlite":
        if _is_memory(url):
            return sa.create_engine(url)
        return sa.create_engine(
            _read_only_sqlite(url),
            connect_args={"timeout": seconds},
            pool_size=2,
            max_overflow=3,
            pool_timeout=seconds,
        )
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        # libpq takes whole seconds and treats anything below 2 as 2.
        connect_args["connect_timeout"] = max(2, math.ceil(seconds))
    return sa.create_engine(
        url,
        connect_args=connect_args,
        pool_size=2,
        max_overflow=3,
        pool_timeout=seconds,
        pool_pre_ping=True,
    )


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _read_only_sqlite(url: URL) -> URL:
    """The same SQLite file opened through a `file:` URI with mode=ro (never created, never written)."""
    if url.query.get("uri") == "true" or (url.database or "").startswith("file:"):
        return url.update_query_dict({"mode": "ro", "uri": "true"})
    return url.set(database="file:" + quote(url.database or "")).update_query_dict(
        {"mode": "ro", "uri": "true"}
    )


class _bounded:
    """Set up the read-only, time-bounded transaction the query runs in, and undo the bound after."""

    def __init__(self, connection: Connection, timeout: timedelta) -> None:
        self._connection = connection
        self._timeout = timeout
        self._undo: Callable[[], None] = lambda: None

    def __enter__(self) -> None:
        dialect = self._connection.dialect.name
        if dialect == "postgresql":
            milliseconds = max(1, int(self._timeout.total_seconds() * 1000))
            # Must be the first statement of the transaction.
            self._connection.execute(sa.text("SET TRANSACTION READ ONLY"))
            self._connection.execute(
                sa.text(
                    "SELECT set_config('statement_timeout', :ms, true), set_config('TimeZone', 'UTC', true)"
                ),
                {"ms": str(milliseconds)},
            )
        elif dialect == "sqlite":
            self._undo = _interrupt_sqlite_after(self._connection, self._timeout)

    def __exit__(self, *exc_info: object) -> None:
        self._undo()


def _interrupt_sqlite_after(connection: Connection, timeout: timedelta) -> Callable[[], None]:
    """SQLite has no statement timeout: a progress handler aborts the query past the deadline."""
    raw = connection.connection.dbapi_connection
    if raw is None:
        return lambda: None
    deadline = time.monotonic() + timeout.total_seconds()

    def past_deadline() -> int:
        return 1 if time.monotonic() > deadline else 0

    raw.set_progress_handler(past_deadline, _SQLITE_PROGRESS_STEPS)
    return lambda: raw.set_progress_handler(None, 0)


def _bound_window(window: TimeWindow, dialect: str) -> dict[str, Any]:
    if dialect == "sqlite":
        return {"window_start": sqlite_timestamp(window.start), "window_end": sqlite_timestamp(window.end)}
    return {"window_start": window.start, "window_end": window.end}


def _value_and_samples_columns(columns: list[str]) -> tuple[int, int | None]:
    """By name when a column is called `value` (other columns are then ignored), else by position."""
    lowered = [name.lower() for name in columns]
    if "value" in lowered:
        return lowered.index("value"), lowered.index("samples") if "samples" in lowered else None
    return 0, 1 if len(columns) > 1 else None


def _number(cell: Any) -> float | str | None:
    """A cell as a float, None for NULL, or the offending text when it is not a number."""
    if cell is None:
        return None
    if isinstance(cell, bool | int | float | Decimal):
        return float(cell)
    try:
        return float(str(cell))
    except ValueError:
        return str(cell)[:50]


def _classify(error: sa.exc.SQLAlchemyError, where: str) -> SourceError:
    if isinstance(error, sa.exc.TimeoutError):
        return SourceError(ErrorKind.TIMEOUT, f"{where}: no free database connection in time", True)
    if isinstance(error, sa.exc.ArgumentError | sa.exc.NoSuchModuleError):
        return SourceError(ErrorKind.CONFIG, f"bad database URL: {_short(str(error))}", False)
    if not isinstance(error, sa.exc.DBAPIError):
        # StatementError and the like: a parameter the statement needs and does not get, ...
        return SourceError(ErrorKind.BAD_QUERY, f"{where}: {_short(str(error).splitlines()[0])}", False)
    text = _driver_text(error.orig)
    if error.connection_invalidated or isinstance(error, sa.exc.InterfaceError):
        return SourceError(ErrorKind.UNREACHABLE, f"{where}: {text}", True)
    sqlstate = getattr(error.orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        return _classify_sqlstate(sqlstate, error, f"{where}: {text}")
    if "sqlite" in type(error.orig).__module__:
        return _classify_sqlite(error, f"{where}: {text}")
    if isinstance(error, sa.exc.OperationalError):
        kind = ErrorKind.TIMEOUT if "timeout" in text.lower() else ErrorKind.UNREACHABLE
        return SourceError(kind, f"{where}: {text}", True)
    return SourceError(ErrorKind.BAD_QUERY, f"{where}: {text}", False)


def _classify_sqlstate(sqlstate: str, error: sa.exc.DBAPIError, message: str) -> SourceError:
    """PostgreSQL errors by SQLSTATE class (Appendix A of its manual)."""
    if sqlstate == "57014":  # query_canceled: our statement_timeout
        return SourceError(ErrorKind.TIMEOUT, message, True)
    if sqlstate == "25006":  # read_only_sql_transaction
        return SourceError(ErrorKind.BAD_QUERY, f"{message} (sources are read-only)", False)
    if sqlstate[:2] in ("08", "53", "57", "58"):  # connection, resources, operator, system
        return SourceError(ErrorKind.UNREACHABLE, message, True)
    if isinstance(error, sa.exc.OperationalError | sa.exc.InternalError):
        return SourceError(ErrorKind.UNREACHABLE, message, True)
    return SourceError(ErrorKind.BAD_QUERY, message, False)


def _classify_sqlite(error: sa.exc.DBAPIError, message: str) -> SourceError:
    lowered = message.lower()
    if "interrupted" in lowered:  # our progress handler
        return SourceError(ErrorKind.TIMEOUT, message, True)
    if "locked" in lowered:
        return SourceError(ErrorKind.TIMEOUT, message, True)
    if any(marker in lowered for marker in _SQLITE_RETRYABLE):
        return SourceError(ErrorKind.UNREACHABLE, message, True)
    return SourceError(ErrorKind.BAD_QUERY, message, False)


def _driver_text(orig: BaseException | None) -> str:
    """The driver's message on one line, without PostgreSQL's caret line."""
    if orig is None:
        return "database error"
    lines = [line.strip() for line in str(orig).splitlines()]
    kept = [line for line in lines if line and not re.fullmatch(r"\^+", line)]
    return _short(" ".join(kept)) or type(orig).__name__


def _display_url(url: str) -> str:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return "database"
    return parsed.set(query={}).render_as_string(hide_password=True)


def _url_secrets(url: str) -> list[str]:
    """The password, and password-like query parameters, that must never reach a message."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        # Unparseable: scrub everything after the scheme in case a password is inside.
        return [url.split("://", 1)[-1]] if "://" in url else []
    secrets = [str(parsed.password)] if parsed.password else []
    secrets += [_first(value) for key, value in parsed.query.items() if "password" in key.lower()]
    return sorted((s for s in secrets if s), key=len, reverse=True)


def _first(value: str | Sequence[str]) -> str:
    return value if isinstance(value, str) else (value[0] if value else "")


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT] + "..."
