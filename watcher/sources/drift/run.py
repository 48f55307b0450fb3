"""One drift evaluation: read the current data, pick and type the columns, score them, report.

This module imports pandas, numpy and scipy: drift.py imports it on the first evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from watcher.model import DriftMethod, ErrorKind, Measurement, NoData, SourceError, Value
from watcher.sources.drift import data as drift_data
from watcher.sources.drift.cache import PreparedReference, ReferenceCache
from watcher.sources.drift.columns import (
    ColumnKind,
    ColumnScore,
    CurrentColumn,
    EmptyColumn,
    NotApplicable,
    StatTest,
    Unsupported,
    inspect_current,
    score_column,
)
from watcher.sources.drift.spec import DriftSpec, SqlRef
from watcher.sources.drift.stats import finite_or_none


@dataclass(frozen=True)
class Comparison:
    """The per-column outcome of one evaluation."""

    scores: tuple[ColumnScore, ...]
    skipped: dict[str, str]  # columns left out (only when no columns are listed), with why
    reference_rows: int
    current_rows: int

    @property
    def drifted_columns(self) -> list[str]:
        return [score.column for score in self.scores if score.drifted]

    @property
    def share(self) -> float:
        return len(self.drifted_columns) / len(self.scores)


def measure(spec: DriftSpec, at: datetime, cache: ReferenceCache) -> Measurement:
    current = load(spec.current, at, spec)
    if isinstance(current, SourceError):
        return current
    comparison = compare(spec, current, at, cache)
    if isinstance(comparison, NoData | SourceError):
        return comparison
    return Value(
        value=comparison.share, samples=float(comparison.current_rows), evidence=evidence(spec, comparison)
    )


def load(source: Path | SqlRef, at: datetime, spec: DriftSpec) -> pd.DataFrame | SourceError:
    """The rows of a file (only the listed columns) or of a query (with its window bound)."""
    if isinstance(source, SqlRef):
        return drift_data.read_query(source, at, spec.timeout)
    if spec.columns is not None:
        names = drift_data.file_columns(source)
        if isinstance(names, SourceError):
            return names
        absent = [name for name in spec.columns if name not in names]
        if absent:
            return _absent(absent, f"the current data ({source})")
    return drift_data.read_file(source, spec.columns)


def compare(
    spec: DriftSpec, current: pd.DataFrame, at: datetime, cache: ReferenceCache
) -> Comparison | NoData | SourceError:
    if not len(current):
        return NoData(f"no rows in the current data ({drift_data.describe(spec.current)})")
    planned = plan(spec, current)
    if isinstance(planned, SourceError):
        return planned
    columns, skipped = planned
    reference = cache.get(spec.reference, at, {c.name: c.kind for c in columns}, spec.timeout)
    if isinstance(reference, SourceError):
        return reference
    paired = _pair(spec, columns, reference, skipped)
    if isinstance(paired, SourceError):
        return paired
    scores: list[ColumnScore] = []
    for column, prepared in paired:
        score = score_column(column, prepared, spec.method, spec.threshold)
        if isinstance(score, EmptyColumn):
            return NoData(f"column {score.column!r} has no values in the current data")
        if isinstance(score, NotApplicable):
            return _not_applicable(score.column, score.kind, score.test)
        scores.append(score)
    return Comparison(tuple(scores), skipped, reference.rows, len(current))


def plan(spec: DriftSpec, current: pd.DataFrame) -> tuple[list[CurrentColumn], dict[str, str]] | SourceError:
    """The current columns to compare, typed as Evidently types them, and those left out."""
    names = [str(name) for name in current.columns]
    if spec.columns is not None:
        absent = [name for name in spec.columns if name not in names]
        if absent:
            return _absent(absent, f"the current data ({drift_data.describe(spec.current)})")
    listed = spec.columns is not None
    columns: list[CurrentColumn] = []
    skipped: dict[str, str] = {}
    for name in spec.columns if spec.columns is not None else names:
        inspected = inspect_current(name, current[name], listed)
        if isinstance(inspected, Unsupported):
            if listed:
                return SourceError(
                    ErrorKind.BAD_QUERY, f"column {name!r} cannot be compared: {inspected.reason}", False
                )
            skipped[name] = inspected.reason
            continue
        if spec.method is not DriftMethod.AUTO and not StatTest(spec.method.value).applies_to(inspected.kind):
            return _not_applicable(name, inspected.kind, StatTest(spec.method.value))
        columns.append(inspected)
    return columns, skipped


def _pair(
    spec: DriftSpec,
    columns: list[CurrentColumn],
    reference: PreparedReference,
    skipped: dict[str, str],
) -> list[tuple[CurrentColumn, Any]] | SourceError:
    listed = spec.columns is not None
    if listed:
        absent = [column.name for column in columns if column.name not in reference.columns]
        if absent:
            return _absent(absent, f"the reference ({drift_data.describe(spec.reference)})")
    paired: list[tuple[CurrentColumn, Any]] = []
    for column in columns:
        key = (column.name, column.kind)
        if column.name not in reference.columns:
            continue  # no columns listed: compare the columns present in both
        problem = reference.problems.get(key)
        if problem is not None:
            if listed:
                return SourceError(ErrorKind.BAD_ANSWER, f"column {column.name!r} {problem}", False)
            skipped[column.name] = problem
            continue
        paired.append((column, reference.prepared[key]))
    if not paired:
        return SourceError(
            ErrorKind.CONFIG, "no column to compare: the reference and the current data share none", False
        )
    return paired


def _absent(names: list[str], where: str) -> SourceError:
    listed = ", ".join(repr(name) for name in names)
    plural = "s" if len(names) > 1 else ""
    return SourceError(ErrorKind.BAD_QUERY, f"column{plural} {listed} not in {where}", retryable=False)


def _not_applicable(name: str, kind: ColumnKind, test: StatTest) -> SourceError:
    kind_name = "numeric" if kind is ColumnKind.NUMERIC else "categorical"
    return SourceError(
        ErrorKind.CONFIG,
        f"method {test.value} does not apply to {kind_name} column {name!r}; "
        "list the columns it applies to or use method auto",
        retryable=False,
    )


def evidence(spec: DriftSpec, comparison: Comparison) -> dict[str, Any]:
    result: dict[str, Any] = {
        "method": spec.method.value,
        "columns": {
            score.column: {
                "method": score.test.value,
                "score": finite_or_none(score.score),
                "threshold": score.threshold,
                "drifted": score.drifted,
                "type": score.kind.value,
            }
            for score in comparison.scores
        },
        "drifted_columns": comparison.drifted_columns,
        "reference_rows": comparison.reference_rows,
        "current_rows": comparison.current_rows,
    }
    if comparison.skipped:
        result["skipped_columns"] = dict(comparison.skipped)
    return result
