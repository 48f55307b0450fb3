"""Evidently's per-column drift statistics, with Evidently's numbers, computed the fast way.

Each function reproduces one of Evidently 0.7's stattests (evidently.legacy.calculations.stattests)
operation for operation where the floating-point result depends on it, and replaces only the
parts whose result does not depend on how they are computed:

- The reference side is prepared once (NumericReference, Counts) and cached by the caller:
  sorted values, standard deviation, distinct values and their counts.
- KS and Wasserstein need the empirical CDFs of both samples on the merged sample. scipy sorts
  both samples, then binary-searches all 2N points in each (O(N log N) twice, cache-unfriendly).
  Here the reference is sorted already, the current sample is sorted once, and the two sorted runs
  are merged by a stable argsort (timsort merges two runs in linear time); the count of reference
  points at or below each merged point is a running sum. At the last point of every group of equal
  values that count equals scipy's searchsorted(..., 'right'); elsewhere inside a group the
  Wasserstein interval is empty (its term is exactly 0.0 in both computations) and KS looks only at
  group ends. The arrays fed to the final max / dot product are therefore the same numbers scipy
  computes, and so are the results.
- Histogram counts of the reference come from binary searches of its sorted values against the
  bin edges, which is exactly how numpy.histogram counts with explicit edges.

This module imports numpy, pandas and scipy: import it only when a drift rule runs.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats
from scipy.spatial import distance

FloatArray = npt.NDArray[np.float64]

# scipy.stats.ks_2samp computes an exact p-value when neither sample is larger than this
# (its MAX_AUTO_N); above it uses the asymptotic distribution, which is what we reproduce.
KS_EXACT_MAX_ROWS = 10_000
# Evidently bins numeric columns into a Sturges histogram only when the reference has more than
# this many distinct values; otherwise it compares the frequencies of the values themselves.
HISTOGRAM_MIN_DISTINCT = 20
# Evidently divides the Wasserstein distance by the reference's standard deviation, at least this.
WASSERSTEIN_MIN_NORM = 0.001


@dataclass(frozen=True, eq=False)
class Counts:
    """How often each distinct non-missing value occurs.

    `values` keeps the order of first appearance, as pandas' unique() does: Evidently builds its
    list of categories from sets of those values, and the order of a set depends on the order its
    elements were added.
    """

    values: tuple[Hashable, ...]
    counts: Mapping[Hashable, int]
    total: int


@dataclass(frozen=True, eq=False)
class NumericReference:
    """Everything the numeric statistics need from one cleaned reference column."""

    sorted_values: FloatArray
    dtype: np.dtype[Any]
    std_norm: float  # max(np.std(column), 0.001), as Evidently's Wasserstein normalisation
    distinct: int
    counts: Counts | None  # kept only when the column has few distinct values

    @property
    def rows(self) -> int:
        return int(self.sorted_values.shape[0])

    @property
    def minimum(self) -> float:
        return float(self.sorted_values[0])

    @property
    def maximum(self) -> float:
        return float(self.sorted_values[-1])


class NumericCurrent:
    """One cleaned current column; its sorted copy is made once and only when a method needs it."""

    def __init__(self, column: pd.Series[Any]) -> None:
        self.column = column
        self.values: FloatArray = column.to_numpy(dtype=np.float64)
        self.dtype: np.dtype[Any] = column.dtype
        self._sorted: FloatArray | None = None
        self._counts: Counts | None = None

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def sorted_values(self) -> FloatArray:
        if self._sorted is None:
            self._sorted = np.sort(self.values)
        return self._sorted

    @property
    def counts(self) -> Counts:
        if self._counts is None:
            self._counts = count_values(self.column)
        return self._counts


def count_values(column: pd.Series[Any]) -> Counts:
    """Distinct non-missing values in order of appearance, with their counts (one hash pass)."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    present = codes[codes >= 0]
    frequencies = np.bincount(present, minlength=len(uniques))
    values = tuple(uniques.tolist())
    return Counts(
        values=values,
        counts={value: int(count) for value, count in zip(values, frequencies, strict=True)},
        total=int(present.shape[0]),
    )


