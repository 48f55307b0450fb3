"""The daemon's own metrics, served on /metrics in the Prometheus text format.

Everything lives in a registry of its own (never prometheus_client's global one), so several
daemons in one test process do not share counters and nothing a library registers leaks in.

Label sets of a rule are created in full the first time the rule is seen: every outcome counter
starts at 0 and every state gauge exists, so `rate()` and `== 1` queries work from the first
scrape instead of after the first error. The evaluation-time histogram has no rule label (one
histogram per rule would multiply series by the bucket count); the last duration per rule is a
plain gauge instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from watcher.decisions.evaluation import Transition
from watcher.model import Outcome, RuleState

# The 0.0.4 text format: what Prometheus asks for by default and every scraper understands.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Evaluations range from a quick PromQL query to a drift report over many rows.
EVALUATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass
class _RuleSeries:
    """One rule's labelled children."""

    evaluations: dict[Outcome, Any]
    last_seconds: Any
    states: dict[RuleState, Any]
    unhealthy: Any
    missed: Any
    settling: Any
    state: RuleState = RuleState.INACTIVE


class Metrics:
    """Thread-safe: the scheduler's workers, the dispatcher and the HTTP server all call in."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._rules: dict[str, _RuleSeries] = {}
        self._lock = threading.Lock()
        self._define_rule_metrics()
        self._define_daemon_metrics()

    def _define_rule_metrics(self) -> None:
        self._evaluations = self._counter(
            "watcher_rule_evaluations",  # the client adds the _total suffix
            "Rule evaluations by outcome (ok, breach, no_data, error).",
            ["rule", "outcome"],
        )
        self._evaluation_seconds = Histogram(
            "watcher_rule_evaluation_seconds",
            "Time one rule evaluation took, measuring and persisting included.",
            buckets=EVALUATION_BUCKETS,
            registry=self.registry,
        )
        self._last_evaluation_seconds = self._gauge(
            "watcher_rule_last_evaluation_seconds",
            "Time the latest evaluation of the rule took.",
            ["rule"],
        )
        self._state = self._gauge(
            "watcher_rule_state",
            "1 for the rule's current state (inactive, pending, firing), 0 for the others.",
            ["rule", "state"],
        )
        self._unhealthy = self._gauge(
            "watcher_rule_unhealthy",
            "1 while the rule's source keeps failing (4 errors in a row), else 0.",
            ["rule"],
        )
        self._settling = self._gauge(
            "watcher_rule_settling",
            "1 while the rule's window spans a version change: its breaches count against no version.",
            ["rule"],
        )
        self._missed = self._counter(
            "watcher_evaluations_missed",
            "Scheduled evaluations skipped because the previous one was still running or late.",
            ["rule"],
        )
        self._instance_problems = self._counter(
            "watcher_rule_instance_problems",
            "Series of a rule over many series that could not be an instance (a label its model or "
            "target is built from is missing, or the name built is not valid).",
            ["rule"],
        )

    def _define_daemon_metrics(self) -> None:
        self._rollbacks = self._counter(
            "watcher_rollbacks",
            "Rollbacks attempted, by target and result.",
            ["target", "result"],
        )
        self._incidents_open = self._gauge("watcher_incidents_open", "Incidents not resolved yet.")
        self._outbox_pending = self._gauge(
            "watcher_outbox_pending",
            "Messages queued for Slack and not delivered yet.",
        )
        self._groups_held = self._gauge(
            "watcher_groups_held",
            "Evaluation groups this replica holds the lease of (evaluates) now.",
        )
        self._lease_changes = self._counter(
            "watcher_lease_changes",
            "Leases this replica acquired or lost (taken over while it believed it held them) or released.",
            ["lease", "change"],
        )
        self._reload_successful = self._gauge(
            "watcher_rules_last_reload_successful",
            "1 when the last load of the rule files had no finding; 0 when a file was refused "
            "(its previous rules keep running), as prometheus_config_last_reload_successful.",
        )
        self._reload_findings = self._gauge(
            "watcher_rules_last_reload_findings",
            "Findings in the rule files at the last load (`watcher check` lists them).",
        )
        self._reload_success_time = self._gauge(
            "watcher_rules_last_reload_success_timestamp_seconds",
            "When the rule files last loaded without a finding (unix seconds).",
        )
        self._fenced_refused = self._counter(
            "watcher_fenced_writes_refused",
            "Writes refused because the claim they were made under had a newer holder.",
            ["claim"],
        )

    def _counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, list(labels), registry=self.registry)

    def _gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, documentation, list(labels), registry=self.registry)

    # --- rules ------------------------------------------------------------------------------------
    def observe_tick(self, rule_id: str, transition: Transition, seconds: float) -> None:
        series = self._rule(rule_id)
        series.evaluations[transition.outcome].inc()
        self._evaluation_seconds.observe(seconds)
        series.last_seconds.set(seconds)
        current = transition.current.state
        if series.state is not current:  # three gauge writes only when the state moves
            for state, gauge in series.states.items():
                gauge.set(1 if state is current else 0)
            series.state = current
        series.unhealthy.set(1 if transition.current.unhealthy else 0)
        series.settling.set(1 if transition.current.settling else 0)

    def instance_problem(self, rule_id: str) -> None:
        self._instance_problems.labels(rule=rule_id).inc()

    def missed_run(self, rule_id: str) -> None:
        self._rule(rule_id).missed.inc()

    def rule_unhealthy(self, rule_id: str, unhealthy: bool) -> None:
        self._rule(rule_id).unhealthy.set(1 if unhealthy else 0)

    def forget_rule(self, rule_id: str) -> None:
        """Drop every series of a rule that was unloaded, so it stops being exported."""
        with self._lock:
            if self._rules.pop(rule_id, None) is None:
                return
            for outcome in Outcome:
                self._evaluations.remove(rule_id, outcome.value)
            for state in RuleState:
                self._state.remove(rule_id, state.value)
            self._missed.remove(rule_id)
            self._unhealthy.remove(rule_id)
            self._settling.remove(rule_id)
            self._last_evaluation_seconds.remove(rule_id)

    def _rule(self, rule_id: str) -> _RuleSeries:
        """The rule's series, created in full the first time it is seen (looking a labelled child
        up costs more than the update itself, so each rule's children are kept)."""
        series = self._rules.get(rule_id)
        if series is not None:
            return series
        with self._lock:
            series = self._rules.get(rule_id)
            if series is None:
                series = _RuleSeries(
                    evaluations={o: self._evaluations.labels(rule=rule_id, outcome=o.value) for o in Outcome},
                    last_seconds=self._last_evaluation_seconds.labels(rule=rule_id),
                    states={s: self._state.labels(rule=rule_id, state=s.value) for s in RuleState},
                    unhealthy=self._unhealthy.labels(rule=rule_id),
                    missed=self._missed.labels(rule=rule_id),
                    settling=self._settling.labels(rule=rule_id),
                )
                series.states[RuleState.INACTIVE].set(1)
                self._rules[rule_id] = series
            return series

    def rules_loaded(self, findings: int, at: datetime) -> None:
        """Record one load of the rule files (at start or a reload) and its finding count."""
        self._reload_successful.set(0 if findings else 1)
        self._reload_findings.set(findings)
        if not findings:
            self._reload_success_time.set(at.timestamp())

    # --- rollbacks and queues ---------------------------------------------------------------------
    def rollback(self, target: str, result: str) -> None:
        """Count one finished rollback attempt; `result` is a RollbackStatus or RollbackResult value."""
        self._rollbacks.labels(target=target, result=str(result)).inc()

    def set_open_incidents(self, count: int) -> None:
        self._incidents_open.set(count)

    def set_outbox_pending(self, count: int) -> None:
        self._outbox_pending.set(count)

    # --- replicas -----------------------------------------------------------------------------------
    def set_groups_held(self, count: int) -> None:
        self._groups_held.set(count)

    def lease_changes(self, lease: str, change: str, count: int = 1) -> None:
        """`lease`: "group" or "leader"; `change`: "acquired", "lost" or "released"."""
        if count:
            self._lease_changes.labels(lease=lease, change=change).inc(count)

    def fenced_write_refused(self, claim: str) -> None:
        self._fenced_refused.labels(claim=claim).inc()

    # --- exposition -------------------------------------------------------------------------------
    def render(self) -> bytes:
        """The registry in the Prometheus text format (CONTENT_TYPE)."""
        return generate_latest(_WithoutCreated(self.registry))


class _WithoutCreated:
    """The registry's families minus the `*_created` series the client adds to every counter.

    They double the series count and nothing here uses them; the client's own switch
    (disable_created_metrics) is process-wide, this one touches only this registry's output.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            kept = Metric(family.name, family.documentation, family.type, family.unit)
            kept.samples = [sample for sample in family.samples if not sample.name.endswith("_created")]
            yield kept
