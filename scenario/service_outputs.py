"""What the scripted model service leaves behind: Prometheus metrics and analytics rows.

Metrics are written by hand in the text exposition format (no client library needed), one series
per model version. Rows go to SQLite with `ts` as text laid out exactly as sqlite3 binds an aware
UTC datetime, so a rule's `ts >= :window_start` compares like with like.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from scenario.simulation import Request, Status, Verdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def format_ts(at: datetime) -> str:
    """UTC as `YYYY-MM-DD HH:MM:SS.ffffff+00:00`: what sqlite3 (and SQLAlchemy over it) binds for an
    aware UTC datetime, so `ts >= :window_start` compares text with text in the same layout."""
    return at.astimezone(UTC).isoformat(" ", timespec="microseconds")


class _VersionSeries:
    def __init__(self) -> None:
        self.buckets = [0] * len(BUCKETS)  # per bucket, not cumulative; rendered cumulative
        self.latency_sum = 0.0
        self.count = 0
        self.requests = {status: 0 for status in Status}
        self.feedback = {verdict: 0 for verdict in Verdict}


class Metrics:
    """Counters per version, rendered in the Prometheus text exposition format."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._lock = threading.Lock()
        self._series: dict[str, _VersionSeries] = {}

    def ensure_version(self, version: str) -> None:
        # Series exist at zero from the moment a version serves, so rate() sees their start.
        with self._lock:
            self._series.setdefault(version, _VersionSeries())

    def observe(self, request: Request) -> None:
        with self._lock:
            series = self._series.setdefault(request.version, _VersionSeries())
            for index, bound in enumerate(BUCKETS):
                if request.latency_s <= bound:
                    series.buckets[index] += 1
                    break
            series.latency_sum += request.latency_s
            series.count += 1
            series.requests[request.status] += 1
            if request.verdict is not None:
                series.feedback[request.verdict] += 1

    def render(self) -> str:
        with self._lock:
            versions = sorted(self._series.items(), key=lambda item: item[0])
            lines = [
                "# HELP model_request_seconds Time taken to answer one prediction request.",
                "# TYPE model_request_seconds histogram",
            ]
            for version, series in versions:
                lines.extend(self._histogram_lines(version, series))
            lines += [
                "# HELP model_requests_total Prediction requests answered, by status.",
                "# TYPE model_requests_total counter",
            ]
            for version, series in versions:
                for status, count in series.requests.items():
                    lines.append(f'model_requests_total{{{self._labels(version)},status="{status}"}} {count}')
            lines += [
                "# HELP model_feedback_total User feedback on predictions, by verdict.",
                "# TYPE model_feedback_total counter",
            ]
            for version, series in versions:
                for verdict, count in series.feedback.items():
                    lines.append(
                        f'model_feedback_total{{{self._labels(version)},verdict="{verdict}"}} {count}'
                    )
        return "\n".join(lines) + "\n"

    def _labels(self, version: str) -> str:
        return f'model="{self._model}",version="{version}"'

    def _histogram_lines(self, version: str, series: _VersionSeries) -> list[str]:
        labels = self._labels(version)
        lines = []
        cumulative = 0
        for bound, count in zip(BUCKETS, series.buckets, strict=True):
            cumulative += count
            lines.append(f'model_request_seconds_bucket{{{labels},le="{bound}"}} {cumulative}')
        lines.append(f'model_request_seconds_bucket{{{labels},le="+Inf"}} {series.count}')
        lines.append(f"model_request_seconds_sum{{{labels}}} {series.latency_sum:.6f}")
        lines.append(f"model_request_seconds_count{{{labels}}} {series.count}")
        return lines


_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions
    (request_id TEXT, model TEXT, version TEXT, ts TEXT, predicted INTEGER);
CREATE TABLE IF NOT EXISTS labels (request_id TEXT, label INTEGER);
CREATE TABLE IF NOT EXISTS features
    (ts TEXT, amount REAL, merchant_category TEXT, hour INTEGER, country TEXT);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
CREATE INDEX IF NOT EXISTS labels_request ON labels (request_id);
CREATE INDEX IF NOT EXISTS features_ts ON features (ts);
"""


class AnalyticsDb:
    """The analytics tables the SQL and drift rules read; written by one thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(path, check_same_thread=False)
        # WAL: the watcher reads while the service writes, neither blocks the other.
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.executescript(_SCHEMA)

    def record(
        self, model: str, requests: Sequence[tuple[Request, datetime]], labels: Sequence[tuple[str, int]]
    ) -> None:
        predictions = [
            (r.request_id, model, r.version, format_ts(at), r.predicted)
            for r, at in requests
            if r.predicted is not None
        ]
        features = [
            (
                format_ts(at),
                r.features.amount,
                r.features.merchant_category,
                r.features.hour,
                r.features.country,
            )
            for r, at in requests
        ]
        with self._connection:
            self._connection.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?)", predictions)
            self._connection.executemany("INSERT INTO features VALUES (?, ?, ?, ?, ?)", features)
            self._connection.executemany("INSERT INTO labels VALUES (?, ?)", labels)

    def close(self) -> None:
        self._connection.close()
