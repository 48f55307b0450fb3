"""The one protocol every source keeps: measure at a time, return a value, no data or an error."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from watcher.model import Measurement


class Source(Protocol):
    def measure(self, at: datetime) -> Measurement:
        """Measure as of `at` (timezone-aware UTC). Expected failures are returned, never raised."""
        ...


class SourceBatch(Protocol):
    """Measures several sources of one kind together (one request for many queries)."""

    def measure_many(self, sources: Sequence[Any], at: datetime) -> list[Measurement]:
        """One measurement per source, in order; the same as each source's own `measure(at)`."""
        ...


def measure_together(sources: Sequence[Source], at: datetime) -> list[Measurement]:
    """Every source's measurement at `at`, in order: sources that share a batch are measured by it
    in one go, the others one by one."""
    measurements: list[Measurement | None] = [None] * len(sources)
    batches: dict[int, tuple[SourceBatch, list[int]]] = {}
    for index, source in enumerate(sources):
        batch: SourceBatch | None = getattr(source, "batch", None)
        if batch is None:
            measurements[index] = source.measure(at)
        else:
            batches.setdefault(id(batch), (batch, []))[1].append(index)
    for batch, indexes in batches.values():
        measured = batch.measure_many([sources[index] for index in indexes], at)
        for index, measurement in zip(indexes, measured, strict=True):
            measurements[index] = measurement
    return [measurement for measurement in measurements if measurement is not None]