def prepare_numeric(column: pd.Series[Any]) -> NumericReference:
    """Prepare a reference column that has been cleaned of NaN and infinities (and is not empty)."""
    values = column.to_numpy(dtype=np.float64)
    sorted_values = np.sort(values)
    distinct = 1 + int(np.count_nonzero(sorted_values[1:] != sorted_values[:-1]))
    return NumericReference(
        sorted_values=sorted_values,
        dtype=column.dtype,
        # np.std of the pandas column in its original order: pandas' own nanstd, same summation.
        std_norm=max(float(np.std(column)), WASSERSTEIN_MIN_NORM),
        distinct=distinct,
        counts=count_values(column) if distinct <= HISTOGRAM_MIN_DISTINCT else None,
    )


# --- KS and Wasserstein on the merged sample -----------------------------------------------------


@dataclass(frozen=True)
class _Merged:
    values: FloatArray  # both samples, sorted
    reference_seen: npt.NDArray[np.integer[Any]]  # reference points at or before each position
    spare: FloatArray  # a scratch buffer of the same length, free for the caller


def _merge(reference: NumericReference, current: NumericCurrent) -> _Merged:
    both = np.concatenate((reference.sorted_values, current.sorted_values))
    order = np.argsort(both, kind="stable")
    count_type = np.int32 if both.shape[0] < np.iinfo(np.int32).max else np.int64
    seen: npt.NDArray[np.integer[Any]] = np.cumsum(order < reference.rows, dtype=count_type)
    return _Merged(values=np.take(both, order), reference_seen=seen, spare=both)


def ks_pvalue(reference: NumericReference, current: NumericCurrent) -> float:
    """Evidently's "ks": scipy.stats.ks_2samp(reference, current).pvalue, two-sided."""
    n1, n2 = reference.rows, current.rows
    if max(n1, n2) <= KS_EXACT_MAX_ROWS:
        # The exact distribution is scipy's own private code; small samples cost nothing anyway.
        return float(stats.ks_2samp(reference.sorted_values, current.values).pvalue)
    merged = _merge(reference, current)
    cdf_differences = _cdf_differences_at_group_ends(merged, n1, n2)
    max_s = float(cdf_differences.max())
    min_s = float(np.clip(-cdf_differences.min(), 0, 1))
    statistic = min_s if min_s > max_s else max_s
    larger, smaller = sorted([float(n1), float(n2)], reverse=True)
    effective_n = larger * smaller / (larger + smaller)
    return float(np.clip(stats.kstwo.sf(statistic, np.round(effective_n)), 0, 1))


def _cdf_differences_at_group_ends(merged: _Merged, n1: int, n2: int) -> FloatArray:
    """cdf1 - cdf2 at the last point of each group of equal values, as scipy's cddiffs there.

    Continuous data has no ties: then every point ends its group and no indexing is needed.
    """
    values = merged.values
    group_ends = np.not_equal(values[1:], values[:-1])
    if group_ends.all():
        seen_by_reference = merged.reference_seen
        seen_by_current = np.arange(1, values.shape[0] + 1, dtype=seen_by_reference.dtype)
    else:
        group_ends = np.append(group_ends, True)
        seen_by_reference = merged.reference_seen[group_ends]
        seen_by_current = (np.flatnonzero(group_ends) + 1).astype(seen_by_reference.dtype)
    np.subtract(seen_by_current, seen_by_reference, out=seen_by_current)
    size = seen_by_reference.shape[0]
    # The merged values and the scratch buffer are spent: the CDFs go there.
    reference_cdf = np.divide(seen_by_reference, n1, out=merged.spare[:size])
    current_cdf = np.divide(seen_by_current, n2, out=values[:size])
    differences: FloatArray = np.subtract(reference_cdf, current_cdf, out=reference_cdf)
    return differences


