"""Rules asking the same query of different models are asked as one query (a family), and each
still gets exactly what its own query gives alone: against a real Prometheus, backfilled."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import promql_parser as pp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.services import require
from watcher.rules.promql_factor import factored_text, member_of, proven
from watcher.ruletest.prometheus import LocalPrometheus, PrometheusUnavailable, start_prometheus
from watcher.sources.prometheus import PrometheusClient, PrometheusSource
from watcher.sources.prometheus_batch import PrometheusBatch

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, tzinfo=UTC)
AT = T0 + timedelta(minutes=50)
TIMEOUT = timedelta(seconds=10)
# Names a regex would misread, a model with no errors at all, one with no latency series.
MODELS = ["fraud", "churn", "m.1", "m|2", "a+b(c)", "quiet", "no-latency"]
TEMPLATES = [
    'histogram_quantile(0.99, sum by (le) (rate(request_seconds_bucket{model="$m"}[5m])))',
    'sum(rate(requests_total{model="$m",code="500"}[5m])) / sum(rate(requests_total{model="$m"}[5m]))',
    'sum by (code) (rate(requests_total{model="$m"}[5m]))',
    'avg_over_time(accuracy{model="$m"}[10m])',
    'rate(requests_total{model="$m",code="500"}[5m])'
    ' / ignoring(code) rate(requests_total{model="$m",code="200"}[5m])',
    'sum by (job) (rate(requests_total{model="$m"}[5m]))'
    ' / on(job) sum by (job) (rate(requests_total{model="$m"}[10m]))',
    'topk(1, rate(requests_total{model="$m"}[5m]))',
    'max_over_time(sum(rate(requests_total{model="$m"}[1m]))[10m:1m] offset 2m) > bool 0.5',
    'sum without (code) (rate(requests_total{model="$m"}[5m])) > 1',
    'rate(requests_total{model="$m",code="500"}[5m]) or rate(requests_total{model="$m",code="404"}[5m])',
    '-sum(rate(requests_total{model="$m"}[5m])) + 2 * 3',
    # Not factorable: each asked as it is.
    'absent(requests_total{model="$m"})',
    'label_replace(rate(requests_total{model="$m"}[5m]), "model", "x", "", "")',
    'sum without (model) (rate(requests_total{model="$m"}[5m]))',
]


def openmetrics() -> str:
    lines = [
        "# TYPE request_seconds_bucket counter",
        "# TYPE requests_total counter",
        "# TYPE accuracy gauge",
    ]
    for index, model in enumerate(MODELS):
        label = model.replace("\\", "\\\\").replace('"', '\\"')
        moment = T0
        step = 0
        while moment <= T0 + timedelta(hours=1):
            seconds = int(moment.timestamp())
            if model != "no-latency":
                for le, share in (("0.1", 0.5), ("0.5", 0.9), ("+Inf", 1.0)):
                    count = step * (10 + index) * share
                    lines.append(f'request_seconds_bucket{{model="{label}",le="{le}"}} {count} {seconds}')
            for code, rate in (("200", 20 + index), ("500", 0 if model == "quiet" else index)):
                job = "api" if index % 2 else "batch"
                lines.append(
                    f'requests_total{{model="{label}",code="{code}",job="{job}"}} {step * rate} {seconds}'
                )
            lines.append(f'accuracy{{model="{label}"}} {0.9 - 0.01 * index} {seconds}')
            moment += timedelta(seconds=15)
            step += 1
    return "\n".join([*lines, "# EOF", ""])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrometheus]:
    started = start_prometheus(Path(tmp_path_factory.mktemp("family")), openmetrics())
    if isinstance(started, PrometheusUnavailable):
        require("prometheus", started.reason)
        return
    yield started
    started.stop()


@pytest.fixture
def client(prometheus: LocalPrometheus) -> Iterator[PrometheusClient]:
    client = PrometheusClient(prometheus.url, {}, TIMEOUT)
    yield client
    client.close()


def _query(template: str, model: str) -> str:
    return template.replace("$m", model.replace("\\", "\\\\").replace('"', '\\"'))


def _requests(client: PrometheusClient) -> list[str]:
    sent: list[str] = []
    real = client.instant_query

    def instant_query(query: str, at: datetime) -> object:
        sent.append(query)
        return real(query, at)

    client.instant_query = instant_query  # type: ignore[method-assign, assignment]
    return sent


def test_one_template_for_every_model_is_one_query_and_each_rule_gets_its_own_answer(
    client: PrometheusClient,
) -> None:
    batch = PrometheusBatch(client)
    group = [PrometheusSource(client, _query(TEMPLATES[0], m), batch=batch) for m in MODELS]
    alone = [source.measure(AT) for source in group]
    sent = _requests(client)

    together = batch.measure_many(group, AT)

    assert together == alone
    assert len(sent) == 1
    assert 'model=~"a\\\\+b\\\\(c\\\\)|churn|fraud|m\\\\.1|m\\\\|2|no-latency|quiet"' in sent[0]
    assert "by (le, model)" in sent[0]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    rules=st.lists(
        st.tuples(st.sampled_from(TEMPLATES), st.sampled_from([*MODELS, "nobody"])), min_size=2, max_size=12
    )
)
def test_a_batch_of_families_gives_every_rule_exactly_what_its_own_query_gives_alone(
    client: PrometheusClient, rules: list[tuple[str, str]]
) -> None:
    batch = PrometheusBatch(client)
    group = [PrometheusSource(client, _query(template, model), batch=batch) for template, model in rules]

    together = batch.measure_many(group, AT)

    assert together == [source.measure(AT) for source in group]


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_family_query_is_proven_to_be_its_members_tree(template: str) -> None:
    tree = pp.parse(_query(template, "fraud"))
    member = member_of(tree)
    if template in TEMPLATES[-3:]:
        assert member is None
        return
    assert member is not None and member.label == "model" and member.value == "fraud"
    text = factored_text(tree, "model", MODELS)
    assert proven(text, tree, "model", MODELS)
    assert not proven(text.replace("model=~", "job=~", 1), tree, "model", MODELS)
    assert not proven(text, tree, "model", MODELS[:-1])
