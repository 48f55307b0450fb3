"""Per-column drift: which columns, of which type, by which test, drifted or not; as Evidently.

Column types follow Evidently 0.7's inference from the *current* data (evidently.core.datasets.
infer_column_type; its Report takes the data definition from the current dataset): floats are
numeric; integers are categorical with at most 10 distinct values, numeric otherwise; booleans,
pandas categories and strings are categorical. Where Evidently would say "text" (strings, more
than half of them distinct) watcher does not run Evidently's text-content classifier: such a
column is left out when no columns are listed, and compared as categorical when it is listed.

The automatic choice, thresholds and drift conditions are those of Evidently's stattests registry
(_get_default_stattest and each StatTest's default_threshold and comparison).

This module imports numpy and pandas: import it only when a drift rule runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from watcher.model import DriftMethod
from watcher.sources.drift import stats as drift_stats
from watcher.sources.drift.stats import Counts, NumericCurrent, NumericReference

# Evidently: an integer column with at most this many distinct values is categorical.
INTEGER_CARDINALITY_LIMIT = 10
# Evidently's automatic choice: references with more rows than this use distances
# (Wasserstein, Jensen-Shannon), smaller ones use tests (KS, chi-square, Z).
SMALL_REFERENCE_ROWS = 1000
# Evidently's automatic choice: numeric columns with at most this many distinct values (both
# samples together) are compared like categories.
FEW_NUMERIC_VALUES = 5
# Enough leading values to prove an integer column has many distinct values without hashing it all.
_INTEGER_PROBE_ROWS = 4096


class ColumnKind(StrEnum):
    NUMERIC = "num"
    CATEGORICAL = "cat"


@dataclass(frozen=True)
class Unsupported:
    """A column drift cannot be measured on (a timestamp, free text, lists, ...)."""

    reason: str


class StatTest(StrEnum):
    """Evidently's stattest names; `auto` picks among them per column."""

    KS = "ks"
    PSI = "psi"
    WASSERSTEIN = "wasserstein"
    JENSENSHANNON = "jensenshannon"
    CHISQUARE = "chisquare"
    Z = "z"

    @property
    def default_threshold(self) -> float:
        return 0.05 if self in _P_VALUE_TESTS else 0.1

    def drifted(self, score: float, threshold: float) -> bool:
        # Each Evidently stattest has its own comparison; KS alone counts p == threshold as drift.
        if self is StatTest.KS:
            return score <= threshold
        if self in _P_VALUE_TESTS:
            return score < threshold
        return score >= threshold

    def applies_to(self, kind: ColumnKind) -> bool:
        return kind in _APPLIES_TO[self]


_P_VALUE_TESTS = frozenset({StatTest.KS, StatTest.CHISQUARE, StatTest.Z})
_APPLIES_TO = {
    StatTest.KS: {ColumnKind.NUMERIC},
    StatTest.WASSERSTEIN: {ColumnKind.NUMERIC},
    StatTest.PSI: {ColumnKind.NUMERIC, ColumnKind.CATEGORICAL},
    StatTest.JENSENSHANNON: {ColumnKind.NUMERIC, ColumnKind.CATEGORICAL},
    StatTest.CHISQUARE: {ColumnKind.CATEGORICAL},
    StatTest.Z: {ColumnKind.CATEGORICAL},
}


@dataclass(frozen=True)
class ColumnScore:
    column: str
    kind: ColumnKind
    test: StatTest
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class NotApplicable:
    """The configured method cannot compare a column of this type (Evidently refuses it too)."""

    column: str
    kind: ColumnKind
    test: StatTest


@dataclass(frozen=True)
class EmptyColumn:
    """No value left in a column once missing values and infinities are dropped."""

    column: str


# --- column types ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurrentColumn:
    """A current column with its Evidently type; the counts of a categorical one, made once."""

    name: str
    values: pd.Series[Any]
    kind: ColumnKind
    counts: Counts | None = None


def inspect_current(name: str, column: pd.Series[Any], listed: bool) -> CurrentColumn | Unsupported:
    """Evidently's type for a current column; `listed`: the rule names it explicitly."""
    dtype_name = column.dtype.name
    if dtype_name.startswith("float"):
        return CurrentColumn(name, column, ColumnKind.NUMERIC)
    if dtype_name.startswith("int"):
        kind = ColumnKind.NUMERIC if _has_many_values(column) else ColumnKind.CATEGORICAL
        return CurrentColumn(name, column, kind)
    if dtype_name in ("bool", "category"):
        return CurrentColumn(name, column, ColumnKind.CATEGORICAL)
    if dtype_name in ("string", "str") or (dtype_name == "object" and _holds_strings(column)):
        counts = drift_stats.count_values(column)
        if not listed and len(counts.values) > counts.total * 0.5:
            return Unsupported("free text (more than half of its values are distinct)")
        return CurrentColumn(name, column, ColumnKind.CATEGORICAL, counts)
    return Unsupported(f"values of type {dtype_name} are neither numeric nor categorical")


def _has_many_values(column: pd.Series[Any]) -> bool:
    head = column.iloc[:_INTEGER_PROBE_ROWS]
    if head.nunique() > INTEGER_CARDINALITY_LIMIT:
        return True
    return bool(column.nunique() > INTEGER_CARDINALITY_LIMIT)


