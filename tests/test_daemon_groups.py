"""`watcher run` evaluates the Prometheus rules of one interval together, whatever file they are in:
one request for the group, each rule still judged on its own answer (a bad one does not blind the
others), and a file that goes bad takes down none of the good ones."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import DaemonProcess, wait_for
from tests.support.mlflow_registry import build_registry
from tests.support.prometheus import MetricsExporter, PrometheusServer
from tests.support.workspace import Workspace, make_workspace
from watcher.model import IncidentStatus
from watcher.ruletest.prometheus import free_port
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
"""
SCALAR = """\
model: scalar
rules:
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
ONE_RULE_MODELS = 5  # more files of one rule each, as ops teams write them: no request of their own


def one_rule_file(index: int) -> str:
    return (
        f"model: model-{index}\nrules:\n  - name: latency\n    signal: latency\n"
        f'    prometheus: sum(model_value{{model="a"}}) + {index}\n    above: 100\n'
    )


RULE_IDS = ["fraud-detector/healthy", "fraud-detector/breaching", "scalar/scalar"]


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


def test_rules_of_many_files_share_one_request_and_each_rule_keeps_its_own_outcome(
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
        # A port of its own: the default one may be taken by another daemon on this machine.
        extra_config=f"prometheus:\n  url: {prometheus.url}\nhttp:\n  listen: 127.0.0.1:{free_port()}\n",
    )
    ws.write_rules(OTHER_FILE, name="churn-model.yaml")
    ws.write_rules(SCALAR, name="scalar.yaml")
    for index in range(ONE_RULE_MODELS):
        ws.write_rules(one_rule_file(index), name=f"model-{index}.yaml")
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
        a_bad_file_later(ws, watcher_url, daemon)
    finally:
        assert daemon.terminate() == 0

    def grew(rule: str, outcome: str) -> float:
        return evaluations(after, rule, outcome) - evaluations(before, rule, outcome)

    healthy, breaching, scalar = RULE_IDS
    assert grew(healthy, "ok") >= 6 and grew(healthy, "error") == 0
    assert grew(breaching, "breach") >= 6 and grew(breaching, "error") == 0
    assert grew(scalar, "ok") >= 6 and grew(scalar, "error") == 0
    assert all(grew(f"model-{index}/latency", "ok") >= 6 for index in range(ONE_RULE_MODELS))
    assert evaluations(after, "churn-model/latency", "ok") >= 1
    ticks = grew(healthy, "ok")
    # Per tick, for the 8 rules of 7 files every second: the scalar alone (label_replace needs a
    # vector) and the 7 others together; the churn file adds one request every 2 s. One request
    # per file would be 7.5 a tick; one per rule, 8.5.
    asked = asked_after - asked_before
    print(f"\n{ticks:g} ticks of 8 rules in 7 files + the churn file: {asked:g} requests to Prometheus")
    assert asked <= ticks * 2.5 + 6  # the window's ends are not read at one instant
    [incident] = [incident for incident in store.incidents() if incident.rule_id == breaching]
    assert incident.rule_id == breaching and incident.status is IncidentStatus.OPEN


def a_bad_file_later(ws: Workspace, watcher_url: str, daemon: DaemonProcess) -> None:
    """A file that goes bad keeps its last good rules running, beside a new file and the others."""
    ws.write_rules("model: model-0\nrules: [\n", name="model-0.yaml")
    ws.write_rules(one_rule_file(ONE_RULE_MODELS), name=f"model-{ONE_RULE_MODELS}.yaml")
    new_rule = f"model-{ONE_RULE_MODELS}/latency"
    wait_for(lambda: evaluations(scrape(watcher_url), new_rule, "ok") >= 1, what="the new file's rule")
    seen = scrape(watcher_url)
    kept = ["model-0/latency", "model-1/latency", RULE_IDS[0]]

    def all_grew() -> bool:
        now = scrape(watcher_url)
        return all(evaluations(now, rule, "ok") >= evaluations(seen, rule, "ok") + 3 for rule in kept)

    wait_for(all_grew, what="the bad file's last good rules and the others evaluated")
    assert "rule file problem" in daemon.output()
