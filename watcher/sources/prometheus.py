"""Prometheus as a source: one instant query evaluated at the rule's evaluation time.

One query is one HTTP request bounded by the evaluation timeout: a POST of the form to
/api/v1/query (as Grafana sends it: a batch of a rule file's queries is long, and a URL that long
is refused by many proxies), through a requests session whose urllib3 Retry never retries (the
default of prometheus-api-client, 3 retries with backoff, turned a 1 s timeout into about 10 s),
with a urllib3 Timeout whose `total` covers connecting and waiting for the answer. Prometheus is
also told the same `timeout`, so it abandons the evaluation itself. (urllib3 gives each socket
read what is left of the total when it starts waiting for the answer; only a server trickling its
answer byte by byte could stretch one request past it.)

Answers are read explicitly: one series (or a scalar) is a Value; an empty vector or NaN is
NoData; several series are an error (a rule's query must aggregate to one number); +Inf/-Inf are
an error. Nothing is retried here: the next evaluation is the retry.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ReadTimeoutError
from urllib3.util import Retry, Timeout

from watcher.model import (
    ErrorKind,
    NoData,
    SeriesMeasurement,
    SeriesValues,
    SourceAnswer,
    SourceError,
    Value,
)
from watcher.rules.promql import ParsedQuery, parse_query
from watcher.rules.promql_factor import Member, member_of
from watcher.sources.base import NO_SCOPE, QueryScope, SourceBatch
from watcher.sources.prometheus_query import PreparedQuery, prepare

# Prometheus error texts can be long (they quote the query); keep messages readable.
_MAX_ERROR_TEXT = 500
# How many series to name when a query returns more than one.
_SERIES_SHOWN = 3
# Header values (and their words) at least this long are scrubbed from messages.
_MIN_SECRET = 4


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class InstantVector:
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class Scalar:
    value: float


QueryResult = InstantVector | Scalar


@dataclass(frozen=True)
class _Number:
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


class PrometheusClient:
    """A Prometheus HTTP API client whose instant query takes at most `timeout` and never retries.

    `headers` (often an Authorization bearer token) are sent with every request and never appear
    in an error message.
    """

    def __init__(self, url: str, headers: Mapping[str, str], timeout: timedelta) -> None:
        if timeout <= timedelta(0):
            raise ValueError("timeout must be positive")
        self._url = url.rstrip("/")
        self._display_url = _without_credentials(self._url)
        self._secrets = _secret_fragments(headers, self._url)
        self._timeout = timeout
        session = requests.Session()
        # Per-request environment lookups (proxies, netrc, CA bundle) cost more than the query:
        # resolve them once here. Identity encoding spares both sides gzip on tiny answers.
        session.proxies.update(requests.utils.get_environ_proxies(self._url))
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        session.trust_env = False
        session.headers.update({"Accept-Encoding": "identity", **headers})
        # Retry(0, read=False) is requests' own default: no second try, and a read timeout
        # surfaces as ReadTimeout instead of a generic "max retries exceeded".
        adapter = HTTPAdapter(max_retries=Retry(total=0, read=False, redirect=False))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._session = session
        self._endpoint = f"{self._url}/api/v1/query"

    @property
    def timeout(self) -> timedelta:
        return self._timeout

    @property
    def display_url(self) -> str:
        """The URL without credentials, fit for messages."""
        return self._display_url

    def close(self) -> None:
        self._session.close()

    def instant_query(self, query: str, at: datetime) -> QueryResult | SourceError:
        """Evaluate `query` at `at` (timezone-aware) with one bounded HTTP request."""
        if at.tzinfo is None:
            raise ValueError("evaluation time must be timezone-aware")
        seconds = self._timeout.total_seconds()
        form = {"query": query, "time": f"{at.timestamp():.3f}", "timeout": f"{seconds:.3f}"}
        try:
            # requests hands a urllib3 Timeout through as it is (its stubs only know floats).
            bounded: Any = Timeout(connect=seconds, read=seconds, total=seconds)
            response = self._session.post(self._endpoint, data=form, timeout=bounded)
        except requests.RequestException as error:
            return self._scrubbed(_transport_error(error, self._display_url))
        if response.status_code != 200:
            return self._scrubbed(_http_error(response.status_code, response.content, self._display_url))
        try:
            # From the bytes: the API's JSON is UTF-8, and requests' `.json()` would first guess the
            # body's encoding by reading all of it (most of a large answer's CPU).
            raw = json.loads(response.content)["data"]["result"]
        except (ValueError, KeyError, TypeError) as error:  # requests' JSONDecodeError is a ValueError
            # A 200 whose body is not the API's JSON (a proxy's login page, a wrong path, ...).
            return SourceError(
                ErrorKind.BAD_ANSWER,
                f"{self._display_url} did not answer with Prometheus API JSON ({type(error).__name__})",
                retryable=False,
            )
        return _parse_result(raw)

    def _scrubbed(self, error: SourceError) -> SourceError:
        message = error.message
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return SourceError(error.kind, message, error.retryable)


class PrometheusSource:
    """A rule's `prometheus:` query, with an optional `min_samples` guard.

    The queries are parsed once, here; what is sent is their tree re-printed, the scope's live
    version in place of `{{ version }}` (see prometheus_query): a query that does not parse is a
    BAD_QUERY error and is never sent, nor is a query that needs a version the scope lacks.

    `batch`, when given, measures this source together with the other sources of its client in as
    few requests as possible (see prometheus_batch); `measure` alone always asks on its own.
    """

    def __init__(
        self,
        client: PrometheusClient,
        query: str,
        min_samples_query: str | None = None,
        min_samples: float | None = None,
        batch: SourceBatch | None = None,
        *,
        vector: bool = False,
    ) -> None:
        self._client = client
        # True for a rule built per series: its answer is always one measurement per series.
        self.vector = vector
        self._query = query
        self._min_samples_query = min_samples_query
        self._min_samples = min_samples
        self.batch = batch
        self._parsed = tuple(parse_query(text) for text in self.queries)
        self._prepared: tuple[str | None, tuple[PreparedQuery | SourceError, ...]] | None = None

    def family_member(self) -> Member | None:
        """The query as a member of a family of queries differing in one label's value (see
        rules.promql_factor); None when it cannot be one, or asks a min_samples query too."""
        if len(self._parsed) != 1 or not isinstance(self._parsed[0], ParsedQuery):
            return None
        return member_of(self._parsed[0].expr)

    @property
    def queries(self) -> tuple[str, ...]:
        """The query, then the min_samples query when there is one."""
        if self._min_samples_query is None:
            return (self._query,)
        return (self._query, self._min_samples_query)

    def prepared(self, version: str | None) -> tuple[PreparedQuery | SourceError, ...]:
        """`queries` as they are sent with `version` live, or why each cannot be sent."""
        cached = self._prepared
        if cached is not None and cached[0] == version:
            return cached[1]
        prepared = tuple(prepare(parsed, version) for parsed in self._parsed)
        self._prepared = (version, prepared)  # one assignment: safe to share between threads
        return prepared

    def measure(self, at: datetime, scope: QueryScope = NO_SCOPE) -> SourceAnswer:
        prepared = self.prepared(scope.version)
        answer = self._ask(prepared[0], at)
        if isinstance(answer, SourceError) or len(prepared) == 1:
            return self.measure_answers([answer], at)
        return self.measure_answers([answer, self._ask(prepared[1], at)], at)

    def _ask(self, query: PreparedQuery | SourceError, at: datetime) -> QueryResult | SourceError:
        return query if isinstance(query, SourceError) else self._client.instant_query(query.text, at)

    def measure_answers(self, answers: Sequence[QueryResult | SourceError], at: datetime) -> SourceAnswer:
        """The measurement from the answers to `queries`, in their order (the samples answer may be
        missing when the main query failed). Several series (or a rule built per series) give one
        measurement per series."""
        answer = answers[0]
        if isinstance(answer, SourceError):
            return answer
        if isinstance(answer, InstantVector) and (self.vector or len(answer.samples) > 1):
            return self._per_series(answer, answers[1] if len(answers) > 1 else None, at)
        number = _one_number(answer, "query")
        if isinstance(number, SourceError):
            return number
        samples = self._samples(answers[1] if len(answers) > 1 else None)
        if isinstance(samples, SourceError | NoData):
            return samples
        if isinstance(number, NoData):
            return number
        evidence: dict[str, Any] = {
            "query": self._query,
            "series": dict(number.labels),
            "time": at.isoformat(),
        }
        if self._min_samples_query is not None:
            evidence["samples_query"] = self._min_samples_query
        return Value(value=number.value, samples=samples, labels=number.labels, evidence=evidence)

    def _per_series(
        self, answer: InstantVector, samples_answer: QueryResult | SourceError | None, at: datetime
    ) -> SeriesValues | SourceError:
        """One measurement per series; a min_samples query is matched to each series by labels
        (or, when it answers one number, that number counts for every series)."""
        counts = _samples_by_series(samples_answer) if self._min_samples_query is not None else {}
        if isinstance(counts, SourceError):
            return counts
        series: list[SeriesMeasurement] = []
        for sample in answer.samples:
            labels = dict(sample.labels)
            number = _finite(_Number(sample.value, sample.labels), "query")
            if not isinstance(number, _Number):
                series.append(SeriesMeasurement(labels, number))
                continue
            samples = self._enough(counts.get(_key(labels), counts.get(_ANY_SERIES)))
            if isinstance(samples, NoData):
                series.append(SeriesMeasurement(labels, samples))
                continue
            evidence = {"query": self._query, "series": labels, "time": at.isoformat()}
            value = Value(value=number.value, samples=samples, labels=labels, evidence=evidence)
            series.append(SeriesMeasurement(labels, value))
        return SeriesValues(tuple(series))

    def _enough(self, samples: float | None) -> float | NoData | None:
        if self._min_samples_query is None:
            return None
        found = samples or 0.0
        if self._min_samples is not None and found < self._min_samples:
            return NoData(f"only {found:g} samples, at least {self._min_samples:g} needed")
        return found

    def _samples(self, answer: QueryResult | SourceError | None) -> float | NoData | SourceError | None:
        """How many observations stand behind the value, or NoData when below `min_samples`."""
        if self._min_samples_query is None or answer is None:
            return None
        if isinstance(answer, SourceError):
            return SourceError(answer.kind, f"min_samples query: {answer.message}", answer.retryable)
        number = _one_number(answer, "min_samples query")
        if isinstance(number, SourceError):
            return number
        # No series (or NaN) behind a count means nothing was observed.
        samples = 0.0 if isinstance(number, NoData) else number.value
        if self._min_samples is not None and samples < self._min_samples:
            return NoData(f"only {samples:g} samples, at least {self._min_samples:g} needed")
        return samples


_ANY_SERIES: frozenset[tuple[str, str]] = frozenset({("", "")})


def _key(labels: Mapping[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def _samples_by_series(
    answer: QueryResult | SourceError | None,
) -> dict[frozenset[tuple[str, str]], float] | SourceError:
    """A min_samples answer per series labels; a lone number counts for every series."""
    if answer is None:
        return {}
    if isinstance(answer, SourceError):
        return SourceError(answer.kind, f"min_samples query: {answer.message}", answer.retryable)
    if isinstance(answer, Scalar):
        return {_ANY_SERIES: answer.value}
    if len(answer.samples) == 1 and not answer.samples[0].labels:
        return {_ANY_SERIES: answer.samples[0].value}
    return {_key(sample.labels): sample.value for sample in answer.samples}


def _one_number(result: QueryResult, what: str) -> _Number | NoData | SourceError:
    """The single number a rule's query must produce, or why there is none."""
    if isinstance(result, Scalar):
        return _finite(_Number(result.value), what)
    if not result.samples:
        return NoData(f"{what} returned no series")
    if len(result.samples) > 1:
        shown = ", ".join(_format_labels(s.labels) for s in result.samples[:_SERIES_SHOWN])
        more = ", ..." if len(result.samples) > _SERIES_SHOWN else ""
        return SourceError(
            ErrorKind.BAD_ANSWER,
            f"{what} returned {len(result.samples)} series; aggregate it to one ({shown}{more})",
            retryable=False,
        )
    sample = result.samples[0]
    return _finite(_Number(sample.value, sample.labels), what)


