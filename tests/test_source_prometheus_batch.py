"""Many rules' queries in one request: the same answers as asking each, against a real Prometheus."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.prometheus import PrometheusServer
from tests.support.slow_server import SlowHttpServer
from tests.test_source_prometheus import (
    ERROR_RATE,
    LATENCY_P99,
    MODEL,
    SAMPLES,
    T0,
    TIMEOUT,
    backfilled,
)
from watcher.model import ErrorKind, NoData, SeriesValues, SourceError, Value
from watcher.ruletest.prometheus import free_port
from watcher.sources.base import QueryScope, measure_together
from watcher.sources.prometheus import PrometheusClient, PrometheusSource
from watcher.sources.prometheus_batch import (
    BATCH_LABEL,
    MAX_BATCH_QUERIES,
    PrometheusBatch,
    chunks,
)

pytestmark = pytest.mark.integration

__all__ = ["backfilled"]  # the module-scoped Prometheus fixture, shared with its source tests

AT = T0 + timedelta(minutes=28)
RAW_SERIES = f"request_seconds_count{{{MODEL}}}"
BY_CODE = f"sum by (code) (rate(requests_total{{{MODEL}}}[5m]))"
IDLE_RATIO = (
    'sum(rate(requests_total{model="idle",code="500"}[5m])) / sum(rate(requests_total{model="idle"}[5m]))'
)
MISSING = "sum(rate(no_such_metric_total[5m]))"
SCALAR = f"scalar(sum(rate(requests_total{{{MODEL}}}[5m])))"
BROKEN = "sum(rate(requests_total[5m]"
# Parses, but Prometheus refuses to evaluate it: both series get the same labels.
DUPLICATES = f'label_replace(requests_total{{{MODEL}}}, "code", "x", "", "")'
COMMENTED = f"sum(rate(requests_total{{{MODEL}}}[5m]))  # requests per second"

Counter = Callable[[], int]


def counting(client: PrometheusClient) -> Counter:
    """Count the requests a real client sends (it still sends them)."""
    calls = [0]
    real = client.instant_query

    def instant_query(query: str, at: datetime) -> object:
        calls[0] += 1
        return real(query, at)

    client.instant_query = instant_query  # type: ignore[method-assign, assignment]
    return lambda: calls[0]


@pytest.fixture
def client(backfilled: PrometheusServer) -> Iterator[PrometheusClient]:
    client = PrometheusClient(backfilled.url, {}, TIMEOUT)
    yield client
    client.close()


def sources(client: PrometheusClient, batch: PrometheusBatch, *queries: str) -> list[PrometheusSource]:
    return [PrometheusSource(client, query, batch=batch) for query in queries]


def test_a_batch_answers_what_each_query_answers_alone_in_one_request(client: PrometheusClient) -> None:
    batch = PrometheusBatch(client)
    group = [
        *sources(client, batch, LATENCY_P99, ERROR_RATE, RAW_SERIES, BY_CODE, IDLE_RATIO, MISSING, COMMENTED),
        PrometheusSource(client, ERROR_RATE, SAMPLES, 100, batch=batch),
        PrometheusSource(client, ERROR_RATE, SAMPLES, 10_000, batch=batch),
    ]
    alone = [source.measure(AT) for source in group]
    requests = counting(client)

    together = batch.measure_many(group, AT)

    assert together == alone
    assert requests() == 1  # nine rules, seven distinct queries, one request
    kinds = [type(measurement).__name__ for measurement in together]
    assert kinds == [
        *("Value", "Value", "Value", "SeriesValues"),
        *("NoData", "NoData", "Value", "Value", "NoData"),
    ]
    raw = together[2]
    assert isinstance(raw, Value)
    assert BATCH_LABEL not in raw.labels
    assert raw.labels["__name__"] == "request_seconds_count"
    several = together[3]  # one measurement per series: each an instance of its rule
    assert isinstance(several, SeriesValues) and len(several.series) == 2
    assert all(BATCH_LABEL not in item.labels and "code" in item.labels for item in several.series)


def test_a_query_that_does_not_parse_is_never_sent_and_a_scalar_goes_alone(client: PrometheusClient) -> None:
    batch = PrometheusBatch(client)
    group = sources(client, batch, LATENCY_P99, BROKEN, ERROR_RATE, SCALAR)
    alone = [source.measure(AT) for source in group]
    requests = counting(client)

    first = batch.measure_many(group, AT)
    second = batch.measure_many(group, AT)

    assert first == alone == second
    assert isinstance(first[0], Value) and isinstance(first[2], Value) and isinstance(first[3], Value)
    broken = first[1]
    assert isinstance(broken, SourceError) and broken.kind is ErrorKind.BAD_QUERY
    assert "unclosed left parenthesis" in broken.message
    # Each time: the two vectors together, the scalar alone, the broken query never.
    assert requests() == 2 * 2
    assert batch.alone == frozenset()


def test_a_query_failing_in_prometheus_does_not_blind_the_rest_and_then_goes_alone(
    client: PrometheusClient,
) -> None:
    batch = PrometheusBatch(client)
    group = sources(client, batch, LATENCY_P99, DUPLICATES, ERROR_RATE)
    alone = [source.measure(AT) for source in group]
    requests = counting(client)

    first = batch.measure_many(group, AT)
    after_split = requests()
    second = batch.measure_many(group, AT)

    assert first == alone == second
    assert isinstance(first[0], Value) and isinstance(first[2], Value)
    failing = first[1]
    assert isinstance(failing, SourceError) and failing.kind is ErrorKind.BAD_QUERY
    assert after_split == 1 + 3  # the failed batch, then each query on its own
    assert len(batch.alone) == 1
    assert requests() - after_split == 1 + 1  # the two good ones together, the failing one alone


def test_unreachable_prometheus_is_one_request_and_the_same_error_for_all() -> None:
    client = PrometheusClient(f"http://127.0.0.1:{free_port()}", {}, TIMEOUT)
    batch = PrometheusBatch(client)
    requests = counting(client)

    results = batch.measure_many(sources(client, batch, "sum(up)", "sum(a)", "sum(b)"), T0)

    assert requests() == 1
    assert all(isinstance(r, SourceError) and r.kind is ErrorKind.UNREACHABLE for r in results)
    assert batch.alone == frozenset()


def test_a_batch_that_times_out_asks_alone_only_within_one_more_timeout() -> None:
    with SlowHttpServer(delay=30) as slow:
        client = PrometheusClient(slow.url, {}, timedelta(seconds=1))
        batch = PrometheusBatch(client)
        queries = [f"sum(metric_{index})" for index in range(5)]

        results = batch.measure_many(sources(client, batch, *queries), T0)
        received = len(slow.requests)

    assert all(isinstance(r, SourceError) and r.kind is ErrorKind.TIMEOUT for r in results)
    # The batch, then one query alone (it timed out too, and used up the budget); not all five.
    assert 2 <= received < 1 + len(queries)
    assert queries[0] in batch.alone


def test_measure_together_keeps_order_across_batched_and_lone_sources(client: PrometheusClient) -> None:
    batch = PrometheusBatch(client)
    lone = PrometheusSource(client, MISSING)  # no batch: measured on its own
    group = [sources(client, batch, LATENCY_P99)[0], lone, sources(client, batch, ERROR_RATE)[0]]

    results = measure_together(group, AT)

    assert results == [source.measure(AT) for source in group]
    assert isinstance(results[1], NoData)


def test_long_groups_are_split_into_bounded_requests() -> None:
    queries = [f'sum(rate(http_requests_total{{model="model-{index:03d}"}}[5m]))' for index in range(150)]

    runs = chunks(queries)

    assert [query for run in runs for query in run] == queries
    assert [len(run) for run in runs] == [MAX_BATCH_QUERIES, MAX_BATCH_QUERIES, 150 - 2 * MAX_BATCH_QUERIES]
    assert chunks(["a" * 10, "b" * 10, "c" * 10], chars=25) == [["a" * 10, "b" * 10], ["c" * 10]]
    assert chunks(["x" * 100, "y"], chars=25) == [["x" * 100], ["y"]]  # over the limit: it goes alone


# --- no rule can reach another rule's answer -------------------------------------------------------
# The reproduction of the hardening issue: a query that closed its arm of the old text-pasted batch
# and labelled a sibling's result with 999.
FORGER = (
    'vector(0)), "__watcher_query__", "0", "", "") or label_replace((vector(999)), '
    '"__watcher_query__", "1", "", "") or label_replace((vector(0)'
)
FORGERIES = [
    FORGER,
    "vector(1)) or (vector(2)",
    "vector(5) # ) or vector(999",
    'label_replace(vector(999), "__watcher_query__", "1", "", "")',
    f'label_replace(vector(999), "{BATCH_LABEL}", "1", "", "")',
    f'label_replace(vector(999), "{BATCH_LABEL}", "0", "", "")'
    f' or label_replace(vector(998), "{BATCH_LABEL}", "1", "", "")',
    f'label_replace(vector(7), "note", "{BATCH_LABEL}", "", "")',
    f'vector(3) or label_replace((vector(999)), "{BATCH_LABEL}", "1", "", "")',
    f'label_join(vector(4), "{BATCH_LABEL}", ",", "a", "b")',
    f'count_values("{BATCH_LABEL}", vector(2))',
    'sum by (__watcher_query__) (label_replace(vector(9), "__watcher_query__", "1", "", ""))',
    "vector(6) or on() vector(999)",
]
PLAIN = [
    "vector(0)",
    "vector(1)",
    LATENCY_P99,
    ERROR_RATE,
    RAW_SERIES,
    BY_CODE,
    IDLE_RATIO,
    MISSING,
    SCALAR,
    BROKEN,
    COMMENTED,
    DUPLICATES,
    'label_replace(vector(1), "v", {{ version }}, "", "")',
]


def test_a_query_written_to_break_out_of_its_arm_cannot_set_another_rules_value(
    client: PrometheusClient,
) -> None:
    batch = PrometheusBatch(client)
    forger, honest = sources(client, batch, FORGER, "vector(0)")

    measured = batch.measure_many([forger, honest], AT)

    assert isinstance(measured[0], SourceError) and measured[0].kind is ErrorKind.BAD_QUERY
    assert isinstance(measured[1], Value) and measured[1].value == 0


def test_a_label_replace_of_the_routing_label_goes_alone_and_sets_nothing_else(
    client: PrometheusClient,
) -> None:
    batch = PrometheusBatch(client)
    forging = f'label_replace(vector(999), "{BATCH_LABEL}", "1", "", "")'
    group = sources(client, batch, "vector(0)", forging, "vector(1)")
    requests = counting(client)

    measured = batch.measure_many(group, AT)

    assert [m.value if isinstance(m, Value) else m for m in measured] == [0, 999, 1]
    assert requests() == 2  # the two honest ones together, the one naming the label alone


def test_each_rule_gets_the_version_of_its_own_target(client: PrometheusClient) -> None:
    batch = PrometheusBatch(client)
    query = 'label_replace(vector(1), "v", {{ version }}, "", "")'
    group = sources(client, batch, query, query, query)
    versions = ["3", '4"} or vector(999', None]

    measured = batch.measure_many(group, AT, [QueryScope(version=version) for version in versions])

    assert [m.labels for m in measured[:2] if isinstance(m, Value)] == [
        {"v": "3"},
        {"v": '4"} or vector(999'},
    ]
    assert isinstance(measured[2], SourceError) and measured[2].kind is ErrorKind.CONFIG


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    queries=st.lists(st.sampled_from(FORGERIES + PLAIN), min_size=2, max_size=6),
    version=st.sampled_from(["2", '3"} or vector(999) or x{a="', "a\\b\nc"]),
)
def test_a_batch_gives_every_rule_exactly_what_its_own_query_gives_alone(
    client: PrometheusClient, queries: list[str], version: str
) -> None:
    batch = PrometheusBatch(client)
    group = sources(client, batch, *queries)
    scopes = [QueryScope(version=version)] * len(group)

    together = batch.measure_many(group, AT, scopes)

    assert together == [source.measure(AT, scope) for source, scope in zip(group, scopes, strict=True)]


def test_measure_together_hands_each_batched_source_its_own_version(client: PrometheusClient) -> None:
    batch = PrometheusBatch(client)
    query = 'label_replace(vector(1), "v", {{ version }}, "", "")'
    group = sources(client, batch, query, query)

    measured = measure_together(group, AT, [QueryScope(version="2"), QueryScope(version="3")])

    assert [m.labels for m in measured if isinstance(m, Value)] == [{"v": "2"}, {"v": "3"}]
