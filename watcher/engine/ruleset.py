"""The rules the daemon runs, and their reload: a bad file keeps its previous rules running."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from watcher.engine.bind import RuntimeRule, build_runtime_rules, new_prometheus_batch
from watcher.engine.rule_watch import RuleFilesWatch
from watcher.engine.shards import ShardSizing, place, rule_hash
from watcher.rules.config import WatcherConfig
from watcher.rules.durations import format_duration
from watcher.rules.findings import Finding
from watcher.rules.rulefmt import MinSamplesQuery, Rule, load_rules
from watcher.sources.prometheus import PrometheusSource
from watcher.sources.prometheus_batch import MAX_BATCH_QUERIES
from watcher.sources.prometheus_family import MAX_FAMILY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedRules:
    runtime: dict[str, RuntimeRule]
    findings: list[Finding] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


# Shards fill to about this many queries on average, so that hashing's unevenness stays within
# one request (MAX_BATCH_QUERIES); see watcher.engine.shards.
SHARD_SIZING = ShardSizing(limit=MAX_BATCH_QUERIES, target=MAX_BATCH_QUERIES * 7 // 8)
# A family of rules weighs one query in a shard per this many of its rules (see placement_units).
FAMILY_SHARE = 16


def queries_of(rule: Rule) -> int:
    """How many queries a Prometheus rule asks at each evaluation: its own, and its min_samples."""
    return 1 + isinstance(rule.min_samples, MinSamplesQuery)


def evaluation_groups(rules: Mapping[str, RuntimeRule]) -> dict[str, tuple[str, ...]]:
    """Which rules are evaluated together, as Prometheus evaluates a rule group in one pass.

    Every Prometheus rule of one interval shares batches with the others, whatever file it is in
    (one datasource and one set of headers: the config's `prometheus` section). They are split
    into shards of at most one request's worth of queries, keyed `prometheus/<interval>/<shard>`,
    a rule's shard chosen by a hash of its id (watcher.engine.shards): a reload, a new file or a
    removed one moves few rules from shard to shard, every replica computes the same groups, and a
    group's lease survives reloads. Every other rule (SQL, drift: each its own connection or
    data) is a group of its own, `rule:<id>`. Each group's ids are sorted.
    """
    classes: dict[timedelta, dict[str, RuntimeRule]] = {}
    groups: dict[str, tuple[str, ...]] = {}
    for rule_id, runtime in rules.items():
        rule = runtime.rule
        if rule.prometheus is not None:
            classes.setdefault(rule.interval, {})[rule_id] = runtime
        else:
            groups[f"rule:{rule_id}"] = (rule_id,)
    for interval, members_of_interval in classes.items():
        weights, units = placement_units(members_of_interval)
        for number, placed in place(weights, SHARD_SIZING).items():
            members = sorted(rule_id for unit in placed for rule_id in units[unit])
            groups[f"prometheus/{format_duration(interval)}/{number}"] = tuple(members)
    return groups


def placement_units(rules: Mapping[str, RuntimeRule]) -> tuple[dict[str, int], dict[str, list[str]]]:
    """What shards are filled with: each rule alone (its weight the queries it asks), except the
    rules of one family (the same query but for one label's value, asked as one: see
    sources.prometheus_family), which go together, by up to MAX_FAMILY, so that a family is one
    request's arm, not one per shard. A family weighs one query per FAMILY_SHARE rules: it is one
    arm of the request, but each of its rules is still stepped and written."""
    weights: dict[str, int] = {}
    units: dict[str, list[str]] = {}
    families: dict[str, list[str]] = {}
    for rule_id, runtime in rules.items():
        key = family_key(runtime)
        if key is None:
            weights[rule_id], units[rule_id] = queries_of(runtime.rule), [rule_id]
        else:
            families.setdefault(key, []).append(rule_id)
    for key, members in families.items():
        members.sort()
        for start in range(0, len(members), MAX_FAMILY):
            unit = f"family:{rule_hash(key):016x}:{start // MAX_FAMILY}"
            units[unit] = members[start : start + MAX_FAMILY]
            weights[unit] = math.ceil(len(units[unit]) / FAMILY_SHARE)
    return weights, units


def family_key(runtime: RuntimeRule) -> str | None:
    source = runtime.source
    if not isinstance(source, PrometheusSource) or queries_of(runtime.rule) != 1:
        return None
    member = source.family_member()
    return None if member is None else f"{member.label}\x00{member.key}"


class RuleBook:
    """Loads rules, and reloads them on change keeping the last good version of each file."""

    def __init__(self, config: WatcherConfig, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.env = env
        self.current = LoadedRules(runtime={})
        self._on_disk = RuleFilesWatch(config)
        # One batch for every load: rules of different reloads share requests (and what the
        # batch learnt, such as which queries go alone).
        self._prometheus_batch: Any = None

    def load(self) -> LoadedRules:
        result = load_rules(self.config, env=self.env)
        bad_files = {finding.file.resolve() for finding in result.findings}
        rules: dict[str, Rule] = dict(result.rules)
        # A file that fails now keeps the rules it had when it last loaded cleanly.
        for rule_id, runtime in self.current.runtime.items():
            if Path(runtime.rule.file).resolve() in bad_files and rule_id not in rules:
                rules[rule_id] = runtime.rule
        previous, previous_findings = self.current.runtime, self.current.findings
        runtime_rules = build_runtime_rules(
            {rid: r for rid, r in rules.items() if rid not in previous or previous[rid].rule is not r},
            self.config,
            self._batch_for(rules),
        )
        for rule_id, rule in rules.items():
            if rule_id in previous and previous[rule_id].rule is rule:
                runtime_rules[rule_id] = previous[rule_id]
        self.current = LoadedRules(
            runtime=runtime_rules, findings=list(result.findings), files=list(result.files)
        )
        self._on_disk.snapshot()
        if result.findings != previous_findings:  # logged once, not again at every reload
            for finding in result.findings:
                log.error(
                    "rule file problem: %s", finding, extra={"event": "rule_finding", "finding": str(finding)}
                )
        return self.current

    def _batch_for(self, rules: Mapping[str, Rule]) -> Any:
        wanted = self.config.prometheus is not None and any(r.prometheus is not None for r in rules.values())
        if wanted and self._prometheus_batch is None:
            self._prometheus_batch = new_prometheus_batch(self.config)
        return self._prometheus_batch

    def changed_on_disk(self) -> bool:
        return self._on_disk.changed()
