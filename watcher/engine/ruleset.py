"""The rules the daemon runs, and their reload: a bad file keeps its previous rules running."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from watcher.engine.bind import RuntimeRule, build_runtime_rules
from watcher.rules.config import WatcherConfig
from watcher.rules.findings import Finding
from watcher.rules.rulefmt import Rule, load_rules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedRules:
    runtime: dict[str, RuntimeRule]
    findings: list[Finding] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def _fingerprint(files: list[Path], config: WatcherConfig) -> tuple[tuple[str, float, int], ...]:
    """What a change of the rule files looks like: paths, mtimes and sizes (new files included)."""
    seen = []
    for path in files:
        try:
            stat = path.stat()
            seen.append((str(path), stat.st_mtime, stat.st_size))
        except OSError:
            seen.append((str(path), -1.0, -1))
    return tuple(sorted(seen))


def evaluation_groups(rules: Mapping[str, RuntimeRule]) -> dict[str, tuple[str, ...]]:
    """Which rules are evaluated together, as Prometheus evaluates a rule group in one pass.

    The Prometheus rules of one file with one interval form a group: one scheduled job, one request
    for all their queries. Every other rule (SQL, drift: each its own connection or data) is a
    group of its own. Keys are stable across reloads while a file keeps its rules' interval.
    """
    groups: dict[str, list[RuntimeRule]] = {}
    for rule_id, runtime in rules.items():
        rule = runtime.rule
        if rule.prometheus is not None:
            key = f"file:{Path(rule.file)}@{rule.interval.total_seconds():g}s"
        else:
            key = f"rule:{rule_id}"
        groups.setdefault(key, []).append(runtime)
    return {
        key: tuple(runtime.id for runtime in sorted(members, key=lambda r: (r.rule.line, r.id)))
        for key, members in groups.items()
    }


class RuleBook:
    """Loads rules, and reloads them on change keeping the last good version of each file."""

    def __init__(self, config: WatcherConfig, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.env = env
        self.current = LoadedRules(runtime={})
        self._fingerprint: tuple[tuple[str, float, int], ...] = ()

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
        )
        for rule_id, rule in rules.items():
            if rule_id in previous and previous[rule_id].rule is rule:
                runtime_rules[rule_id] = previous[rule_id]
        self.current = LoadedRules(
            runtime=runtime_rules, findings=list(result.findings), files=list(result.files)
        )
        self._fingerprint = _fingerprint(self._watched_files(), self.config)
        if result.findings != previous_findings:  # logged once, not again at every reload
            for finding in result.findings:
                log.error(
                    "rule file problem: %s", finding, extra={"event": "rule_finding", "finding": str(finding)}
                )
        return self.current

    def changed_on_disk(self) -> bool:
        return _fingerprint(self._watched_files(), self.config) != self._fingerprint

    def _watched_files(self) -> list[Path]:
        from watcher.rules.rulefmt import rule_file_paths

        return rule_file_paths(self.config)