def wasserstein_normed(reference: NumericReference, current: NumericCurrent) -> float:
    """Evidently's "wasserstein": wasserstein_distance(reference, current) / max(std(reference), 0.001).

    scipy computes sum(|U/n1 - V/n2| * deltas) over the merged sample; the same arrays are built
    here in place, in reused buffers (fresh 16 MB arrays cost page faults).
    """
    merged = _merge(reference, current)
    values, seen_by_reference = merged.values, merged.reference_seen[:-1]
    deltas = np.subtract(values[1:], values[:-1], out=merged.spare[:-1])
    seen_by_current = np.arange(1, values.shape[0], dtype=seen_by_reference.dtype)
    np.subtract(seen_by_current, seen_by_reference, out=seen_by_current)
    reference_cdf = np.divide(seen_by_reference, reference.rows)
    current_cdf = np.divide(seen_by_current, current.rows, out=values[:-1])  # values are spent
    np.subtract(reference_cdf, current_cdf, out=reference_cdf)
    np.abs(reference_cdf, out=reference_cdf)
    return _vecdot(reference_cdf, deltas) / reference.std_norm


def _vecdot(left: FloatArray, right: FloatArray) -> float:
    # scipy sums with np.vecdot on numpy 2 (np.dot before); the same call gives the same rounding.
    vecdot = getattr(np, "vecdot", None)
    return float(vecdot(left, right) if vecdot is not None else np.dot(left, right))


# --- histograms and frequencies (PSI, Jensen-Shannon) ---------------------------------------------


def binned_percents(
    reference: NumericReference | Counts,
    current: NumericCurrent | Counts,
    fill_zeroes: bool,
) -> tuple[FloatArray, FloatArray]:
    """Evidently's get_binned_data: shares per Sturges bin (numeric, many values) or per value."""
    if isinstance(reference, NumericReference) and isinstance(current, NumericCurrent):
        if reference.distinct > HISTOGRAM_MIN_DISTINCT:
            ref_percents, cur_percents = _histogram_percents(reference, current)
        else:
            assert reference.counts is not None  # kept whenever distinct <= the histogram limit
            ref_percents, cur_percents = _value_percents(reference.counts, current.counts)
    elif isinstance(reference, Counts) and isinstance(current, Counts):
        ref_percents, cur_percents = _value_percents(reference, current)
    else:
        raise TypeError("reference and current must both be numeric or both be counts")
    if fill_zeroes:
        _fill_zeroes(ref_percents)
        _fill_zeroes(cur_percents)
    return ref_percents, cur_percents


def _histogram_percents(
    reference: NumericReference, current: NumericCurrent
) -> tuple[FloatArray, FloatArray]:
    edges = sturges_edges(reference, current)
    # numpy.histogram with explicit edges counts by searchsorted on sorted data, last edge inclusive.
    cumulative = np.concatenate(
        (
            reference.sorted_values.searchsorted(edges[:-1], "left"),
            reference.sorted_values.searchsorted(edges[-1:], "right"),
        )
    )
    ref_counts = np.diff(cumulative)
    cur_counts = np.histogram(current.values, edges)[0]
    return ref_counts / reference.rows, cur_counts / current.rows


def sturges_edges(reference: NumericReference, current: NumericCurrent) -> FloatArray:
    """np.histogram_bin_edges(concat(reference, current), bins="sturges"), without the concat."""
    # pandas.concat of the two columns gives this dtype; numpy works out the edges in it.
    combined = np.result_type(reference.dtype, current.dtype)
    low = combined.type(min(reference.minimum, float(current.values.min())))
    high = combined.type(max(reference.maximum, float(current.values.max())))
    size = reference.rows + current.rows
    width = _unsigned_subtract(high, low) / (np.log2(size) + 1.0)
    first_edge, last_edge = (low - 0.5, high + 0.5) if low == high else (low, high)
    if width:
        if np.issubdtype(combined, np.integer) and width < 1:
            width = 1
        bins = int(np.ceil(_unsigned_subtract(last_edge, first_edge) / width))
    else:
        bins = 1
    bin_type = np.result_type(first_edge, last_edge, combined)
    if np.issubdtype(bin_type, np.integer):
        bin_type = np.result_type(bin_type, float)
    edges: FloatArray = np.linspace(first_edge, last_edge, bins + 1, endpoint=True, dtype=bin_type)
    return edges


