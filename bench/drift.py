"""How fast watcher's drift check is, against Evidently and against bare scipy/numpy.

    .venv/bin/python bench/drift.py                   # auto, 1M rows x 20 columns
    .venv/bin/python bench/drift.py --method psi
    .venv/bin/python bench/drift.py --method all      # every method in turn (several minutes)
    .venv/bin/python bench/drift.py --rows 200000     # quicker

Data: a reference and a current frame of --rows rows each, 14 numeric and 6 categorical columns,
fixed seed; the current frame is shifted in 5 numeric and 2 categorical columns. The reference is
a Parquet file, as a rule would name it; the current frame is in memory, as Evidently gets it.

Printed, all measured in one run:
- watcher cold: the first evaluation, reading and preparing the reference;
- watcher steady: an evaluation with the reference cached (best of 3), on the in-memory current
  frame; also DriftSource.measure() reading the current frame from a Parquet file;
- Evidently: a Report of one ValueDrift per column with the same method (Evidently's own
  computation of the same scores; DataDriftPreset would compute every score twice);
- bare scipy/numpy: the straightforward calls for the same statistics on both frames (best of 2);
- peak memory during a cold and a steady evaluation, traced (tracemalloc: Python and numpy) and as
  the rise of resident memory (which also sees pyarrow reading the reference), against the size
  of the two frames' column buffers (8 bytes per cell; the string objects are not counted, which
  makes the ratio conservative);
- the largest difference between watcher's and Evidently's per-column scores.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

from watcher.model import DriftMethod
from watcher.sources.drift import run as drift_run
from watcher.sources.drift.cache import ReferenceCache
from watcher.sources.drift.source import DriftSource

NUMERIC_COLUMNS = 14
CATEGORICAL_COLUMNS = 6
SHIFTED_NUMERIC = 5
SHIFTED_CATEGORICAL = 2
AT = datetime(2025, 1, 1, tzinfo=UTC)


def make_frames(rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    reference: dict[str, Any] = {}
    current: dict[str, Any] = {}
    for i in range(NUMERIC_COLUMNS):
        shift = 0.15 if i < SHIFTED_NUMERIC else 0.0
        draw = _numeric_draws[i % len(_numeric_draws)]
        reference[f"num_{i:02d}"] = draw(rng, rows, 0.0)
        current[f"num_{i:02d}"] = draw(rng, rows, shift)
    for i in range(CATEGORICAL_COLUMNS):
        categories = np.array([f"cat{i}_{k}" for k in range(3 + 9 * i)], dtype=object)
        weights = rng.dirichlet(np.ones(len(categories)) * 5)
        shifted = rng.dirichlet(np.ones(len(categories)) * 5) if i < SHIFTED_CATEGORICAL else weights
        reference[f"cat_{i}"] = categories[rng.choice(len(categories), rows, p=weights)]
        current[f"cat_{i}"] = categories[rng.choice(len(categories), rows, p=shifted)]
    return pd.DataFrame(reference), pd.DataFrame(current)


_numeric_draws: list[Callable[[np.random.Generator, int, float], Any]] = [
    lambda rng, n, shift: rng.normal(shift, 1.0, n),
    lambda rng, n, shift: rng.exponential(1.0 + shift, n),
    lambda rng, n, shift: rng.lognormal(shift, 0.5, n),
    lambda rng, n, shift: rng.uniform(shift, 1.0 + shift, n),
]


def columns_for(method: DriftMethod, frame: pd.DataFrame) -> list[str]:
    numeric = [name for name in frame.columns if name.startswith("num_")]
    categorical = [name for name in frame.columns if name.startswith("cat_")]
    if method in (DriftMethod.KS, DriftMethod.WASSERSTEIN):
        return numeric
    if method is DriftMethod.CHISQUARE:
        return categorical
    return numeric + categorical


# --- the three contenders -------------------------------------------------------------------------


def watcher_check(source: DriftSource, current: pd.DataFrame, cache: ReferenceCache) -> drift_run.Comparison:
    result = drift_run.compare(source.spec, current, AT, cache)
    assert isinstance(result, drift_run.Comparison), result
    return result


def evidently_scores(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], method: DriftMethod
) -> dict[str, float]:
    from evidently import Report
    from evidently.metrics import ValueDrift

    name = None if method is DriftMethod.AUTO else method.value
    snapshot = Report([ValueDrift(column=column, method=name) for column in columns]).run(
        current[columns], reference[columns]
    )
    return {metric["config"]["column"]: float(metric["value"]) for metric in snapshot.dict()["metrics"]}


def bare_scores(reference: pd.DataFrame, current: pd.DataFrame, tests: dict[str, str]) -> dict[str, float]:
    """The straightforward scipy/numpy calls, per column, for the test watcher used on it."""
    scores: dict[str, float] = {}
    for column, test in tests.items():
        ref, cur = reference[column], current[column]
        if ref.dtype == object:
            scores[column] = _bare_categorical(ref, cur, test)
        else:
            scores[column] = _bare_numeric(ref.to_numpy(), cur.to_numpy(), test)
    return scores


def _bare_numeric(ref: Any, cur: Any, test: str) -> float:
    if test == "ks":
        return float(stats.ks_2samp(ref, cur).pvalue)
    if test == "wasserstein":
        return float(stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
    ref_share = np.histogram(ref, edges)[0] / len(ref)
    cur_share = np.histogram(cur, edges)[0] / len(cur)
    return _bare_binned(ref_share, cur_share, test)


def _bare_categorical(ref: pd.Series[Any], cur: pd.Series[Any], test: str) -> float:
    ref_counts, cur_counts = ref.value_counts(), cur.value_counts()
    keys = ref_counts.index.union(cur_counts.index)
    ref_counts = ref_counts.reindex(keys, fill_value=0).to_numpy()
    cur_counts = cur_counts.reindex(keys, fill_value=0).to_numpy()
    if test == "chisquare":
        return float(stats.chisquare(cur_counts, ref_counts * (len(cur) / len(ref))).pvalue)
    return _bare_binned(ref_counts / len(ref), cur_counts / len(cur), test)


def _bare_binned(ref_share: Any, cur_share: Any, test: str) -> float:
    if test == "jensenshannon":
        return float(distance.jensenshannon(ref_share, cur_share))
    ref_share = np.where(ref_share == 0, 0.0001, ref_share)
    cur_share = np.where(cur_share == 0, 0.0001, cur_share)
    return float(np.sum((ref_share - cur_share) * np.log(ref_share / cur_share)))


# --- measuring ------------------------------------------------------------------------------------


@dataclass
class Figures:
    method: str
    columns: int
    tests: str
    share: float
    difference: float  # max |watcher - Evidently| over the columns
    cold: float
    steady: float
    measure: float  # DriftSource.measure(), reading the current Parquet file too
    evidently: float
    bare: float
    frames: int  # bytes of the two frames' column buffers
    traced_cold: int
    traced_steady: int
    rss_cold: int
    rss_steady: int


def best_time(action: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def peak_traced(action: Callable[[], object]) -> int:
    """Peak of Python and numpy allocations (tracemalloc) while `action` runs."""
    gc.collect()
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def peak_rss_increase(action: Callable[[], object]) -> int:
    """Peak resident memory above the level before `action`, sampled every 2 ms.

    Counts what tracemalloc cannot see (pyarrow's buffers while a Parquet file is read).
    """
    gc.collect()
    page = os.sysconf("SC_PAGE_SIZE")
    statm = Path("/proc/self/statm")

    def resident() -> int:
        return int(statm.read_text().split()[1]) * page

    before, peak, done = resident(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident())
            done.wait(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        action()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], resident()) - before


def return_freed_memory_to_the_system() -> None:
    """Make resident memory follow live memory, so that its rise measures a peak.

    glibc keeps freed blocks for reuse and raises its mmap threshold after large frees, and
    pyarrow's own allocator keeps its pool: either would hide a later peak. Fixed thresholds make
    large arrays mmapped and unmapped on free; pyarrow is pointed at the system allocator.
    """
    import ctypes

    import pyarrow

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameters from glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 128 * 1024)
    libc.mallopt(m_trim_threshold, 128 * 1024)
    pyarrow.set_memory_pool(pyarrow.system_memory_pool())


def buffer_bytes(frame: pd.DataFrame) -> int:
    return int(frame.memory_usage(index=False, deep=False).sum())


def run_method(
    method: DriftMethod, reference: pd.DataFrame, current: pd.DataFrame, files: tuple[Path, Path]
) -> Figures:
    columns = columns_for(method, current)
    cache = ReferenceCache()
    source = DriftSource(files[0], files[1], columns, method, None, timedelta(minutes=5), cache=cache)
    print(f"\n== method {method.value}: {len(columns)} columns x {len(current):,} rows ==", flush=True)

    cold = best_time(lambda: watcher_check(source, current, cache), 1)
    reads = cache.reads
    steady = best_time(lambda: watcher_check(source, current, cache), 3)
    measure = best_time(lambda: source.measure(AT), 1)
    assert cache.reads == reads, "a steady-state evaluation read the reference again"
    comparison = watcher_check(source, current, cache)
    tests = {score.column: score.test.value for score in comparison.scores}

    started = time.perf_counter()
    theirs = evidently_scores(reference, current, columns, method)
    evidently = time.perf_counter() - started
    bare = best_time(lambda: bare_scores(reference, current, tests), 2)

    ours = {score.column: score.score for score in comparison.scores}
    used = sorted(set(tests.values()))
    figures = Figures(
        method=method.value,
        columns=len(columns),
        tests=", ".join(f"{test} x{list(tests.values()).count(test)}" for test in used),
        share=comparison.share,
        difference=max(abs(ours[name] - theirs[name]) for name in columns),
        cold=cold,
        steady=steady,
        measure=measure,
        evidently=evidently,
        bare=bare,
        frames=buffer_bytes(reference[columns]) + buffer_bytes(current[columns]),
        traced_cold=peak_traced(lambda: watcher_check(source, current, ReferenceCache())),
        traced_steady=peak_traced(lambda: watcher_check(source, current, cache)),
        rss_cold=peak_rss_increase(lambda: watcher_check(source, current, ReferenceCache())),
        rss_steady=peak_rss_increase(lambda: watcher_check(source, current, cache)),
    )
    print_figures(figures, comparison.drifted_columns)
    return figures


def print_figures(f: Figures, drifted: list[str]) -> None:
    mib = 1024 * 1024
    lines = [
        ("tests used", f.tests),
        ("share of drifted columns", f"{f.share:.3f} ({', '.join(drifted)})"),
        ("max |watcher - Evidently|", f"{f.difference:.3g}"),
        ("watcher cold (reads ref)", f"{f.cold * 1000:9.1f} ms"),
        ("watcher steady (cached)", f"{f.steady * 1000:9.1f} ms"),
        ("watcher measure() + file", f"{f.measure * 1000:9.1f} ms  (steady, reading the current Parquet)"),
        ("Evidently (ValueDrift)", f"{f.evidently * 1000:9.1f} ms  -> {f.evidently / f.steady:.1f}x watcher"),
        ("bare scipy/numpy", f"{f.bare * 1000:9.1f} ms  -> watcher is {f.steady / f.bare:.2f}x bare"),
        ("frames (column buffers)", f"{f.frames / mib:9.1f} MiB (reference + current)"),
        ("peak traced cold/steady", _memory(f.traced_cold, f.traced_steady, f.frames)),
        ("peak RSS rise cold/steady", _memory(f.rss_cold, f.rss_steady, f.frames)),
    ]
    for label, text in lines:
        print(f"{label + ':':28s}{text}")


def _memory(cold: int, steady: int, frames: int) -> str:
    mib = 1024 * 1024
    return (
        f"{cold / mib:9.1f} / {steady / mib:.1f} MiB  -> {cold / frames:.2f}x / {steady / frames:.2f}x frames"
    )


def print_summary(rows: list[Figures]) -> None:
    print("\n== summary (times in ms; ratios measured in this run) ==")
    print(
        f"{'method':14s}{'cold':>9s}{'steady':>9s}{'Evidently':>11s}{'bare':>9s}"
        f"{'Ev/watcher':>12s}{'watcher/bare':>14s}{'peak/frames':>13s}{'max diff':>10s}"
    )
    for f in rows:
        peak = max(f.traced_cold, f.rss_cold) / f.frames
        print(
            f"{f.method:14s}{f.cold * 1000:9.0f}{f.steady * 1000:9.0f}{f.evidently * 1000:11.0f}"
            f"{f.bare * 1000:9.0f}{f.evidently / f.steady:11.1f}x{f.steady / f.bare:13.2f}x"
            f"{peak:12.2f}x{f.difference:10.2g}"
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20250101)
    parser.add_argument("--method", default="auto", choices=[m.value for m in DriftMethod] + ["all"])
    options = parser.parse_args(argv)
    return_freed_memory_to_the_system()
    methods = list(DriftMethod) if options.method == "all" else [DriftMethod(options.method)]

    started = time.perf_counter()
    reference, current = make_frames(options.rows, options.seed)
    print(
        f"generated {options.rows:,} rows x {reference.shape[1]} columns twice in "
        f"{time.perf_counter() - started:.1f} s"
    )
    started = time.perf_counter()
    import evidently  # noqa: F401  (its import is not part of its computation)

    print(f"imported Evidently in {time.perf_counter() - started:.1f} s")
    evidently_scores(reference.head(2000), current.head(2000), ["num_00", "cat_0"], DriftMethod.AUTO)
    with tempfile.TemporaryDirectory() as directory:
        files = (Path(directory) / "reference.parquet", Path(directory) / "current.parquet")
        reference.to_parquet(files[0])
        current.to_parquet(files[1])
        rows = [run_method(method, reference, current, files) for method in methods]
    print_summary(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
