"""The reference side of drift rules, read once and kept in the form the statistics need.

A reference does not change between evaluations, and everything derived from it alone is cached:
sorted numeric values, standard deviation, distinct values, category counts. The raw rows are not
kept (they would double the memory); a column or type not prepared yet is read again.

A reference file is identified by its resolved path and is stale when its modification time or
size changes; a SQL reference by its URL, query and window (a windowed reference therefore moves
with every evaluation and is read each time). Entries for other references are evicted in least
recently used order beyond `max_references`.

This module imports pandas: import it only when a drift rule runs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from watcher.model import SourceError
from watcher.sources.drift import data as drift_data
from watcher.sources.drift.columns import ColumnKind, prepare_reference
from watcher.sources.drift.spec import SqlRef
from watcher.sources.drift.stats import Counts, NumericReference

Prepared = NumericReference | Counts
ColumnKey = tuple[str, ColumnKind]


@dataclass
class _Entry:
    version: Hashable
    columns: tuple[str, ...] | None = None  # every column of the reference, once known
    rows: int | None = None
    prepared: dict[ColumnKey, Prepared] = field(default_factory=dict)
    problems: dict[ColumnKey, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PreparedReference:
    """What one evaluation gets: the reference's columns and row count, the columns it asked for."""

    columns: tuple[str, ...]
    rows: int
    prepared: Mapping[ColumnKey, Prepared]
    problems: Mapping[ColumnKey, str]  # e.g. a column with no values, or not numeric


class ReferenceCache:
    """Thread-safe: rules evaluated in parallel may share references."""

    def __init__(self, max_references: int = 8) -> None:
        self._max_references = max_references
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._locks: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self.reads = 0  # how many times reference data was read; tests and benchmarks watch it

    def get(
        self,
        source: Path | SqlRef,
        at: datetime,
        wanted: Mapping[str, ColumnKind],
        timeout: timedelta,
    ) -> PreparedReference | SourceError:
        """The reference prepared for the `wanted` columns that it has, reading only if needed."""
        identity, version = _identify(source, at)
        if isinstance(version, SourceError):
            return version
        with self._lock_for(identity):
            entry = self._entry(identity, version)
            filled = self._fill(entry, source, at, wanted, timeout)
            if isinstance(filled, SourceError):
                return filled
            assert entry.columns is not None and entry.rows is not None
            return PreparedReference(
                columns=entry.columns,
                rows=entry.rows,
                prepared={key: entry.prepared[key] for key in wanted.items() if key in entry.prepared},
                problems={key: entry.problems[key] for key in wanted.items() if key in entry.problems},
            )

    def _lock_for(self, identity: Hashable) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(identity, threading.Lock())

    def _entry(self, identity: Hashable, version: Hashable) -> _Entry:
        with self._lock:
            entry = self._entries.get(identity)
            if entry is None or entry.version != version:
                entry = _Entry(version=version)
                self._entries[identity] = entry
            self._entries.move_to_end(identity)
            while len(self._entries) > self._max_references:
                evicted, _ = self._entries.popitem(last=False)
                self._locks.pop(evicted, None)
            return entry

    def _fill(
        self,
        entry: _Entry,
        source: Path | SqlRef,
        at: datetime,
        wanted: Mapping[str, ColumnKind],
        timeout: timedelta,
    ) -> SourceError | None:
        if entry.columns is None and isinstance(source, Path):
            names = drift_data.file_columns(source)
            if isinstance(names, SourceError):
                return names
            entry.columns = names
        missing = _missing(entry, wanted)
        if entry.columns is not None and entry.rows is not None and not missing:
            return None
        frame = self._read(source, at, _columns_to_read(entry, missing), timeout)
        if isinstance(frame, SourceError):
            return frame
        if entry.columns is None:
            entry.columns = tuple(str(name) for name in frame.columns)
        entry.rows = len(frame)
        for key in _missing(entry, wanted):
            _prepare(entry, key, frame)
        return None

    def _read(
        self, source: Path | SqlRef, at: datetime, columns: list[str] | None, timeout: timedelta
    ) -> pd.DataFrame | SourceError:
        """Files: only the columns still to prepare. Queries: all their rows and columns."""
        with self._lock:
            self.reads += 1
        if isinstance(source, Path):
            return drift_data.read_file(source, columns)
        return drift_data.read_query(source, at, timeout)


def _identify(source: Path | SqlRef, at: datetime) -> tuple[Hashable, Hashable | SourceError]:
    if isinstance(source, Path):
        return ("file", str(source.resolve())), drift_data.file_version(source)
    window = drift_data.window_for(source, at)
    bounds = (window.start, window.end) if window is not None else None
    return ("sql", source.url, source.query, bounds), ()


def _columns_to_read(entry: _Entry, missing: list[ColumnKey]) -> list[str] | None:
    if missing:
        return sorted({name for name, _ in missing})
    # Nothing to prepare, but the row count is unknown: one column is enough to count rows.
    return list(entry.columns[:1]) if entry.columns else None


def _missing(entry: _Entry, wanted: Mapping[str, ColumnKind]) -> list[ColumnKey]:
    known = entry.columns
    return [
        key
        for key in wanted.items()
        if (known is None or key[0] in known) and key not in entry.prepared and key not in entry.problems
    ]


def _prepare(entry: _Entry, key: ColumnKey, frame: pd.DataFrame) -> None:
    name, kind = key
    if name not in frame.columns:
        entry.problems[key] = "is not in the reference"
        return
    prepared = prepare_reference(frame[name], kind)
    if isinstance(prepared, str):
        entry.problems[key] = prepared
    else:
        entry.prepared[key] = prepared


shared_cache = ReferenceCache()