def _finite(number: _Number, what: str) -> _Number | NoData | SourceError:
    if math.isnan(number.value):
        # Typically a ratio of rates over a window without any request: 0/0.
        return NoData(f"{what} returned NaN (a ratio over no events?)")
    if math.isinf(number.value):
        return SourceError(
            ErrorKind.BAD_ANSWER,
            f"{what} returned {'+Inf' if number.value > 0 else '-Inf'} (a division by zero?)",
            retryable=False,
        )
    return number


def _parse_result(raw: Any) -> QueryResult | SourceError:
    """Read `data.result` of an instant query, which the library returns without its type."""
    bad = SourceError(ErrorKind.BAD_ANSWER, "unexpected query result shape", retryable=False)
    if not isinstance(raw, list):
        return bad
    # A scalar result is [<time>, "<value>"]; a vector is a list of {"metric", "value"} objects.
    if len(raw) == 2 and isinstance(raw[0], int | float) and isinstance(raw[1], str):
        value = _float(raw[1])
        return bad if value is None else Scalar(value)
    samples: list[Sample] = []
    for item in raw:
        if not isinstance(item, dict) or "value" not in item:
            kind = "a range vector" if isinstance(item, dict) and "values" in item else "not a vector"
            return SourceError(
                ErrorKind.BAD_ANSWER, f"query result is {kind}; an instant vector is needed", False
            )
        value = _float(item["value"][1]) if _is_pair(item["value"]) else None
        if value is None:
            return bad
        labels = {str(k): str(v) for k, v in dict(item.get("metric", {})).items()}
        samples.append(Sample(labels, value))
    return InstantVector(tuple(samples))


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2


