"""`watcher run` evaluates a rule file's Prometheus rules together: one request for the group, and
each rule still judged on its own answer (a bad one does not blind the others)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import DaemonProcess, wait_for
from tests.support.mlflow_registry import build_registry
from tests.support.prometheus import MetricsExporter, PrometheusServer
from tests.support.workspace import make_workspace
from watcher.model import IncidentStatus
from watcher.store.database import open_engine
from watcher.store.repository import Store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RULES = """\
model: fraud-detector
rules:
  - name: healthy
    signal: error_rate
    prometheus: sum(model_value{model="a"})
    above: 0.5
  - name: breaching
    signal: error_rate
    prometheus: sum(model_value{model="b"})
    above: 0.5
  - name: two-series
    signal: error_rate
    prometheus: model_value{model=~"a|b"}
    above: 0.5
  - name: scalar
    signal: error_rate
    prometheus: scalar(sum(model_value{model="c"}))
    above: 0.5
"""
OTHER_FILE = """\
model: churn-model
rules:
  - name: latency
    signal: latency
    prometheus: sum(model_value{model="c"})
    above: 0.5
    every: 2s
"""
RULE_IDS = [f"fraud-detector/{name}" for name in ("healthy", "breaching", "two-series", "scalar")]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    exporter = MetricsExporter()
    exporter.set_values(
        {'model_value{model="a"}': 0.01, 'model_value{model="b"}': 0.9, 'model_value{model="c"}': 0.02}
    )
    server = PrometheusServer(tmp_path / "prometheus", scrape_targets=[exporter.target])
    server.start()
    server.wait_for_series("model_value")
    try:
        yield server
    finally:
        server.stop()
        exporter.close()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def evaluations(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], rule: str, outcome: str
) -> float:
    key = ("watcher_rule_evaluations_total", (("outcome", outcome), ("rule", rule)))
    return metrics.get(key, 0.0)


def queries_answered(prometheus: PrometheusServer) -> float:
    return sum(
        value
        for (name, labels), value in scrape(prometheus.url).items()
        if name == "prometheus_http_requests_total" and ("handler", "/api/v1/query") in labels
    )


def test_a_rule_file_is_one_request_and_each_rule_keeps_its_own_outcome(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    template = build_registry(tmp_path / "registry-template")
    url = f"sqlite:///{tmp_path / 'watcher.db'}"
    ws = make_workspace(
        tmp_path / "ws",
        template,
        url,
        rules=RULES,
        every="1s",
        timeout="800ms",
        extra_config=f"prometheus:\n  url: {prometheus.url}\n",
    )
    ws.write_rules(OTHER_FILE, name="churn-model.yaml")
    watcher_url = f"http://127.0.0.1:{ws.config().http.port}"
    daemon = DaemonProcess(ws.config_path, tmp_path / "daemon.log")
    store = Store(open_engine(url))
    try:

        def healthy_evaluations() -> float:
            return evaluations(scrape(watcher_url), RULE_IDS[0], "ok")

        wait_for(lambda: healthy_evaluations() >= 3, what="three evaluations", timeout=60)
        before, asked_before = scrape(watcher_url), queries_answered(prometheus)
        wait_for(lambda: healthy_evaluations() >= evaluations(before, RULE_IDS[0], "ok") + 6, what="six more")
        after, asked_after = scrape(watcher_url), queries_answered(prometheus)
    finally:
        assert daemon.terminate() == 0

    def grew(rule: str, outcome: str) -> float:
        return evaluations(after, rule, outcome) - evaluations(before, rule, outcome)

    healthy, breaching, two_series, scalar = RULE_IDS
    assert grew(healthy, "ok") >= 6 and grew(healthy, "error") == 0
    assert grew(breaching, "breach") >= 6 and grew(breaching, "error") == 0
    assert grew(two_series, "error") >= 6  # its own answer has two series; the others are unharmed
    assert grew(scalar, "ok") >= 6 and grew(scalar, "error") == 0
    assert evaluations(after, "churn-model/latency", "ok") >= 1
    ticks = grew(healthy, "ok")
    # Per tick of the file: the scalar alone (label_replace needs a vector) and the other three
    # together; the churn file adds one request every 2 s. Asked one by one it would be 4.5 a tick.
    asked = asked_after - asked_before
    print(f"\n{ticks:g} ticks of 4 rules + the churn file: {asked:g} requests to Prometheus")
    assert asked <= ticks * 2.5 + 6  # the window's ends are not read at one instant
    [incident] = store.incidents()
    assert incident.rule_id == breaching and incident.status is IncidentStatus.OPEN
    assert "asked alone from now on" in daemon.output()  # the scalar, after the first batch failed