def _unsigned_subtract(high: Any, low: Any) -> Any:
    # numpy's histogram helper: integer ranges are subtracted as unsigned so they cannot overflow.
    unsigned = {
        np.byte: np.ubyte,
        np.short: np.ushort,
        np.intc: np.uintc,
        np.int_: np.uint,
        np.longlong: np.ulonglong,
    }
    dtype = np.result_type(high, low)
    target = unsigned.get(dtype.type)
    if target is None:
        return np.subtract(high, low, dtype=dtype)
    return np.subtract(
        np.asarray(high, dtype=dtype), np.asarray(low, dtype=dtype), casting="unsafe", dtype=target
    )


def _category_keys(reference: Counts, current: Counts) -> list[Hashable]:
    # Exactly Evidently's list(set(ref.unique()) | set(cur.unique())), so sums run in its order.
    return list(set(reference.values) | set(current.values))


def _value_percents(reference: Counts, current: Counts) -> tuple[FloatArray, FloatArray]:
    keys = _category_keys(reference, current)
    ref_percents = np.array([reference.counts.get(key, 0) / reference.total for key in keys])
    cur_percents = np.array([current.counts.get(key, 0) / current.total for key in keys])
    return ref_percents, cur_percents


def _fill_zeroes(percents: FloatArray) -> None:
    # Evidently's "feel_zeroes": empty bins get a tiny share so that logarithms stay finite.
    smallest = min(percents[percents != 0])
    np.place(percents, percents == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)


def psi(reference: NumericReference | Counts, current: NumericCurrent | Counts) -> float:
    """Evidently's "psi": population stability index over its bins."""
    ref_percents, cur_percents = binned_percents(reference, current, fill_zeroes=True)
    values = (ref_percents - cur_percents) * np.log(ref_percents / cur_percents)
    return float(np.sum(values))


def jensenshannon(reference: NumericReference | Counts, current: NumericCurrent | Counts) -> float:
    """Evidently's "jensenshannon": scipy's Jensen-Shannon distance (natural log) over its bins."""
    ref_percents, cur_percents = binned_percents(reference, current, fill_zeroes=False)
    return float(distance.jensenshannon(ref_percents, cur_percents, None))


# --- tests on frequencies (chi-square, Z) ----------------------------------------------------------


def chisquare_pvalue(reference: Counts, current: Counts) -> float:
    """Evidently's "chisquare": current frequencies against reference frequencies scaled to size."""
    keys = _category_keys(reference, current)
    scale = current.total / reference.total
    expected = [reference.counts.get(key, 0) * scale for key in keys]
    observed = [current.counts.get(key, 0) for key in keys]
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(stats.chisquare(observed, expected)[1])


def z_pvalue(reference: Counts, current: Counts) -> float:
    """Evidently's "z": two-proportion Z-test on "first value (in sorted order)" against the rest."""
    if len(reference.values) == 1 and len(current.values) == 1 and reference.values[0] == current.values[0]:
        return 1.0
    first = sorted(_category_keys(reference, current))[0]  # type: ignore[type-var]
    n1, n2 = reference.total, current.total
    p1 = float(n1 - reference.counts.get(first, 0)) / n1
    p2 = float(n2 - current.counts.get(first, 0)) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_stat = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
        return float(2 * (1 - stats.norm.cdf(np.abs(z_stat))))


def finite_or_none(value: float) -> float | None:
    """A score for JSON evidence: NaN (e.g. chi-square of a single category) becomes None."""
    return value if math.isfinite(value) else None
