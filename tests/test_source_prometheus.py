"""PrometheusSource against a real Prometheus (backfilled or scraping) and a local HTTP server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import StartPrometheus, start_prometheus_in
from tests.support.prometheus import MetricsExporter, PrometheusServer, Series
from tests.support.slow_server import CannedHttpServer, SlowHttpServer
from watcher.model import ErrorKind, NoData, SeriesValues, SourceAnswer, SourceError, Value
from watcher.ruletest.prometheus import free_port
from watcher.sources.prometheus import PrometheusClient, PrometheusSource

pytestmark = pytest.mark.integration

# Backfilled history: 30 minutes, one point every 30 s. Latency turns bad at T0 + 15m.
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
STEP = timedelta(seconds=30)
POINTS = 61
BAD_FROM = T0 + timedelta(minutes=15)
MODEL = 'model="fraud-detector"'

# Per minute, cumulative per bucket. Healthy: p99 = 0.1 + 0.15 * (99 - 95) / (100 - 95) = 0.22.
# Bad: p99 = 0.25 + 0.25 * (99 - 90) / (100 - 90) = 0.475.
HEALTHY_BUCKETS = {"0.1": 95.0, "0.25": 100.0, "0.5": 100.0, "+Inf": 100.0}
BAD_BUCKETS = {"0.1": 50.0, "0.25": 90.0, "0.5": 100.0, "+Inf": 100.0}

LATENCY_P99 = f"histogram_quantile(0.99, sum by (le) (rate(request_seconds_bucket{{{MODEL}}}[5m])))"
ERROR_RATE = (
    f'sum(rate(requests_total{{{MODEL},code=~"5.."}}[5m])) / sum(rate(requests_total{{{MODEL}}}[5m]))'
)
FEEDBACK_BAD_SHARE = (
    f'sum(rate(feedback_total{{{MODEL},verdict="bad"}}[15m])) / sum(rate(feedback_total{{{MODEL}}}[15m]))'
)
SAMPLES = f"sum(increase(request_seconds_count{{{MODEL}}}[5m]))"
TIMEOUT = timedelta(seconds=5)


def counter(name: str, labels: dict[str, str], per_minute: float, after_bad: float | None = None) -> Series:
    """A counter from 0 at T0 growing `per_minute`, then `after_bad` per minute after BAD_FROM."""
    points: list[tuple[datetime | float, float]] = [(T0, 0.0)]
    for index in range(1, POINTS):
        at = T0 + index * STEP
        rate = per_minute if after_bad is None or at <= BAD_FROM else after_bad
        points.append((at, points[-1][1] + rate * STEP.total_seconds() / 60))
    return Series(name, labels, points)


def history() -> list[Series]:
    model = {"model": "fraud-detector"}
    buckets = [
        counter("request_seconds_bucket", {**model, "le": le}, HEALTHY_BUCKETS[le], BAD_BUCKETS[le])
        for le in HEALTHY_BUCKETS
    ]
    return [
        *buckets,
        counter("request_seconds_count", model, 100.0),
        counter("requests_total", {**model, "code": "200"}, 97.0),
        counter("requests_total", {**model, "code": "500"}, 3.0),
        counter("feedback_total", {**model, "verdict": "good"}, 92.0),
        counter("feedback_total", {**model, "verdict": "bad"}, 8.0),
        # A model that serves nothing: its error ratio is 0 / 0.
        counter("requests_total", {"model": "idle", "code": "200"}, 0.0),
        counter("requests_total", {"model": "idle", "code": "500"}, 0.0),
    ]


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = start_prometheus_in(tmp_path_factory.mktemp("prometheus"), history())
    yield server
    server.kill()


@pytest.fixture(scope="module")
def client(backfilled: PrometheusServer) -> Iterator[PrometheusClient]:
    client = PrometheusClient(backfilled.url, {}, TIMEOUT)
    yield client
    client.close()


def measure(
    client: PrometheusClient,
    query: str,
    at: datetime,
    min_samples_query: str | None = None,
    min_samples: float | None = None,
) -> SourceAnswer:
    return PrometheusSource(client, query, min_samples_query, min_samples).measure(at)


@pytest.mark.parametrize(
    ("at", "expected"),
    [(T0 + timedelta(minutes=10), 0.22), (T0 + timedelta(minutes=28), 0.475)],
    ids=["healthy", "degraded"],
)
def test_latency_quantile_is_evaluated_at_the_given_time(
    client: PrometheusClient, at: datetime, expected: float
) -> None:
    result = measure(client, LATENCY_P99, at)

    assert isinstance(result, Value)
    assert result.value == pytest.approx(expected)
    assert result.evidence["query"] == LATENCY_P99
    assert result.evidence["series"] == {}


def test_error_rate_ratio(client: PrometheusClient) -> None:
    result = measure(client, ERROR_RATE, T0 + timedelta(minutes=20))

    assert isinstance(result, Value)
    assert result.value == pytest.approx(0.03)


def test_feedback_rate_ratio(client: PrometheusClient) -> None:
    result = measure(client, FEEDBACK_BAD_SHARE, T0 + timedelta(minutes=25))

    assert isinstance(result, Value)
    assert result.value == pytest.approx(0.08)


def test_one_series_keeps_its_labels(client: PrometheusClient) -> None:
    query = f'rate(requests_total{{{MODEL},code="500"}}[5m])'
    result = measure(client, query, T0 + timedelta(minutes=20))

    assert isinstance(result, Value)
    assert result.value == pytest.approx(3 / 60)
    # rate() drops the metric name; the other labels stay.
    assert result.labels == {"model": "fraud-detector", "code": "500"}
    assert result.evidence["series"] == {"model": "fraud-detector", "code": "500"}


def test_scalar_result_is_a_value(client: PrometheusClient) -> None:
    result = measure(client, f"scalar(sum(rate(requests_total{{{MODEL}}}[5m])))", T0 + timedelta(minutes=20))

    assert isinstance(result, Value)
    assert result.value == pytest.approx(100 / 60)


def test_several_series_are_one_measurement_per_series(client: PrometheusClient) -> None:
    result = measure(client, f"rate(requests_total{{{MODEL}}}[5m])", T0 + timedelta(minutes=20))

    # Each series is an instance of the rule (SPEC.md section 2, rules over many series).
    assert isinstance(result, SeriesValues)
    assert len(result.series) > 1
    for item in result.series:
        assert isinstance(item.measurement, Value) and item.measurement.labels == item.labels
        assert item.labels["model"] == "fraud-detector"


def test_empty_vector_is_no_data(client: PrometheusClient) -> None:
    result = measure(client, 'sum(rate(requests_total{model="nobody"}[5m]))', T0 + timedelta(minutes=20))

    assert isinstance(result, NoData)


def test_nan_is_no_data_with_a_reason(client: PrometheusClient) -> None:
    query = (
        'sum(rate(requests_total{model="idle",code="500"}[5m])) / sum(rate(requests_total{model="idle"}[5m]))'
    )
    result = measure(client, query, T0 + timedelta(minutes=20))

    assert isinstance(result, NoData)
    assert "NaN" in result.reason


def test_infinity_is_a_bad_answer(client: PrometheusClient) -> None:
    result = measure(client, f"sum(rate(requests_total{{{MODEL}}}[5m])) / 0", T0 + timedelta(minutes=20))

    assert isinstance(result, SourceError)
    assert result.kind is ErrorKind.BAD_ANSWER
    assert "+Inf" in result.message


def test_too_few_samples_is_no_data(client: PrometheusClient) -> None:
    result = measure(
        client, LATENCY_P99, T0 + timedelta(minutes=28), min_samples_query=SAMPLES, min_samples=1000
    )

    assert isinstance(result, NoData)
    assert "only 500 samples, at least 1000 needed" in result.reason


def test_enough_samples_gives_the_value_with_its_samples(client: PrometheusClient) -> None:
    result = measure(
        client, LATENCY_P99, T0 + timedelta(minutes=28), min_samples_query=SAMPLES, min_samples=100
    )

    assert isinstance(result, Value)
    assert result.value == pytest.approx(0.475)
    assert result.samples == pytest.approx(500)
    assert result.evidence["samples_query"] == SAMPLES


def test_samples_query_without_data_is_no_data(client: PrometheusClient) -> None:
    result = measure(
        client,
        LATENCY_P99,
        T0 + timedelta(minutes=28),
        min_samples_query='sum(increase(request_seconds_count{model="nobody"}[5m]))',
        min_samples=1,
    )

    assert isinstance(result, NoData)
    assert "only 0 samples" in result.reason


def test_syntax_error_is_a_bad_query_with_prometheus_text(client: PrometheusClient) -> None:
    result = measure(client, "sum(rate(requests_total[5m])", T0 + timedelta(minutes=20))

    assert isinstance(result, SourceError)
    assert result.kind is ErrorKind.BAD_QUERY
    assert not result.retryable
    assert "parse error" in result.message


def test_range_vector_is_a_bad_answer(client: PrometheusClient) -> None:
    result = measure(client, f"requests_total{{{MODEL}}}[1m]", T0 + timedelta(minutes=20))

    assert isinstance(result, SourceError)
    assert result.kind is ErrorKind.BAD_ANSWER


def test_prometheus_stopped_mid_run_is_unreachable_then_recovers(
    start_prometheus: StartPrometheus, metrics_exporter: MetricsExporter
) -> None:
    metrics_exporter.set_values({'model_up{model="fraud-detector"}': 1.0})
    server = start_prometheus(scrape_targets=[metrics_exporter.target])
    server.wait_for_series("model_up")
    client = PrometheusClient(server.url, {}, TIMEOUT)
    source = PrometheusSource(client, "sum(model_up)")

    assert isinstance(source.measure(datetime.now(UTC)), Value)

    server.stop()
    down = source.measure(datetime.now(UTC))
    assert isinstance(down, SourceError)
    assert down.kind is ErrorKind.UNREACHABLE
    assert down.retryable

    server.start()  # same data directory and port
    back = source.measure(datetime.now(UTC))
    assert isinstance(back, Value)
    assert back.value == 1.0


def test_nothing_listening_is_unreachable() -> None:
    client = PrometheusClient(f"http://127.0.0.1:{free_port()}", {}, TIMEOUT)

    result = PrometheusSource(client, "up").measure(T0)

    assert isinstance(result, SourceError)
    assert result.kind is ErrorKind.UNREACHABLE
    assert result.retryable
    assert "connection refused" in result.message


def test_url_without_scheme_is_a_config_error() -> None:
    client = PrometheusClient("127.0.0.1:9090", {}, TIMEOUT)

    result = PrometheusSource(client, "up").measure(T0)

    assert isinstance(result, SourceError)
    assert (result.kind, result.retryable) == (ErrorKind.CONFIG, False)


def test_slow_server_times_out_after_one_request() -> None:
    with SlowHttpServer(delay=30) as slow:
        client = PrometheusClient(slow.url, {}, timedelta(seconds=1))
        started = time.monotonic()
        result = PrometheusSource(client, "up").measure(T0)
        print(f"timed out after {time.monotonic() - started:.2f}s")
        received = slow.requests

    assert isinstance(result, SourceError)
    assert result.kind is ErrorKind.TIMEOUT
    assert result.retryable
    # The library's default Retry would have sent the query again after the timeout.
    assert len(received) == 1


def vector_answer(value: str) -> bytes:
    result = [{"metric": {"model": "m"}, "value": [T0.timestamp(), value]}]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


TOKEN = "Bearer s3cr3t-t0ken-value"


def test_headers_time_and_query_are_sent(canned_http_server: CannedHttpServer) -> None:
    canned_http_server.answer(body=vector_answer("0.5"))
    client = PrometheusClient(
        canned_http_server.url, {"Authorization": TOKEN, "X-Scope-OrgID": "ml"}, TIMEOUT
    )
    at = T0 + timedelta(seconds=1.5)

    result = PrometheusSource(client, "sum(up)").measure(at)

    assert isinstance(result, Value)
    assert result.value == 0.5
    (request,) = canned_http_server.requests
    assert (request.method, request.path) == ("POST", "/api/v1/query")  # a form: no URL length limit
    assert request.headers["Authorization"] == TOKEN
    assert request.headers["X-Scope-OrgID"] == "ml"
    assert request.query["query"] == ["sum(up)"]
    assert float(request.query["time"][0]) == at.timestamp()


@pytest.mark.parametrize(
    ("status", "body", "kind", "retryable"),
    [
        (502, b"bad gateway for " + TOKEN.encode(), ErrorKind.UNREACHABLE, True),
        (
            503,
            b'{"status":"error","errorType":"unavailable","error":"' + TOKEN.encode() + b'"}',
            ErrorKind.UNREACHABLE,
            True,
        ),
        (503, b'{"status":"error","errorType":"timeout","error":"query timed out"}', ErrorKind.TIMEOUT, True),
        (401, b"unauthorized: " + TOKEN.encode(), ErrorKind.CONFIG, False),
        (
            422,
            b'{"status":"error","errorType":"execution","error":"many-to-many matching"}',
            ErrorKind.BAD_QUERY,
            False,
        ),
        (200, b"<html>login " + TOKEN.encode() + b"</html>", ErrorKind.BAD_ANSWER, False),
    ],
    ids=["502", "503", "503-timeout", "401", "422", "200-not-json"],
)
def test_http_failures_are_typed_and_never_show_the_token(
    canned_http_server: CannedHttpServer, status: int, body: bytes, kind: ErrorKind, retryable: bool
) -> None:
    canned_http_server.answer(status=status, body=body, content_type="text/html")
    client = PrometheusClient(canned_http_server.url, {"Authorization": TOKEN}, TIMEOUT)

    result = PrometheusSource(client, "up").measure(T0)

    assert isinstance(result, SourceError)
    assert (result.kind, result.retryable) == (kind, retryable)
    assert "s3cr3t" not in result.message
    assert len(canned_http_server.requests) == 1
