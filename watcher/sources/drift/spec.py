"""What a drift rule compares, and how: the spec every drift module shares.

Kept apart from the source so the modules that compute drift can import it without importing
the source that calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from watcher.model import DriftMethod


@dataclass(frozen=True)
class SqlRef:
    """Rows from a SQL query; with a window, :window_start / :window_end bound as UTC datetimes."""

    url: str
    query: str
    window: timedelta | None = None
    # Scoped per evaluation (see sources.base.QueryScope): bound as :version, and the earliest
    # :window_start (when the live version went live).
    version: str | None = None
    not_before: datetime | None = None


@dataclass(frozen=True)
class DriftSpec:
    """What one drift rule compares, and how."""

    reference: Path | SqlRef
    current: Path | SqlRef
    columns: tuple[str, ...] | None  # None: every column present in both
    method: DriftMethod
    threshold: float | None  # None: the default threshold of each column's test
    timeout: timedelta