def _holds_strings(column: pd.Series[Any]) -> bool:
    """Evidently's test: the first and the last non-missing values are strings."""
    if not len(column):
        return False
    first, last = column.iloc[0], column.iloc[-1]
    if isinstance(first, str) and isinstance(last, str):
        return True  # strings are never missing, so these are the first and last present values
    present = column.dropna()
    return bool(len(present)) and isinstance(present.iloc[0], str) and isinstance(present.iloc[-1], str)


# --- cleaning and preparing -----------------------------------------------------------------------


def clean_numeric(column: pd.Series[Any]) -> pd.Series[Any]:
    """Evidently's column.replace([-inf, inf], nan).dropna(), without a copy when nothing is dropped."""
    finite = np.isfinite(column.to_numpy(dtype=np.float64))
    return column if finite.all() else column[finite]


def prepare_reference(column: pd.Series[Any], kind: ColumnKind) -> NumericReference | Counts | str:
    """The cached form of one reference column, or why it cannot be compared."""
    if kind is ColumnKind.CATEGORICAL:
        counts = drift_stats.count_values(column)
        return counts if counts.total else "has no values in the reference"
    if not pd.api.types.is_numeric_dtype(column.dtype):
        return f"is numeric in the current data but holds {column.dtype.name} values in the reference"
    cleaned = clean_numeric(column)
    return drift_stats.prepare_numeric(cleaned) if len(cleaned) else "has no values in the reference"


# --- choosing and running the test ----------------------------------------------------------------


def choose_test(
    method: DriftMethod, reference: NumericReference | Counts, current: NumericCurrent | Counts
) -> StatTest:
    """The configured test, or Evidently's automatic choice for this column."""
    if method is not DriftMethod.AUTO:
        return StatTest(method.value)
    small = _rows(reference) <= SMALL_REFERENCE_ROWS
    if isinstance(reference, NumericReference) and isinstance(current, NumericCurrent):
        if reference.distinct > FEW_NUMERIC_VALUES:
            return StatTest.KS if small else StatTest.WASSERSTEIN
        assert reference.counts is not None  # few distinct values: the counts are kept
        distinct = _distinct_together(reference.counts, current.counts)
        if distinct > FEW_NUMERIC_VALUES:
            return StatTest.KS if small else StatTest.WASSERSTEIN
        if not small:
            return StatTest.JENSENSHANNON
        return StatTest.CHISQUARE if distinct > 2 else StatTest.Z
    if not small:
        return StatTest.JENSENSHANNON
    assert isinstance(reference, Counts) and isinstance(current, Counts)
    return StatTest.CHISQUARE if _distinct_together(reference, current) > 2 else StatTest.Z


def _rows(reference: NumericReference | Counts) -> int:
    return reference.rows if isinstance(reference, NumericReference) else reference.total


def _distinct_together(reference: Counts, current: Counts) -> int:
    return len(set(reference.values) | set(current.values))


def score_column(
    column: CurrentColumn,
    reference: NumericReference | Counts,
    method: DriftMethod,
    threshold: float | None,
) -> ColumnScore | NotApplicable | EmptyColumn:
    """Compare one current column with its prepared reference (prepared for the same kind)."""
    name, kind = column.name, column.kind
    current: NumericCurrent | Counts
    if kind is ColumnKind.NUMERIC:
        cleaned = clean_numeric(column.values)
        if not len(cleaned):
            return EmptyColumn(name)
        current = NumericCurrent(cleaned)
    else:
        current = column.counts or drift_stats.count_values(column.values)
        if not current.total:
            return EmptyColumn(name)
    test = choose_test(method, reference, current)
    if method is not DriftMethod.AUTO and not test.applies_to(kind):
        return NotApplicable(name, kind, test)
    score = _run(test, reference, current)
    limit = test.default_threshold if threshold is None else threshold
    return ColumnScore(name, kind, test, score, limit, test.drifted(score, limit))


def _run(test: StatTest, reference: NumericReference | Counts, current: NumericCurrent | Counts) -> float:
    if isinstance(reference, NumericReference) and isinstance(current, NumericCurrent):
        if test in _ON_VALUES:
            return _ON_VALUES[test](reference, current)
        if test in _ON_BINS:
            return _ON_BINS[test](reference, current)
        # Automatic choice on a numeric column with few values: compare their frequencies.
        assert reference.counts is not None
        return _ON_COUNTS[test](reference.counts, current.counts)
    assert isinstance(reference, Counts) and isinstance(current, Counts)
    if test in _ON_BINS:
        return _ON_BINS[test](reference, current)
    return _ON_COUNTS[test](reference, current)


_ON_VALUES: dict[StatTest, Callable[[NumericReference, NumericCurrent], float]] = {
    StatTest.KS: drift_stats.ks_pvalue,
    StatTest.WASSERSTEIN: drift_stats.wasserstein_normed,
}
_ON_BINS: dict[StatTest, Callable[[Any, Any], float]] = {
    StatTest.PSI: drift_stats.psi,
    StatTest.JENSENSHANNON: drift_stats.jensenshannon,
}
_ON_COUNTS: dict[StatTest, Callable[[Counts, Counts], float]] = {
    StatTest.CHISQUARE: drift_stats.chisquare_pvalue,
    StatTest.Z: drift_stats.z_pvalue,
}
