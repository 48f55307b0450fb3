"""Watcher's drift scores, drift flags and share against Evidently's own, on the same data.

Evidently computes through its public Report API (DataDriftPreset, the preset a drift rule
mirrors); watcher through DriftSource reading the same frames from Parquet files. Every score must
agree within 1e-9 (in practice they are identical), every drifted flag and the share exactly, and
with method auto the test Evidently picked for each column must be the one watcher picked.

The data covers what Evidently treats specially: a constant column, a category present only in
the current data, missing values and infinities, numeric columns with few distinct values or many
ties, integer columns (categorical up to 10 distinct values, numeric above), booleans, float32,
and both sides of Evidently's 1000-row boundary (and of scipy's 10000-row exact/asymptotic KS
boundary) for the automatic choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from watcher.model import DriftMethod, Value
from watcher.sources.drift.cache import ReferenceCache
from watcher.sources.drift.source import DriftSource

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TOLERANCE = 1e-9

# Evidently's display names of its tests, as its Report records them under method auto.
EVIDENTLY_TEST_NAMES = {
    "K-S p_value": "ks",
    "PSI": "psi",
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
}

NUMERIC = ["normal", "skewed", "with_missing", "constant", "few_values", "binary", "ties", "int_many", "f32"]
CATEGORICAL = ["color", "new_in_current", "cat_missing", "int_small", "flag", "cat_constant"]
COLUMNS_FOR = {
    DriftMethod.KS: NUMERIC,
    DriftMethod.WASSERSTEIN: NUMERIC,
    DriftMethod.CHISQUARE: CATEGORICAL,
    DriftMethod.PSI: NUMERIC + CATEGORICAL,
    DriftMethod.JENSENSHANNON: NUMERIC + CATEGORICAL,
    DriftMethod.AUTO: NUMERIC + CATEGORICAL,
}
# (reference rows, current rows): under Evidently's 1000-row boundary; over it and over the
# 10000 rows above which scipy's KS p-value is asymptotic.
SMALL = (600, 450)
LARGE = (10_400, 10_150)


def make_frame(rows: int, seed: int, shifted: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    shift = 0.25 if shifted else 0.0
    with_missing = rng.normal(shift, 1, rows)
    with_missing[rng.random(rows) < 0.05] = np.nan
    with_missing[:3] = [np.inf, -np.inf, np.nan]
    colors = ["red", "green", "blue", "black", "white"]
    cat_missing = rng.choice(["x", "y", "z"], rows).astype(object)
    cat_missing[rng.random(rows) < 0.1] = None
    return pd.DataFrame(
        {
            "normal": rng.normal(shift, 1, rows),
            "skewed": rng.exponential(1.0 + shift, rows),
            "with_missing": with_missing,
            "constant": np.full(rows, 3.0),
            "few_values": rng.choice(
                [0.5, 1.5, 2.5], rows, p=[0.2, 0.3, 0.5] if shifted else [0.3, 0.3, 0.4]
            ),
            "binary": rng.choice([0.0, 1.0], rows, p=[0.45, 0.55] if shifted else [0.5, 0.5]),
            "ties": np.round(rng.normal(shift, 1, rows), 1),
            "int_many": rng.integers(0, 100 + (10 if shifted else 0), rows),
            "f32": rng.normal(shift, 2, rows).astype(np.float32),
            "color": rng.choice(colors, rows, p=[0.3, 0.3, 0.2, 0.1, 0.1] if shifted else None).astype(
                object
            ),
            "new_in_current": rng.choice(["a", "b", "c", "d"] if shifted else ["a", "b", "c"], rows).astype(
                object
            ),
            "cat_missing": cat_missing,
            "int_small": rng.integers(0, 5, rows),
            "flag": rng.random(rows) < (0.4 if shifted else 0.5),
            "cat_constant": np.full(rows, "only", dtype=object),
        }
    )


@dataclass(frozen=True)
class Drift:
    scores: dict[str, float]
    drifted: dict[str, bool]
    tests: dict[str, str]
    share: float


def evidently_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str] | None,
    method: DriftMethod,
    threshold: float | None,
) -> Drift:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    preset = DataDriftPreset(
        columns=columns, method=None if method is DriftMethod.AUTO else method.value, threshold=threshold
    )
    result: dict[str, Any] = Report([preset], include_tests=True).run(current, reference).dict()
    values = [metric for metric in result["metrics"] if "column" in metric["config"]]
    checks = [test for test in result["tests"] if "column" in test["metric_config"]["params"]]
    (count,) = [metric for metric in result["metrics"] if "column" not in metric["config"]]
    return Drift(
        scores={metric["config"]["column"]: float(metric["value"]) for metric in values},
        drifted={
            test["metric_config"]["params"]["column"]: str(test["status"]).endswith("FAIL") for test in checks
        },
        tests={
            metric["config"]["column"]: EVIDENTLY_TEST_NAMES.get(
                metric["config"]["method"], metric["config"]["method"]
            )
            for metric in values
        },
        share=float(count["value"]["share"]),
    )


def watcher_drift(
    tmp_path: Path,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str] | None,
    method: DriftMethod,
    threshold: float | None,
) -> tuple[Drift, Value]:
    reference_file, current_file = tmp_path / "reference.parquet", tmp_path / "current.parquet"
    reference.to_parquet(reference_file)
    current.to_parquet(current_file)
    source = DriftSource(
        reference_file,
        current_file,
        columns,
        method,
        threshold,
        timedelta(seconds=30),
        cache=ReferenceCache(),
    )
    value = source.measure(AT)
    assert isinstance(value, Value), value
    per_column = value.evidence["columns"]
    scores = {name: math.nan if c["score"] is None else c["score"] for name, c in per_column.items()}
    drift = Drift(
        scores=scores,
        drifted={name: c["drifted"] for name, c in per_column.items()},
        tests={name: c["method"] for name, c in per_column.items()},
        share=value.value,
    )
    return drift, value


def max_difference(ours: dict[str, float], theirs: dict[str, float]) -> float:
    assert set(ours) == set(theirs)
    worst = 0.0
    for name in ours:
        if math.isnan(ours[name]) or math.isnan(theirs[name]):
            assert math.isnan(ours[name]) and math.isnan(theirs[name]), name
            continue
        worst = max(worst, abs(ours[name] - theirs[name]))
    return worst


def assert_same_drift(ours: Drift, theirs: Drift, label: str) -> None:
    difference = max_difference(ours.scores, theirs.scores)
    print(f"{label}: max |watcher - Evidently| = {difference:.3g} over {len(ours.scores)} columns")
    assert difference <= TOLERANCE, {name: (ours.scores[name], theirs.scores[name]) for name in ours.scores}
    assert ours.drifted == theirs.drifted
    assert ours.tests == theirs.tests
    assert ours.share == theirs.share


@pytest.mark.parametrize("sizes", [SMALL, LARGE], ids=["small", "large"])
@pytest.mark.parametrize("method", list(DriftMethod), ids=[method.value for method in DriftMethod])
def test_scores_flags_and_share_equal_evidently(
    tmp_path: Path, method: DriftMethod, sizes: tuple[int, int]
) -> None:
    reference = make_frame(sizes[0], seed=1, shifted=False)
    current = make_frame(sizes[1], seed=2, shifted=True)
    columns = COLUMNS_FOR[method]
    ours, _ = watcher_drift(tmp_path, reference, current, columns, method, None)
    theirs = evidently_drift(reference, current, columns, method, None)
    assert_same_drift(ours, theirs, f"{method.value} {sizes}")


def test_auto_picks_evidently_tests_on_both_sides_of_1000_rows(tmp_path: Path) -> None:
    picked = {}
    for label, sizes in (("small", SMALL), ("large", LARGE)):
        ours, _ = watcher_drift(
            tmp_path,
            make_frame(sizes[0], 1, False),
            make_frame(sizes[1], 2, True),
            NUMERIC + CATEGORICAL,
            DriftMethod.AUTO,
            None,
        )
        picked[label] = ours.tests
    # Evidently's rules, spelled out: the equality with Evidently itself is checked above.
    assert picked["small"]["normal"] == "ks" and picked["large"]["normal"] == "wasserstein"
    assert picked["small"]["few_values"] == "chisquare" and picked["large"]["few_values"] == "jensenshannon"
    assert picked["small"]["binary"] == "z" and picked["small"]["constant"] == "z"
    assert picked["small"]["color"] == "chisquare" and picked["large"]["color"] == "jensenshannon"
    assert picked["small"]["flag"] == "z"


def test_a_threshold_applies_to_every_column_as_in_evidently(tmp_path: Path) -> None:
    reference, current = make_frame(SMALL[0], 3, False), make_frame(SMALL[1], 4, True)
    ours, value = watcher_drift(tmp_path, reference, current, NUMERIC + CATEGORICAL, DriftMethod.AUTO, 0.2)
    theirs = evidently_drift(reference, current, NUMERIC + CATEGORICAL, DriftMethod.AUTO, 0.2)
    assert_same_drift(ours, theirs, "auto, threshold 0.2")
    assert {column["threshold"] for column in value.evidence["columns"].values()} == {0.2}


def test_without_a_column_list_both_compare_the_same_columns(tmp_path: Path) -> None:
    reference, current = make_frame(LARGE[0], 5, False), make_frame(LARGE[1], 6, True)
    ours, value = watcher_drift(tmp_path, reference, current, None, DriftMethod.AUTO, None)
    theirs = evidently_drift(reference, current, None, DriftMethod.AUTO, None)
    assert_same_drift(ours, theirs, "auto, all columns")
    assert sorted(value.evidence["columns"]) == sorted(NUMERIC + CATEGORICAL)


def test_identical_data_has_no_drift_in_either(tmp_path: Path) -> None:
    frame = make_frame(LARGE[0], 7, False)
    ours, value = watcher_drift(tmp_path, frame, frame, NUMERIC + CATEGORICAL, DriftMethod.AUTO, None)
    theirs = evidently_drift(frame, frame, NUMERIC + CATEGORICAL, DriftMethod.AUTO, None)
    assert_same_drift(ours, theirs, "identical data")
    assert value.value == 0.0 and value.evidence["drifted_columns"] == []


@pytest.mark.parametrize("method", [DriftMethod.KS, DriftMethod.WASSERSTEIN, DriftMethod.PSI])
def test_a_strongly_shifted_numeric_column_drifts_in_both(tmp_path: Path, method: DriftMethod) -> None:
    rng = np.random.default_rng(8)
    reference = pd.DataFrame({"amount": rng.normal(0, 1, 20_000), "hour": rng.integers(0, 24, 20_000)})
    current = pd.DataFrame({"amount": rng.normal(1.5, 1, 12_000), "hour": rng.integers(6, 30, 12_000)})
    ours, value = watcher_drift(tmp_path, reference, current, ["amount", "hour"], method, None)
    theirs = evidently_drift(reference, current, ["amount", "hour"], method, None)
    assert_same_drift(ours, theirs, f"shifted, {method.value}")
    assert value.evidence["drifted_columns"] == ["amount", "hour"] and value.value == 1.0


def _int_range(low: int, high: int, rows: int, dtype: type) -> Any:
    return np.random.default_rng(rows).integers(low, high, rows).astype(dtype)


@pytest.mark.parametrize(
    ("reference", "current"),
    [
        (np.random.default_rng(1).normal(0, 1, 5000), np.random.default_rng(2).normal(3, 1, 4000)),
        (_int_range(0, 500, 3000, np.int64), _int_range(-50, 400, 2000, np.int64)),
        (_int_range(0, 500, 3000, np.int32), _int_range(0, 400, 2000, np.int64)),
        (_int_range(0, 500, 3000, np.int64), np.random.default_rng(3).normal(200, 50, 2000)),
        (np.random.default_rng(4).normal(0, 1, 3000).astype(np.float32), np.full(100, 2.5, np.float32)),
        # Integers 0..20 in over 2**20 values: Sturges' width falls under 1 and numpy raises it to 1.
        (_int_range(0, 21, 1_100_000, np.int64), _int_range(0, 21, 1_000_000, np.int64)),
    ],
    ids=["float", "int", "int32+int64", "int+float", "float32", "int-width-under-1"],
)
def test_sturges_edges_equal_numpy_on_the_concatenated_data(reference: Any, current: Any) -> None:
    from watcher.sources.drift.stats import NumericCurrent, prepare_numeric, sturges_edges

    ours = sturges_edges(prepare_numeric(pd.Series(reference)), NumericCurrent(pd.Series(current)))
    combined = np.asarray(pd.concat([pd.Series(reference), pd.Series(current)]).values)
    theirs = np.histogram_bin_edges(combined, bins="sturges")
    assert ours.dtype == theirs.dtype
    assert np.array_equal(ours, theirs)
