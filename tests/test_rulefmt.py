"""Rule files: every bad fixture with its exact findings; what a good file turns into."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from tests.test_config import (
    FIXTURE_ENV,
    FIXTURES,
    REPO,
    RULES_CONFIG,
    as_lines,
    expected_findings,
    load_fixture_config,
)
from watcher.model import Action, DriftMethod, NoDataPolicy, Severity, Signal
from watcher.rules.config import WatcherConfig, load_config
from watcher.rules.rulefmt import MinSamplesQuery, Rule, SqlQuery, load_rule_file, load_rules, rule_file_paths
from watcher.rules.templates import render_summary

RULE_FIXTURES = FIXTURES / "rules"
BAD_RULES = sorted(RULE_FIXTURES.glob("*.bad.yaml"))
GOOD_RULES = sorted(RULE_FIXTURES.glob("*.good.yaml"))


@pytest.fixture(scope="module")
def config() -> WatcherConfig:
    loaded = load_fixture_config(RULES_CONFIG)
    assert loaded.config is not None, loaded.findings
    return loaded.config


def test_there_are_enough_bad_rule_files() -> None:
    assert len(BAD_RULES) >= 30


@pytest.mark.parametrize("path", BAD_RULES, ids=lambda path: path.name)
def test_bad_rule_file_gives_exactly_its_findings(path: Path, config: WatcherConfig) -> None:
    result = load_rule_file(path, config, FIXTURE_ENV)
    assert result.rule_file is None
    assert as_lines(result.findings, path) == expected_findings(path)


@pytest.mark.parametrize("path", GOOD_RULES, ids=lambda path: path.name)
def test_good_rule_file_loads(path: Path, config: WatcherConfig) -> None:
    result = load_rule_file(path, config, FIXTURE_ENV)
    assert result.findings == []
    assert result.rule_file is not None and result.rule_file.rules


def _rules(config: WatcherConfig, name: str) -> dict[str, Rule]:
    result = load_rules(config, [RULE_FIXTURES / name], FIXTURE_ENV)
    assert result.findings == []
    return result.rules


def test_a_rule_has_every_attribute_resolved(config: WatcherConfig) -> None:
    rules = _rules(config, "fraud-detector.good.yaml")
    assert list(rules) == [
        "fraud-detector/p99-latency",
        "fraud-detector/accuracy-6h",
        "fraud-detector/input-drift",
        "fraud-detector/negative-feedback",
    ]
    p99 = rules["fraud-detector/p99-latency"]
    assert (p99.model, p99.target, p99.name, p99.id) == (
        "fraud-detector",
        "fraud-prod",
        "p99-latency",
        p99.id,
    )
    assert (
        p99.signal is Signal.LATENCY and p99.action is Action.ROLLBACK and p99.severity is Severity.CRITICAL
    )
    assert p99.prometheus is not None and p99.prometheus.startswith("histogram_quantile(0.99")
    assert (p99.sql, p99.drift, p99.above, p99.below, p99.threshold) == (None, None, 0.25, None, 0.25)
    assert (p99.for_, p99.keep_firing_for, p99.every, p99.interval) == (
        timedelta(minutes=2),
        timedelta(0),
        timedelta(seconds=30),
        timedelta(seconds=30),
    )
    assert p99.on_no_data is NoDataPolicy.KEEP
    assert p99.min_samples == MinSamplesQuery(
        prometheus='sum(increase(request_seconds_count{model="fraud-detector"}[5m]))', at_least=100
    )
    assert p99.summary == "p99 latency {{ value | round(3) }}s is over {{ threshold }}s"
    assert p99.labels == {"team": "payments"}
    assert (p99.file, p99.line, p99.column) == (RULE_FIXTURES / "fraud-detector.good.yaml", 5, 5)
    assert len(p99.content_hash) == 64 and len(p99.state_hash) == 64


def test_sql_and_drift_sources_resolve_their_paths(config: WatcherConfig) -> None:
    rules = _rules(config, "fraud-detector.good.yaml")
    accuracy = rules["fraud-detector/accuracy-6h"]
    assert accuracy.sql is not None
    assert accuracy.sql.url == f"sqlite:///{RULE_FIXTURES}/analytics.db"  # from ${ANALYTICS_DB_URL}
    assert ":window_start" in accuracy.sql.query and accuracy.sql.window == timedelta(hours=6)
    assert (accuracy.below, accuracy.threshold, accuracy.min_samples, accuracy.action) == (
        0.92,
        0.92,
        500,
        Action.APPROVE,
    )
    assert accuracy.every is None and accuracy.interval == config.evaluation.every
    drift = rules["fraud-detector/input-drift"].drift
    assert drift is not None
    assert drift.reference == RULE_FIXTURES / "data" / "reference.csv"
    assert drift.current == SqlQuery(
        url=f"sqlite:///{RULE_FIXTURES}/features.db",
        query="SELECT * FROM features WHERE ts >= :window_start",
        window=timedelta(hours=1),
    )
    assert (drift.columns, drift.method, drift.threshold) == (
        ("amount", "merchant_category", "hour"),
        DriftMethod.PSI,
        0.1,
    )


def test_rule_labels_extend_the_file_labels(config: WatcherConfig) -> None:
    feedback = _rules(config, "fraud-detector.good.yaml")["fraud-detector/negative-feedback"]
    assert feedback.labels == {"team": "payments", "page": "fraud-oncall"}


def test_a_rule_may_name_its_own_target(config: WatcherConfig) -> None:
    rules = _rules(config, "rule-targets.good.yaml")
    assert rules["shared-embedder/latency"].target == "churn-prod"
    assert rules["shared-embedder/custom-notify"].target is None
    assert rules["shared-embedder/drift-files"].min_samples == 0


@pytest.mark.parametrize(
    ("above", "below", "value", "breach"),
    [
        (0.25, None, 0.3, True),
        (0.25, None, 0.25, False),
        (0.25, None, float("nan"), False),
        (None, 0.9, 0.89, True),
        (None, 0.9, 0.9, False),
        (None, 0.9, float("nan"), False),
        (None, 0.9, float("-inf"), True),
    ],
)
def test_breaches(
    config: WatcherConfig, above: float | None, below: float | None, value: float, breach: bool
) -> None:
    rule = replace(_rules(config, "minimal.good.yaml")["churn-model/error-rate"], above=above, below=below)
    assert rule.breaches(value) is breach
    assert rule.threshold == (above if above is not None else below)


def _hashes_of(tmp_path: Path, config: WatcherConfig, rule_text: str) -> tuple[str, str]:
    path = tmp_path / "model.yaml"
    path.write_text("model: m\nrules:\n  - name: r\n" + rule_text)
    rules = load_rules(config, [path], {}).rules
    assert list(rules) == ["m/r"]
    return rules["m/r"].content_hash, rules["m/r"].state_hash


BASE_RULE = "    signal: latency\n    prometheus: p99\n    above: 1\n"


@pytest.mark.parametrize(
    ("changed", "state_kept"),
    [
        ("    signal: latency\n    prometheus: p99\n    above: 1\n    for: 5m\n", True),
        ("    signal: latency\n    prometheus: p99\n    above: 1\n    summary: hi\n", True),
        ("    signal: latency\n    prometheus: p99\n    above: 1\n    severity: critical\n", True),
        ("    signal: latency\n    prometheus: p99\n    above: 1\n    every: 1m\n", True),
        ("    signal: custom\n    prometheus: p99\n    above: 1\n", True),
        ("    signal: latency\n    prometheus: p999\n    above: 1\n", False),
        ("    signal: latency\n    prometheus: p99\n    above: 2\n", False),
        ("    signal: latency\n    prometheus: p99\n    below: 1\n", False),
    ],
)
def test_content_and_state_hashes(
    tmp_path: Path, config: WatcherConfig, changed: str, state_kept: bool
) -> None:
    base_content, base_state = _hashes_of(tmp_path, config, BASE_RULE)
    assert _hashes_of(tmp_path, config, BASE_RULE) == (base_content, base_state)  # deterministic
    content, state = _hashes_of(tmp_path, config, changed)
    assert content != base_content
    assert (state == base_state) is state_kept


def test_a_password_change_in_the_environment_keeps_both_hashes(
    tmp_path: Path, config: WatcherConfig
) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(
        "model: m\nrules:\n  - name: r\n    signal: accuracy\n"
        "    sql: {url: '${URL}', query: SELECT 1 AS value}\n    below: 0.9\n"
    )
    first = load_rules(config, [path], {"URL": "postgresql://u:first-pass@db/a"}).rules["m/r"]
    second = load_rules(config, [path], {"URL": "postgresql://u:second-pass@db/a"}).rules["m/r"]
    assert (first.content_hash, first.state_hash) == (second.content_hash, second.state_hash)
    assert "first-pass" not in repr(first) and "postgresql://u:***@db/a" in repr(first)


def test_a_bad_file_never_hides_the_good_files(tmp_path: Path, config: WatcherConfig) -> None:
    good = RULE_FIXTURES / "minimal.good.yaml"
    bad = RULE_FIXTURES / "two-sources.bad.yaml"
    result = load_rules(config, [bad, good], FIXTURE_ENV)
    assert list(result.rules) == ["churn-model/error-rate"]
    assert as_lines(result.findings, bad) == expected_findings(bad)
    assert result.files == [bad, good]


def test_a_rule_id_defined_twice_across_files_is_a_finding_in_the_second(
    tmp_path: Path, config: WatcherConfig
) -> None:
    text = "model: m\nrules:\n  - name: r\n    signal: latency\n    prometheus: p99\n    above: 1\n"
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text.replace("p99", "p95"))
    result = load_rules(config, [tmp_path], {})
    assert list(result.rules) == ["m/r"]
    assert result.rules["m/r"].prometheus == "p99"
    assert [str(f) for f in result.findings] == [
        f"{tmp_path}/b.yaml:3:5: rule id 'm/r' is already defined in {tmp_path}/a.yaml:3"
    ]


def test_rule_file_paths_walk_directories_and_expand_globs(tmp_path: Path) -> None:
    (tmp_path / "rules" / "team").mkdir(parents=True)
    (tmp_path / "rules" / ".hidden").mkdir()
    for name in (
        "rules/b.yaml",
        "rules/a.yml",
        "rules/team/c.yaml",
        "rules/notes.txt",
        "rules/.hidden/x.yaml",
    ):
        (tmp_path / name).write_text("")
    (tmp_path / "watcher.yaml").write_text("rules: [rules/, '*.yaml']\n")
    config = load_config(tmp_path / "watcher.yaml", {}).config
    assert config is not None
    assert rule_file_paths(config) == [
        tmp_path / "rules" / "a.yml",
        tmp_path / "rules" / "b.yaml",
        tmp_path / "rules" / "team" / "c.yaml",
    ]  # the configuration itself matches '*.yaml' and is left out
    assert rule_file_paths(config, [tmp_path / "rules" / "team", tmp_path / "gone.yaml"]) == [
        tmp_path / "rules" / "team" / "c.yaml",
        tmp_path / "gone.yaml",
    ]


def test_a_missing_rule_file_is_a_finding(tmp_path: Path, config: WatcherConfig) -> None:
    result = load_rules(config, [tmp_path / "gone.yaml"], {})
    assert [str(f) for f in result.findings] == [
        f"{tmp_path}/gone.yaml:1:1: cannot read file: No such file or directory"
    ]


def test_a_prometheus_rule_needs_the_prometheus_section(tmp_path: Path) -> None:
    (tmp_path / "watcher.yaml").write_text("rules: model.yaml\n")
    (tmp_path / "model.yaml").write_text(
        "model: m\nrules:\n  - name: r\n    signal: latency\n    prometheus: p99\n    above: 1\n"
    )
    config = load_config(tmp_path / "watcher.yaml", {}).config
    assert config is not None
    assert [f.message for f in load_rules(config, env={}).findings] == [
        "prometheus: watcher.yaml has no prometheus section"
    ]


def test_the_example_rules_load_against_the_example_configuration() -> None:
    config = load_config(REPO / "watcher.yaml", {}).config
    assert config is not None
    result = load_rules(config, env={})
    assert result.findings == []
    assert {rule.model for rule in result.rules.values()} == {
        "fraud-detector",
        "churn-model",
        "search-ranker",
        "recommender",
    }
    fraud = {rule.name: rule for rule in result.rules.values() if rule.model == "fraud-detector"}
    assert sorted(fraud) == [
        *("accuracy-1h", "error-rate", "input-drift"),
        *("live-version-errors", "negative-feedback", "p99-latency"),
    ]
    assert all(rule.target == "fraud-prod" for rule in fraud.values())
    assert "model_request_seconds_bucket" in (fraud["p99-latency"].prometheus or "")
    assert "[1m]" in (fraud["error-rate"].prometheus or "")
    assert fraud["input-drift"].drift is not None
    assert fraud["input-drift"].drift.reference == REPO / "rules" / "data" / "fraud_reference.csv"
    assert fraud["accuracy-1h"].sql is not None
    assert fraud["accuracy-1h"].sql.url == f"sqlite:///{REPO}/var/analytics.db"


def test_summaries_render_in_the_sandbox(config: WatcherConfig) -> None:
    p99 = _rules(config, "fraud-detector.good.yaml")["fraud-detector/p99-latency"]
    assert p99.summary is not None
    assert render_summary(p99.summary, value=0.31234, threshold=0.25) == "p99 latency 0.312s is over 0.25s"


def test_a_summary_that_fails_at_render_time_says_so_and_does_not_raise() -> None:
    rendered = render_summary("{{ value | round(3) }}", value=None)
    assert rendered.startswith("{{ value | round(3) }} [summary could not be rendered")
    escaped = render_summary("{{ ''.__class__.__mro__ }}")
    assert "unsafe" in escaped and "object" not in escaped.split("[")[0]