def _float(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _http_error(status: int, body: bytes, where: str) -> SourceError:
    """Map a non-200 answer to an error, keeping Prometheus' own explanation."""
    error_type, text = _api_error(body)
    detail = text or _short(body.decode("utf-8", "replace")) or "no explanation"
    if status in (400, 422):
        # bad_data: the query does not parse or is invalid; execution: it cannot be evaluated.
        return SourceError(ErrorKind.BAD_QUERY, f"Prometheus rejected the query: {detail}", False)
    if status == 503 and error_type == "timeout":
        return SourceError(ErrorKind.TIMEOUT, f"Prometheus timed out: {detail}", True)
    if status in (401, 403, 404):
        return SourceError(
            ErrorKind.CONFIG, f"{where} answered HTTP {status}: check the URL and headers", False
        )
    if status == 429 or status >= 500:
        return SourceError(ErrorKind.UNREACHABLE, f"{where} answered HTTP {status}: {detail}", True)
    return SourceError(ErrorKind.BAD_ANSWER, f"{where} answered HTTP {status}: {detail}", False)


def _api_error(body: bytes) -> tuple[str, str]:
    """errorType and error of a Prometheus API error body; empty strings when it is not one."""
    try:
        document = json.loads(body)
    except ValueError:
        return "", ""
    if not isinstance(document, dict):
        return "", ""
    return str(document.get("errorType", "")), _short(str(document.get("error", "")))


def _transport_error(error: requests.RequestException, where: str) -> SourceError:
    if isinstance(
        error,
        requests.exceptions.InvalidURL
        | requests.exceptions.MissingSchema
        | requests.exceptions.InvalidSchema,
    ):
        return SourceError(ErrorKind.CONFIG, f"bad Prometheus URL {where}: {type(error).__name__}", False)
    cause = _root_cause(error)
    if isinstance(error, requests.Timeout) or isinstance(cause, TimeoutError | ReadTimeoutError):
        return SourceError(ErrorKind.TIMEOUT, f"{where} did not answer in time", retryable=True)
    return SourceError(ErrorKind.UNREACHABLE, f"cannot reach {where}: {_describe(cause)}", True)


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception (urllib3 wraps the socket error in one or two layers)."""
    seen: set[int] = set()
    current = error
    while id(current) not in seen:
        seen.add(id(current))
        inner: BaseException | None = None
        if isinstance(current, MaxRetryError) and current.reason is not None:
            inner = current.reason
        elif current.args and isinstance(current.args[0], BaseException):
            inner = current.args[0]
        else:
            inner = current.__cause__ or current.__context__
        if inner is None:
            break
        current = inner
    return current


def _describe(cause: BaseException) -> str:
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    # urllib3 messages start with the connection object's repr; the useful part is at the end.
    return _short(str(cause).rsplit(": ", 1)[-1]) or type(cause).__name__


def _format_labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MAX_ERROR_TEXT else text[:_MAX_ERROR_TEXT] + "..."


def _without_credentials(url: str) -> str:
    """The URL with any user:password@ and query string removed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _secret_fragments(headers: Mapping[str, str], url: str) -> Sequence[str]:
    """Texts that must never reach a message: header values, their tokens, the URL's password."""
    fragments: set[str] = set()
    for value in headers.values():
        # "Bearer <token>": a server may echo the token alone, so each word counts too. Words this
        # short ("Bearer" aside) are not secrets, and scrubbing them would mangle every message.
        fragments.update(part for part in [value, *value.split()] if len(part) >= _MIN_SECRET)
    password = urlsplit(url).password
    if password:
        fragments.add(password)
    # Longest first, so a whole value is replaced before any of its parts.
    return sorted(fragments, key=len, reverse=True)
