"""The one protocol every source keeps: measure at a time, return a value, no data or an error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from watcher.model import SourceAnswer


@dataclass(frozen=True)
class QueryScope:
    """What a query may know of its target's version (SPEC.md section 2, "The live version in a
    query"): the live version, bound as `{{ version }}` in PromQL and `:version` in SQL, and when it
    went live, which SQL and drift windows never reach before (None: live since before watcher
    first looked)."""

    version: str | None = None
    live_since: datetime | None = None

    def clip(self, window_start: datetime) -> datetime:
        """`:window_start`, never earlier than the moment the live version went live."""
        return window_start if self.live_since is None else max(window_start, self.live_since)


NO_SCOPE = QueryScope()


class Source(Protocol):
    def measure(self, at: datetime, scope: QueryScope = NO_SCOPE) -> SourceAnswer:
        """Measure as of `at` (timezone-aware UTC) within `scope`. Expected failures are returned,
        never raised."""
        ...


class SourceBatch(Protocol):
    """Measures several sources of one kind together (one request for many queries)."""

    def measure_many(
        self, sources: Sequence[Any], at: datetime, scopes: Sequence[QueryScope] | None = None
    ) -> list[SourceAnswer]:
        """One measurement per source, in order; the same as each source's own
        `measure(at, scope)`."""
        ...


def measure_together(
    sources: Sequence[Source], at: datetime, scopes: Sequence[QueryScope] | None = None
) -> list[SourceAnswer]:
    """Every source's measurement at `at`, in order: sources that share a batch are measured by it
    in one go, the others one by one, each within its scope."""
    measurements: list[SourceAnswer | None] = [None] * len(sources)
    batches: dict[int, tuple[SourceBatch, list[int]]] = {}
    for index, source in enumerate(sources):
        batch: SourceBatch | None = getattr(source, "batch", None)
        if batch is None:
            scope = scopes[index] if scopes is not None else NO_SCOPE
            measurements[index] = source.measure(at, scope)
        else:
            batches.setdefault(id(batch), (batch, []))[1].append(index)
    for batch, indexes in batches.values():
        batch_scopes = [scopes[index] if scopes is not None else NO_SCOPE for index in indexes]
        measured = batch.measure_many([sources[index] for index in indexes], at, batch_scopes)
        for index, measurement in zip(indexes, measured, strict=True):
            measurements[index] = measurement
    return [measurement for measurement in measurements if measurement is not None]
