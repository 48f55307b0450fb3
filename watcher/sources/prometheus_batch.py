"""Many rules' PromQL in one request, as Prometheus evaluates a rule group in one pass.

A group's queries (and their `min_samples` queries) are joined into one instant query:

    label_replace((q0), "<label>", "0", "", "") or label_replace((q1), "<label>", "1", "", "") ...

Each arm is a query re-printed from its parsed tree (watcher.rules.promql), never the text as
written, so it is one complete expression and cannot break out of its parentheses; the combined
query is parsed again and must be exactly that chain of arms before it is sent. `<label>` is
BATCH_LABEL, a name drawn at random per process, so no rule can name it; label_replace overwrites
whatever an arm's own series carry under it, and a query that mentions it is asked alone anyway.
Each arm labels its series with its own index, so `or` keeps them all (no two arms can share a
label set) and the answer splits back into one result per query, the label taken off again. What
each rule then sees is what its own query would have returned: the same series, the same NaN, the
same empty vector. One request for fifty rules instead of fifty is most of the daemon's CPU saved.

A query cannot always share: one that does not parse is never sent (a BAD_QUERY error for its
rule alone); a scalar or other non-vector (label_replace needs a vector) is asked alone; so is a
query that failed or timed out. When the batch fails for a reason one query could cause
(Prometheus rejected it, timed out, or answered oddly), every query is asked on its own, within a
time budget, so that one bad rule never blinds the others; a query that fails or answers a scalar
on its own is asked alone from then on. When Prometheus cannot be reached at all, every query gets
that error: asking fifty times would not help.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from datetime import datetime

from watcher.model import ErrorKind, SourceAnswer, SourceError
from watcher.rules.promql import ResultType
from watcher.sources.base import NO_SCOPE, QueryScope
from watcher.sources.prometheus import (
    InstantVector,
    PrometheusClient,
    PrometheusSource,
    QueryResult,
    Sample,
    Scalar,
)
from watcher.sources.prometheus_batch_proof import proven
from watcher.sources.prometheus_family import Families, spread
from watcher.sources.prometheus_query import PreparedQuery

log = logging.getLogger(__name__)

BATCH_LABEL_PREFIX = "__watcher_query_"
BATCH_LABEL = f"{BATCH_LABEL_PREFIX}{secrets.token_hex(8)}__"
# A batch is one POSTed query; these bound how much one request asks of Prometheus (all of it must
# finish within the evaluation timeout).
MAX_BATCH_QUERIES = 64
MAX_BATCH_CHARS = 256 * 1024
# Failures that one query of the batch could have caused: worth asking each query on its own.
_ISOLATE = frozenset({ErrorKind.BAD_QUERY, ErrorKind.BAD_ANSWER, ErrorKind.TIMEOUT})
# Combined queries already proven, by their arms (groups change only when rules are reloaded).
_MAX_PROVEN = 1024

Answer = QueryResult | SourceError


def labelled_arm(query: str, index: int) -> str:
    # Newlines around the arm keep its re-printed, possibly multi-line text readable in logs.
    return f'label_replace((\n{query}\n), "{BATCH_LABEL}", "{index}", "", "")'


def combined_query(queries: Sequence[str]) -> str:
    return " or ".join(labelled_arm(query, index) for index, query in enumerate(queries))


def split_answer(result: QueryResult, count: int) -> list[InstantVector] | None:
    """One vector per query of the batch, its label removed; None when the answer is not a batch's."""
    if isinstance(result, Scalar):
        return None
    buckets: list[list[Sample]] = [[] for _ in range(count)]
    for sample in result.samples:
        index = sample.labels.get(BATCH_LABEL, "")
        if not index.isdigit() or int(index) >= count:
            return None
        labels = {name: value for name, value in sample.labels.items() if name != BATCH_LABEL}
        buckets[int(index)].append(Sample(labels, sample.value))
    return [InstantVector(tuple(bucket)) for bucket in buckets]


def chunks(
    queries: Sequence[str], most: int = MAX_BATCH_QUERIES, chars: int = MAX_BATCH_CHARS
) -> list[list[str]]:
    """Consecutive runs of at most `most` queries and `chars` characters (a query longer than that
    goes alone)."""
    runs: list[list[str]] = [[]]
    size = 0
    for query in queries:
        if runs[-1] and (len(runs[-1]) >= most or size + len(query) > chars):
            runs.append([])
            size = 0
        runs[-1].append(query)
        size += len(query)
    return [run for run in runs if run]


