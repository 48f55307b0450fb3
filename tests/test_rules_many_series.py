"""Rules over many series, on a real Prometheus: each series an instance with its own state,
incident and rollback; model and target built from labels; an unknown target is an error for its
instance alone; a series that goes away resolves after VANISH_AFTER evaluations without it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.harness import Harness
from tests.support.mlflow_registry import build_registry
from tests.support.prometheus import PrometheusServer
from tests.support.workspace import make_workspace
from watcher.model import Outcome, RuleState
from watcher.store.queue import WorkQueue

pytestmark = [pytest.mark.integration]

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CUT = T0 + timedelta(minutes=5)  # the fraud series exists only before this
RULE = "errors/error-rate"
FRAUD = 'errors/error-rate{model="fraud-prod"}'
CHURN = 'errors/error-rate{model="churn"}'
QUERY = (
    'label_replace(vector(0.2), "model", "fraud-prod", "", "")'
    f" and on() (vector(time()) < {CUT.timestamp():.0f})"
    ' or label_replace(vector(0.3), "model", "churn", "", "")'
)


def rules(action: str) -> str:
    return f"""\
model: "{{{{ labels.model }}}}"
target: "{{{{ labels.model }}}}"
rules:
  - name: error-rate
    signal: error_rate
    prometheus: '{QUERY}'
    above: 0.05
    for: 1m
    every: 30s
    action: {action}
"""


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def harness(tmp_path: Path, prometheus: PrometheusServer, action: str) -> Harness:
    template = build_registry(tmp_path / "registry-template")
    workspace = make_workspace(
        tmp_path / "ws",
        template,
        f"sqlite:///{tmp_path / 'w.db'}",
        rules="",
        extra_config=f"prometheus:\n  url: {prometheus.url}\n",
    )
    (workspace.root / "rules" / "fraud-detector.yaml").unlink()
    workspace.write_rules(rules(action), name="errors.yaml")
    return Harness(workspace)


def tick(h: Harness, at: datetime) -> dict[str, Outcome]:
    results = h.engine.tick_group([h.rules[RULE]], at)
    return {result.rule_id: result.transition.outcome for result in results}


def test_each_series_is_an_instance_with_its_own_state_incident_and_rollback(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    (tmp_path / "registry-template").mkdir()
    h = harness(tmp_path, prometheus, "rollback")
    try:
        assert tick(h, T0) == {FRAUD: Outcome.BREACH, CHURN: Outcome.ERROR}
        tick(h, T0 + timedelta(minutes=1))
        assert h.engine.status(FRAUD).state is RuleState.FIRING
        [incident] = h.store.incidents()
        assert (incident.rule_id, incident.model, incident.target) == (FRAUD, "fraud-prod", "fraud-prod")
        [intent] = WorkQueue(h.store).intents()
        assert (intent.target, intent.from_version, intent.to_version) == ("fraud-prod", "3", "2")
        # churn-prod is not in watcher.yaml: an error of that instance, never a breach, never dropped.
        churn = h.engine.status(CHURN)
        assert churn.state is RuleState.INACTIVE and churn.consecutive_errors == 2
    finally:
        h.close()


def test_a_series_that_goes_away_resolves_its_instance_and_incident(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    (tmp_path / "registry-template").mkdir()
    h = harness(tmp_path, prometheus, "notify")
    try:
        tick(h, T0)
        tick(h, T0 + timedelta(minutes=1))
        assert h.engine.status(FRAUD).state is RuleState.FIRING
        # The series is gone from the answer: held once (a scrape hiccup resolves nothing) ...
        assert tick(h, CUT + timedelta(seconds=1))[FRAUD] is Outcome.NO_DATA
        assert h.engine.status(FRAUD).state is RuleState.FIRING
        # ... and resolved at the second evaluation without it, with its incident.
        tick(h, CUT + timedelta(seconds=31))
        assert h.engine.status(FRAUD).state is RuleState.INACTIVE
        [incident] = h.store.incidents()
        assert incident.resolved_at is not None
        # Gone means forgotten: later answers do not mention it.
        assert FRAUD not in tick(h, CUT + timedelta(minutes=1))
    finally:
        h.close()


def test_eval_reports_every_instance(tmp_path: Path, prometheus: PrometheusServer) -> None:
    import json
    import subprocess
    import sys

    (tmp_path / "registry-template").mkdir()
    h = harness(tmp_path, prometheus, "notify")
    h.close()
    config = h.workspace.config_path
    done = subprocess.run(
        [str(Path(sys.executable).parent / "watcher"), "eval", RULE, "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    by_id = {instance["rule"]: instance for instance in report["instances"]}
    assert set(by_id) == {FRAUD, CHURN} or set(by_id) == {CHURN}  # fraud exists only before CUT
    assert by_id[CHURN]["outcome"] == "error"
    message = by_id[CHURN]["error"]["message"]
    assert "churn" in message and "not in watcher.yaml" in message
