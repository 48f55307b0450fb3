"""PromQL history for a replay: range queries through prometheus-api-client, answered back one
moment at a time as the instant queries the daemon would have made.

A range query evaluates its query at start, start+step, ..., end; at each of those moments its
answer is exactly the instant query's. So each distinct (query, step) is asked once per chunk of
at most 11,000 points (Prometheus refuses more points per series), the chunks in parallel, and a
rule's source then reads the answer at its moment through its own `measure_answers`: the same
parsing, NaN, empty vector and min_samples handling as live.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests
from urllib3.util import Retry

from watcher.backtest.clock import TimeRange, moments
from watcher.logs import redact
from watcher.model import ErrorKind, Measurement, SourceAnswer, SourceError
from watcher.sources.prometheus import InstantVector, PrometheusSource, QueryResult, Sample

MAX_POINTS = 11_000  # Prometheus' limit of points per series in one range query
WORKERS = 4
# A range query reads far more than an instant one: give it more than the evaluation timeout.
MIN_RANGE_TIMEOUT = timedelta(seconds=30)
_EMPTY = InstantVector(())

Answer = QueryResult | SourceError
SeriesKey = tuple[str, int]  # (query, step in seconds)


@dataclass(frozen=True)
class Chunk:
    key: SeriesKey
    start: datetime
    end: datetime


def chunks_for(key: SeriesKey, window: TimeRange) -> list[Chunk]:
    """The range queries that cover `window` at the key's step, each under MAX_POINTS."""
    grid = moments(window, key[1])
    return [
        Chunk(key, grid[index], grid[min(index + MAX_POINTS, len(grid)) - 1])
        for index in range(0, len(grid), MAX_POINTS)
    ]


class RangeFetcher:
    """Fetches and keeps the range answers of a replay; `requests_made` counts HTTP requests."""

    def __init__(self, url: str, headers: Mapping[str, str], timeout: timedelta) -> None:
        from prometheus_api_client import PrometheusConnect

        self._timeout = max(timeout, MIN_RANGE_TIMEOUT).total_seconds()
        self._secrets = sorted((v for v in headers.values() if len(v) >= 4), key=len, reverse=True)
        # One retry on a refused connection or a gateway error; never on a read timeout (the
        # library's default of three with backoff turns one slow answer into minutes).
        retry = Retry(
            total=1, connect=1, read=0, status=1, backoff_factor=0.5, status_forcelist=(502, 503, 504)
        )
        self._client = PrometheusConnect(
            url=url, headers=dict(headers) or None, retry=retry, timeout=math.ceil(self._timeout)
        )
        self._data: dict[SeriesKey, dict[int, list[Sample]] | SourceError] = {}
        self._lock = threading.Lock()
        self.requests_made = 0

    def fetch(self, keys: Iterable[SeriesKey], window: TimeRange) -> None:
        """Fetch every key not fetched yet over `window`."""
        wanted = [key for key in dict.fromkeys(keys) if key not in self._data]
        chunks = [chunk for key in wanted for chunk in chunks_for(key, window)]
        for key in wanted:
            self._data[key] = {}
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for chunk, answer in zip(chunks, pool.map(self._ask, chunks), strict=True):
                self._keep(chunk.key, answer)

    def failure(self, key: SeriesKey) -> SourceError | None:
        data = self._data.get(key)
        return data if isinstance(data, SourceError) else None

    def answer(self, key: SeriesKey, at: datetime) -> Answer:
        data = self._data.get(key)
        if data is None:
            return SourceError(ErrorKind.CONFIG, f"no history fetched for {key[0]!r}", False)
        if isinstance(data, SourceError):
            return data
        samples = data.get(int(at.timestamp()))
        return _EMPTY if samples is None else InstantVector(tuple(samples))

    def _ask(self, chunk: Chunk) -> list[Any] | SourceError:
        with self._lock:
            self.requests_made += 1
        try:
            result: list[Any] = self._client.custom_query_range(
                chunk.key[0],
                start_time=chunk.start,
                end_time=chunk.end,
                step=f"{chunk.key[1]}s",
                params={"timeout": f"{self._timeout:g}s"},
            )
            return result
        except requests.RequestException as error:
            kind = ErrorKind.TIMEOUT if isinstance(error, requests.Timeout) else ErrorKind.UNREACHABLE
            return SourceError(kind, self._scrub(f"Prometheus: {type(error).__name__}"), True)
        except Exception as error:  # the library's PrometheusApiClientException: a non-200 answer
            return SourceError(ErrorKind.BAD_QUERY, self._scrub(_api_message(str(error))), False)

    def _keep(self, key: SeriesKey, answer: list[Any] | SourceError) -> None:
        data = self._data[key]
        if isinstance(data, SourceError):
            return
        if isinstance(answer, SourceError):
            self._data[key] = answer
            return
        for series in answer:
            labels = {str(k): str(v) for k, v in dict(series.get("metric", {})).items()}
            for moment, text in series.get("values", []):
                data.setdefault(round(float(moment)), []).append(Sample(labels, float(text)))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact(text)


def _api_message(text: str) -> str:
    """Prometheus' own explanation out of the library's 'HTTP Status Code 400 (b'{...}')'."""
    found = re.search(r'"error"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
    status = re.search(r"HTTP Status Code (\d+)", text)
    detail = found.group(1) if found else text[:300]
    return f"Prometheus answered HTTP {status.group(1) if status else '?'}: {detail}"


Guard = Callable[[Any], SourceError | None]  # a reason a source cannot be judged now, or None


class HistoryBatch:
    """The SourceBatch of a replay's Prometheus rules of one step: answers from the fetched history."""

    def __init__(self, fetcher: RangeFetcher, step: int, guard: Guard) -> None:
        self.fetcher = fetcher
        self.step = step
        self.guard = guard

    def keys(self, source: PrometheusSource) -> list[SeriesKey]:
        return [(query, self.step) for query in source.queries]

    def measure_many(self, sources: Sequence[PrometheusSource], at: datetime, *_: Any) -> list[SourceAnswer]:
        return [self._measure(source, at) for source in sources]

    def _measure(self, source: PrometheusSource, at: datetime) -> SourceAnswer:
        blocked = self.guard(source)
        if blocked is not None:
            return blocked
        return source.measure_answers([self.fetcher.answer(key, at) for key in self.keys(source)], at)


class GuardedSource:
    """A SQL or drift source measured as usual unless the guard says its data cannot be judged."""

    def __init__(self, inner: Any, guard: Guard) -> None:
        self.inner = inner
        self.guard = guard

    def measure(self, at: datetime, *scope: Any) -> Measurement:
        blocked = self.guard(self.inner)
        if blocked is not None:
            return blocked
        measured: Measurement = self.inner.measure(at, *scope)
        return measured

    def render_report(self, at: datetime) -> Any:
        return getattr(self.inner, "render_report", lambda _at: None)(at)