def shareable(query: PreparedQuery) -> bool:
    """Whether a query may be an arm of a batch: an instant vector that never names the label."""
    return query.result_type is ResultType.VECTOR and BATCH_LABEL not in query.mentions


class PrometheusBatch:
    """Measures many PrometheusSources of one client with as few requests as their queries allow."""

    def __init__(self, client: PrometheusClient) -> None:
        self.client = client
        self._alone: set[str] = set()  # queries asked on their own from now on
        self._proven: dict[tuple[str, ...], str | None] = {}
        self.families = Families()
        self._lock = threading.Lock()

    @property
    def alone(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._alone)

    def measure_many(
        self, sources: Sequence[PrometheusSource], at: datetime, scopes: Sequence[QueryScope] | None = None
    ) -> list[SourceAnswer]:
        """Each source's measurement within its scope (the same as its own `measure(at, scope)`)."""
        versions = [(scopes[index] if scopes else NO_SCOPE).version for index in range(len(sources))]
        prepared = [source.prepared(version) for source, version in zip(sources, versions, strict=True)]
        wanted = {query.text: query for row in prepared for query in row if isinstance(query, PreparedQuery)}
        answers = self.answers(list(wanted.values()), at)
        return [
            source.measure_answers([_answer(query, answers) for query in row], at)
            for source, row in zip(sources, prepared, strict=True)
        ]

    def answers(self, queries: Sequence[PreparedQuery], at: datetime) -> dict[str, Answer]:
        """Every query's answer at `at`, by its text."""
        alone = self.alone
        answers: dict[str, Answer] = {}
        shared = {query.text: query for query in queries if shareable(query) and query.text not in alone}
        pool, families = self.families.form(shared, alone)
        for run in chunks(list(pool)):
            if len(run) == 1:
                answers[run[0]] = self.client.instant_query(run[0], at)
            else:
                answers.update(self._batch_answers([pool[text] for text in run], at))
        spread(families, answers)
        for query in queries:
            if query.text not in shared:
                answers[query.text] = self.client.instant_query(query.text, at)
        return answers

    def _combined(self, queries: list[PreparedQuery]) -> str | None:
        key = tuple(query.text for query in queries)
        with self._lock:
            if key in self._proven:
                return self._proven[key]
        text = combined_query(key)
        checked = text if proven(text, [query.shape for query in queries], BATCH_LABEL) else None
        with self._lock:
            if len(self._proven) >= _MAX_PROVEN:
                self._proven.clear()
            self._proven[key] = checked
        return checked

    def _batch_answers(self, queries: list[PreparedQuery], at: datetime) -> dict[str, Answer]:
        texts = [query.text for query in queries]
        combined = self._combined(queries)
        if combined is None:  # never expected: the arms are re-printed trees
            log.error("a batch of %d queries did not parse back as its arms; asking each", len(queries))
            return {text: self.client.instant_query(text, at) for text in texts}
        result = self.client.instant_query(combined, at)
        if not isinstance(result, SourceError):
            parts = split_answer(result, len(queries))
            if parts is not None:
                return dict(zip(texts, parts, strict=True))
            result = SourceError(ErrorKind.BAD_ANSWER, "a batched query answered without its labels", False)
        if result.kind not in _ISOLATE:
            return dict.fromkeys(texts, result)
        return self._isolate(texts, result, at)

    def _isolate(self, queries: list[str], failure: SourceError, at: datetime) -> dict[str, Answer]:
        """Ask each query of a failed batch on its own, within one timeout's worth of time."""
        deadline = time.monotonic() + self.client.timeout.total_seconds()
        answers: dict[str, Answer] = {}
        culprits: list[str] = []
        out_of_time = False
        for query in queries:
            out_of_time = out_of_time or time.monotonic() > deadline
            if out_of_time:
                answers[query] = failure
                continue
            answer = self.client.instant_query(query, at)
            answers[query] = answer
            if isinstance(answer, SourceError | Scalar):
                culprits.append(query)
        # When every query answered well on its own, the batch itself is the problem (too many
        # samples for one query, say): these go alone rather than fail alike on every evaluation.
        isolated = culprits if culprits or out_of_time else queries
        with self._lock:
            self._alone.update(isolated)
        log.warning(
            "a batched Prometheus query failed (%s); %d of %d queries are asked alone from now on",
            failure.message,
            len(isolated),
            len(queries),
            extra={"event": "batch_split", "alone": len(isolated), "batch": len(queries)},
        )
        return answers


def _answer(query: PreparedQuery | SourceError, answers: dict[str, Answer]) -> Answer:
    return query if isinstance(query, SourceError) else answers[query.text]
