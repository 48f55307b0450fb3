"""Drift as a source: the share of columns whose current distribution drifted from a reference.

    source = DriftSource(
        reference=Path("data/fraud_reference.parquet"),
        current=SqlRef("sqlite:///features.db", "SELECT * FROM features WHERE ts >= :window_start",
                       window=timedelta(hours=1)),
        columns=["amount", "merchant_category", "hour"],
        method=DriftMethod.AUTO,
        threshold=None,
        timeout=timedelta(seconds=10),
    )
    source.measure(at)        # Value(value=share of drifted columns, samples=current rows, evidence)
    source.render_report(at)  # Evidently's HTML drift report for the same data and settings

What drift means is Evidently's definition (evidently 0.7, DataDriftPreset / ValueDrift): the same
column types, the same automatic choice of test per column, the same scores, thresholds and drift
conditions, and the share of drifted columns. Watcher computes the scores itself, much faster, and
the tests check them against Evidently's own Report on the same data (tests/test_drift_equivalence.py).

The evidence of a Value:
    {"method": "auto", "columns": {name: {"method": "wasserstein", "score": 0.31,
     "threshold": 0.1, "drifted": true, "type": "num"}}, "drifted_columns": [...],
     "reference_rows": n, "current_rows": n, "skipped_columns": {name: reason}}
"score" is None when the statistic is undefined (NaN: e.g. chi-square on a single category).

SQL: the query runs with :window_end bound to the evaluation time and, when it has a window,
:window_start bound to `window` earlier, both timezone-aware UTC datetimes passed as parameters
(never pasted into the text). On SQLite the sqlite3 adapter renders them as text like
'2024-05-01 12:00:00+00:00' or '2024-05-01 12:00:00.250000+00:00' (no fraction when the
microseconds are 0): store timestamps in that form for text comparisons to hold.

Outcomes: an empty current window is NoData, and so is a compared column with no values in it.
A missing file or an unreachable database is a retryable SourceError; a listed column missing
from either side is a BAD_QUERY error naming it; a method that does not apply to a column's type
(ks or wasserstein on a categorical column, chisquare on a numeric one) is a CONFIG error.

Nothing heavy is imported with this module: pandas, numpy, scipy and SQLAlchemy are imported by
the first evaluation, Evidently only by render_report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from watcher.model import DriftMethod, Measurement, NoData, SourceError
from watcher.sources.base import NO_SCOPE, QueryScope
from watcher.sources.drift.spec import DriftSpec, SqlRef

if TYPE_CHECKING:
    from watcher.sources.drift.cache import ReferenceCache


class DriftSource:
    def __init__(
        self,
        reference: Path | SqlRef,
        current: Path | SqlRef,
        columns: Sequence[str] | None,
        method: DriftMethod,
        threshold: float | None,
        timeout: timedelta,
        *,
        cache: ReferenceCache | None = None,
    ) -> None:
        if timeout <= timedelta(0):
            raise ValueError("timeout must be positive")
        if columns is not None and not columns:
            raise ValueError("columns must name at least one column (or be None for all of them)")
        self.spec = DriftSpec(
            reference=reference,
            current=current,
            columns=tuple(columns) if columns is not None else None,
            method=method,
            threshold=threshold,
            timeout=timeout,
        )
        # None: the process-wide cache, so rules (and rebuilt sources) share a reference.
        self._cache = cache

    def measure(self, at: datetime, scope: QueryScope = NO_SCOPE) -> Measurement:
        from watcher.sources.drift import run as drift_run

        return drift_run.measure(self._scoped(scope), _utc(at), self._reference_cache())

    def _scoped(self, scope: QueryScope) -> DriftSpec:
        """The spec with the current data scoped to the live version (the reference stays as is)."""
        current = self.spec.current
        if not isinstance(current, SqlRef) or scope == NO_SCOPE:
            return self.spec
        scoped = replace(current, version=scope.version, not_before=scope.live_since)
        return replace(self.spec, current=scoped)

    def render_report(self, at: datetime) -> str | NoData | SourceError:
        """Evidently's HTML drift report for the data `measure(at)` compares, or why there is none."""
        from watcher.sources.drift import report as drift_report

        return drift_report.render(self.spec, _utc(at), self._reference_cache())

    def _reference_cache(self) -> ReferenceCache:
        if self._cache is None:
            from watcher.sources.drift.cache import shared_cache

            return shared_cache
        return self._cache


def _utc(at: datetime) -> datetime:
    # Evaluation times are timezone-aware UTC; a naive one is taken to be UTC already.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
