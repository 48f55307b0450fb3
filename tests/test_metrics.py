"""The daemon's metrics, read back through prometheus_client's own text-format parser."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from watcher.decisions.evaluation import RuleStatus, Transition, TransitionReason
from watcher.metrics import Metrics
from watcher.model import Outcome, RollbackStatus, RuleState
from watcher.remediations.base import RollbackResult

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

SPEC_NAMES = {
    "watcher_rule_evaluations_total",
    "watcher_rule_evaluation_seconds",
    "watcher_rule_state",
    "watcher_evaluations_missed_total",
    "watcher_incidents_open",
    "watcher_rollbacks_total",
}


def transition(outcome: Outcome, state: RuleState, *, unhealthy: bool = False) -> Transition:
    return Transition(
        previous=RuleStatus(),
        current=RuleStatus(state=state, last_evaluated_at=NOW, last_outcome=outcome, unhealthy=unhealthy),
        outcome=outcome,
        reason=TransitionReason.STILL_PENDING,
        value=1.0 if outcome in (Outcome.OK, Outcome.BREACH) else None,
    )


def samples(metrics: Metrics) -> list[Sample]:
    text = metrics.render().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value_of(found: Iterable[Sample], name: str, **labels: str) -> float | None:
    for sample in found:
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
            return sample.value
    return None


def sample_names(metrics: Metrics) -> set[str]:
    return {sample.name for sample in samples(metrics)}


def test_every_spec_metric_is_exported_after_some_work() -> None:
    metrics = Metrics()
    metrics.observe_tick("fraud/p99", transition(Outcome.BREACH, RuleState.PENDING), 0.02)
    metrics.missed_run("fraud/p99")
    metrics.rollback("fraud-prod", RollbackStatus.SUCCEEDED)
    metrics.set_open_incidents(2)
    metrics.set_outbox_pending(5)

    families = {family.name for family in text_string_to_metric_families(metrics.render().decode())}
    names = sample_names(metrics)

    assert {"watcher_rule_evaluation_seconds_bucket", "watcher_rule_evaluation_seconds_count"} <= names
    assert SPEC_NAMES - {"watcher_rule_evaluation_seconds"} <= names
    assert "watcher_rule_evaluation_seconds" in families
    assert "watcher_outbox_pending" in names


def test_outcomes_are_counted_per_rule_and_every_outcome_starts_at_zero() -> None:
    metrics = Metrics()
    metrics.observe_tick("m/a", transition(Outcome.BREACH, RuleState.PENDING), 0.01)
    metrics.observe_tick("m/a", transition(Outcome.BREACH, RuleState.FIRING), 0.01)
    metrics.observe_tick("m/a", transition(Outcome.ERROR, RuleState.FIRING), 0.01)
    metrics.observe_tick("m/b", transition(Outcome.OK, RuleState.INACTIVE), 0.01)

    found = samples(metrics)
    total = "watcher_rule_evaluations_total"
    assert value_of(found, total, rule="m/a", outcome="breach") == 2
    assert value_of(found, total, rule="m/a", outcome="error") == 1
    assert value_of(found, total, rule="m/a", outcome="ok") == 0
    assert value_of(found, total, rule="m/a", outcome="no_data") == 0
    assert value_of(found, total, rule="m/b", outcome="ok") == 1
    assert value_of(found, "watcher_rule_evaluation_seconds_count") == 4


@pytest.mark.parametrize("state", list(RuleState))
def test_state_gauge_is_one_for_the_current_state_and_zero_for_the_others(state: RuleState) -> None:
    metrics = Metrics()
    metrics.observe_tick("m/a", transition(Outcome.BREACH, RuleState.FIRING), 0.01)
    metrics.observe_tick("m/a", transition(Outcome.OK, state), 0.01)

    found = samples(metrics)
    for other in RuleState:
        expected = 1.0 if other is state else 0.0
        assert value_of(found, "watcher_rule_state", rule="m/a", state=other.value) == expected


def test_missed_runs_rollbacks_and_gauges() -> None:
    metrics = Metrics()
    metrics.missed_run("m/a")
    metrics.missed_run("m/a")
    metrics.rollback("fraud-prod", RollbackStatus.SUCCEEDED)
    metrics.rollback("fraud-prod", RollbackResult.VERSION_CHANGED)
    metrics.rollback("fraud-prod", RollbackStatus.SUCCEEDED.value)
    metrics.set_open_incidents(3)
    metrics.set_open_incidents(1)
    metrics.set_outbox_pending(7)

    found = samples(metrics)
    assert value_of(found, "watcher_evaluations_missed_total", rule="m/a") == 2
    assert value_of(found, "watcher_rollbacks_total", target="fraud-prod", result="succeeded") == 2
    assert value_of(found, "watcher_rollbacks_total", target="fraud-prod", result="version_changed") == 1
    assert value_of(found, "watcher_incidents_open") == 1
    assert value_of(found, "watcher_outbox_pending") == 7


def test_unhealthy_follows_the_transition_and_the_explicit_call() -> None:
    metrics = Metrics()
    metrics.observe_tick("m/a", transition(Outcome.ERROR, RuleState.INACTIVE, unhealthy=True), 0.01)
    assert value_of(samples(metrics), "watcher_rule_unhealthy", rule="m/a") == 1
    metrics.rule_unhealthy("m/a", False)
    assert value_of(samples(metrics), "watcher_rule_unhealthy", rule="m/a") == 0


def test_forget_rule_drops_every_series_of_that_rule_only() -> None:
    metrics = Metrics()
    for rule in ("m/gone", "m/kept"):
        metrics.observe_tick(rule, transition(Outcome.OK, RuleState.INACTIVE), 0.01)
        metrics.missed_run(rule)

    metrics.forget_rule("m/gone")

    rules = {sample.labels.get("rule") for sample in samples(metrics)}
    assert "m/gone" not in rules
    assert "m/kept" in rules
    # A rule loaded again later starts over cleanly.
    metrics.observe_tick("m/gone", transition(Outcome.OK, RuleState.INACTIVE), 0.01)
    assert value_of(samples(metrics), "watcher_rule_evaluations_total", rule="m/gone", outcome="ok") == 1


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.missed_run("m/a")
    assert value_of(samples(first), "watcher_evaluations_missed_total", rule="m/a") == 1
    assert value_of(samples(second), "watcher_evaluations_missed_total", rule="m/a") is None


def test_label_values_are_escaped_in_the_text_format() -> None:
    metrics = Metrics()
    awkward = 'model "x"/rule\\with\nnewline'
    metrics.missed_run(awkward)
    assert value_of(samples(metrics), "watcher_evaluations_missed_total", rule=awkward) == 1
