"""Evidently's own HTML drift report for one evaluation of a drift rule.

The report is built by Evidently (Report + DataDriftPreset) from the same rows, columns, column
types, method and threshold that the evaluation used, so what it shows agrees with the incident's
evidence. Evidently is imported here and nowhere else in the daemon: importing it takes seconds
and hundreds of megabytes, paid only when a report is asked for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from watcher.model import DriftMethod, ErrorKind, NoData, SourceError
from watcher.sources.drift import data as drift_data
from watcher.sources.drift import run as drift_run
from watcher.sources.drift.cache import ReferenceCache
from watcher.sources.drift.columns import ColumnKind
from watcher.sources.drift.spec import DriftSpec, SqlRef


def render(spec: DriftSpec, at: datetime, cache: ReferenceCache) -> str | NoData | SourceError:
    current = drift_run.load(spec.current, at, spec)
    if isinstance(current, SourceError):
        return current
    comparison = drift_run.compare(spec, current, at, cache)
    if isinstance(comparison, NoData | SourceError):
        return comparison
    names = [score.column for score in comparison.scores]
    reference = _reference_rows(spec, at, names)
    if isinstance(reference, SourceError):
        return reference
    numeric = [score.column for score in comparison.scores if score.kind is ColumnKind.NUMERIC]
    categorical = [score.column for score in comparison.scores if score.kind is ColumnKind.CATEGORICAL]
    try:
        return evidently_html(
            reference[names], current[names], numeric, categorical, spec.method, spec.threshold
        )
    except ValueError as error:  # Evidently's refusals (e.g. a column it cannot compare)
        return SourceError(ErrorKind.BAD_ANSWER, f"Evidently cannot build the report: {error}", False)


def _reference_rows(spec: DriftSpec, at: datetime, names: list[str]) -> pd.DataFrame | SourceError:
    # The cache keeps statistics, not rows: a report reads the reference again.
    if isinstance(spec.reference, SqlRef):
        return drift_data.read_query(spec.reference, at, spec.timeout)
    return drift_data.read_file(spec.reference, names)


def evidently_html(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    method: DriftMethod,
    threshold: float | None,
) -> str:
    """Evidently's DataDriftPreset report, with the column types given rather than inferred again."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    preset = DataDriftPreset(
        columns=numeric + categorical,
        method=None if method is DriftMethod.AUTO else method.value,
        threshold=threshold,
    )
    snapshot: Any = Report([preset], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    html: str = snapshot.get_html_str(as_iframe=False)
    return html
