"""Binds a validated rule to the source that measures it and the policy that judges it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watcher.decisions.evaluation import RulePolicy
from watcher.sources.base import Source

if TYPE_CHECKING:
    from watcher.rules.config import WatcherConfig
    from watcher.rules.rulefmt import Rule


@dataclass(frozen=True)
class RuntimeRule:
    rule: Rule
    source: Source
    policy: RulePolicy
    # How far back before the evaluation time its query reads: what a version must have been live
    # over for a breach to count against it (SPEC.md section 3).
    lookback: timedelta = timedelta(0)

    @property
    def id(self) -> str:
        return self.rule.id


def policy_for(rule: Rule) -> RulePolicy:
    return RulePolicy(
        for_=rule.for_,
        keep_firing_for=rule.keep_firing_for,
        on_no_data=rule.on_no_data,
        above=rule.above,
        below=rule.below,
        min_samples=_min_samples_count(rule),
    )


def lookback_of(rule: Rule) -> timedelta:
    """The rule's lookback: for PromQL, from the parsed query (the longest range, subquery range
    plus offset, a min_samples query included); for SQL and drift, zero, since their
    `:window_start` is clipped to when the live version went live and never reaches before it."""
    from watcher.rules.rulefmt import MinSamplesQuery

    if rule.prometheus is None:
        return timedelta(0)
    queries = [rule.prometheus]
    if isinstance(rule.min_samples, MinSamplesQuery):
        queries.append(rule.min_samples.prometheus)
    return max(query_lookback(query) for query in queries)


def query_lookback(query: str) -> timedelta:
    from watcher.rules import promql

    parsed = promql.parse_query(query)
    if isinstance(parsed, promql.PromqlProblem):
        return timedelta(0)  # never sent: the rule errors on every evaluation and breaches nothing
    return promql.lookback(parsed).span


def _min_samples_count(rule: Rule) -> float | None:
    from watcher.rules.rulefmt import MinSamplesQuery

    if rule.min_samples is None or isinstance(rule.min_samples, MinSamplesQuery):
        return None
    return float(rule.min_samples)


def _drift_ref(ref: Any) -> Any:
    from watcher.rules.rulefmt import SqlQuery
    from watcher.sources.drift.spec import SqlRef

    if isinstance(ref, SqlQuery):
        return SqlRef(url=ref.url, query=ref.query, window=ref.window)
    return Path(ref)


def build_source(
    rule: Rule, config: WatcherConfig, prometheus_client: Any = None, prometheus_batch: Any = None
) -> Source:
    """The source for one rule; heavy modules (pandas, Evidently) load only for drift rules.

    Prometheus sources given a `prometheus_batch` (of the same client) are measured together."""
    timeout = config.evaluation.timeout
    if rule.prometheus is not None:
        from watcher.rules.instances import is_vector_rule
        from watcher.rules.rulefmt import MinSamplesQuery
        from watcher.sources.prometheus import PrometheusClient, PrometheusSource

        if prometheus_client is None:
            if config.prometheus is None:
                raise ValueError(f"{rule.id}: a prometheus rule needs the prometheus section")
            prometheus_client = PrometheusClient(
                config.prometheus.url, config.prometheus.header_values(), timeout
            )
        min_query = rule.min_samples if isinstance(rule.min_samples, MinSamplesQuery) else None
        return PrometheusSource(
            prometheus_client,
            rule.prometheus,
            min_samples_query=min_query.prometheus if min_query else None,
            min_samples=min_query.at_least if min_query else _min_samples_count(rule),
            batch=prometheus_batch,
            vector=is_vector_rule(rule),
        )
    if rule.sql is not None:
        from watcher.sources.sql import SqlSource

        window = rule.sql.window or rule.interval
        return SqlSource(rule.sql.url, rule.sql.query, window, timeout, min_samples=_min_samples_count(rule))
    if rule.drift is not None:
        from watcher.sources.drift.source import DriftSource

        drift = rule.drift
        return DriftSource(
            reference=_drift_ref(drift.reference),
            current=_drift_ref(drift.current),
            columns=drift.columns,
            method=drift.method,
            threshold=drift.threshold,
            timeout=timeout,
        )
    raise ValueError(f"{rule.id}: no source")  # rulefmt guarantees exactly one


def new_prometheus_batch(config: WatcherConfig) -> Any:
    """One client and batch for the config's Prometheus: the rules sharing it are asked together."""
    from watcher.sources.prometheus import PrometheusClient
    from watcher.sources.prometheus_batch import PrometheusBatch

    assert config.prometheus is not None
    client = PrometheusClient(
        config.prometheus.url, config.prometheus.header_values(), config.evaluation.timeout
    )
    return PrometheusBatch(client)


def build_runtime_rules(
    rules: dict[str, Rule], config: WatcherConfig, prometheus_batch: Any = None
) -> dict[str, RuntimeRule]:
    """Runtime rules; their Prometheus sources share `prometheus_batch` (a new one when not given:
    rules built apart, by different reloads say, are asked in different requests unless they share
    one)."""
    batch = prometheus_batch
    prometheus_rules = any(rule.prometheus is not None for rule in rules.values())
    if batch is None and config.prometheus is not None and prometheus_rules:
        batch = new_prometheus_batch(config)
    client = batch.client if batch is not None else None
    return {
        rule_id: RuntimeRule(
            rule, build_source(rule, config, client, batch), policy_for(rule), lookback_of(rule)
        )
        for rule_id, rule in rules.items()
    }
