"""The one protocol every source keeps: measure at a time, return a value, no data or an error."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from watcher.model import Measurement


class Source(Protocol):
    def measure(self, at: datetime) -> Measurement:
        """Measure as of `at` (timezone-aware UTC). Expected failures are returned, never raised."""
        ...
