"""What a schema cannot say about a rule file, checked on its raw tree with positions.

One source and one comparison per rule, unique names, known targets, intervals longer than the
timeout, a target for actions that roll back, count queries for Prometheus min_samples, PromQL
that parses, and safe summary templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from watcher.model import Action
from watcher.rules.config import WatcherConfig
from watcher.rules.durations import format_duration, parse_duration
from watcher.rules.findings import Finding, did_you_mean, fragment
from watcher.rules.name_templates import is_template
from watcher.rules.promql import PLACEHOLDER, PromqlProblem, parse_query
from watcher.rules.templates import template_problems
from watcher.rules.yamlsafe import TreePath, YamlDocument
from watcher.sources.sql import query_parameters as sql_query_parameters
from watcher.sources.sql import query_problems

SOURCES = ("prometheus", "sql", "drift")
COMPARISONS = ("above", "below")
NEEDS_TARGET = (Action.ROLLBACK.value, Action.APPROVE.value)


def semantic_findings(doc: YamlDocument, config: WatcherConfig) -> list[Finding]:
    data = doc.data
    findings = _target_findings(doc, ("target",), config)
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list):
        return findings
    names: dict[str, int] = {}
    for index, raw in enumerate(raw_rules):
        if isinstance(raw, dict):
            path: TreePath = ("rules", index)
            findings.extend(_rule_findings(doc, path, raw, config, file_target=data.get("target")))
            findings.extend(_repeated_name(doc, path, raw, names))
    return findings


def _rule_findings(
    doc: YamlDocument, path: TreePath, raw: dict[str, Any], config: WatcherConfig, file_target: Any
) -> list[Finding]:
    def at(key: str | None, message: str, *, on_key: bool = False) -> Finding:
        where = path if key is None else (*path, key)
        line, column = doc.key_position(where) if on_key else doc.position(where)
        return Finding(doc.path, line, column, message)

    findings = [
        *_exactly_one(raw, SOURCES, at, "a source"),
        *_exactly_one(raw, COMPARISONS, at, "a threshold"),
        *_target_findings(doc, (*path, "target"), config),
    ]
    if raw.get("action") in NEEDS_TARGET and not (raw.get("target") or file_target):
        message = f"action {raw['action']} needs a target: set target: in the file or the rule"
        findings.append(at("action", message))
    interval = parse_duration(raw["every"]) if isinstance(raw.get("every"), str) else None
    timeout = config.evaluation.timeout
    if isinstance(interval, timedelta) and timedelta(0) < interval <= timeout:
        message = f"every: must be longer than evaluation.timeout ({format_duration(timeout)})"
        findings.append(at("every", message))
    if raw.get("prometheus") is not None and isinstance(raw.get("min_samples"), int | float):
        # A PromQL value carries no sample count: the count must come from a query of its own.
        message = "min_samples: a prometheus rule counts samples with {prometheus: QUERY, at_least: N}"
        findings.append(at("min_samples", message))
    findings.extend(_promql_findings(doc, path, raw))
    findings.extend(_version_findings(raw, file_target, at))
    if raw.get("prometheus") is not None and config.prometheus is None:
        findings.append(at("prometheus", "prometheus: watcher.yaml has no prometheus section", on_key=True))
    if isinstance(raw.get("summary"), str):
        findings.extend(_template_findings(doc, (*path, "summary"), raw["summary"]))
    findings.extend(_sql_parameter_findings(doc, path, raw))
    return findings


# Where a rule holds SQL text: the sql source, and a drift rule's data given as {url:, query:}.
_SQL_QUERIES: tuple[TreePath, ...] = (
    ("sql", "query"),
    ("drift", "current", "query"),
    ("drift", "reference", "query"),
)


def _sql_parameter_findings(doc: YamlDocument, path: TreePath, raw: dict[str, Any]) -> list[Finding]:
    """A `:name` that watcher never binds would fail at every evaluation: refused up front."""
    findings: list[Finding] = []
    for where in _SQL_QUERIES:
        query: Any = raw
        for key in where:
            query = query.get(key) if isinstance(query, dict) else None
        if isinstance(query, str):
            line, column = doc.position((*path, *where))
            findings.extend(
                Finding(doc.path, line, column, f"query: {problem}") for problem in query_problems(query)
            )
    return findings


def _promql_findings(doc: YamlDocument, path: TreePath, raw: dict[str, Any]) -> list[Finding]:
    """A `prometheus:` query (or `min_samples.prometheus:`) that does not parse, at its position."""
    queries: list[tuple[TreePath, str]] = [((*path, "prometheus"), "prometheus")]
    if isinstance(raw.get("min_samples"), dict):
        queries.append(((*path, "min_samples", "prometheus"), "min_samples.prometheus"))
    findings = []
    for where, key in queries:
        text = doc.get(where) if where in doc.values else None
        if not isinstance(text, str):
            continue
        parsed = parse_query(text)
        if isinstance(parsed, PromqlProblem):
            near = "" if parsed.offset is None else f" (near character {parsed.offset + 1} of the query)"
            line, column = doc.position(where)
            findings.append(Finding(doc.path, line, column, f"{key}: {parsed.message}{near}"))
    return findings


def _version_findings(raw: dict[str, Any], file_target: Any, at: Any) -> list[Finding]:
    """The live version needs one known target: none, or one built per series, has no version."""
    query, sql = raw.get("prometheus"), raw.get("sql")
    if isinstance(query, str):
        key, uses = "prometheus", PLACEHOLDER.search(query) is not None
    elif isinstance(sql, dict) and isinstance(sql.get("query"), str):
        key, uses = "sql", _binds_version(sql["query"])
    else:
        return []
    target = raw.get("target") or file_target
    if not uses:
        return []
    if not isinstance(target, str):
        return [at(key, f"{key}: the live version needs a target: set target: in the file or the rule")]
    if is_template(target):
        return [at(key, f"{key}: the live version needs one target; this rule's is built per series")]
    return []


def _binds_version(query: str) -> bool:
    try:
        return "version" in sql_query_parameters(query)
    except Exception:  # a query SQLAlchemy cannot read is reported by the SQL checks
        return False


def _exactly_one(raw: dict[str, Any], keys: Sequence[str], at: Any, what: str) -> list[Finding]:
    present = [key for key in keys if raw.get(key) is not None]  # `above: null` is no threshold
    choices = ", ".join(keys[:-1]) + f" or {keys[-1]}"
    if not present:
        return [at(None, f"the rule needs {what}: one of {choices}")]
    return [
        at(key, f"the rule has both {present[0]} and {key}: exactly one of {choices}", on_key=True)
        for key in present[1:]
    ]


def _target_findings(doc: YamlDocument, path: TreePath, config: WatcherConfig) -> list[Finding]:
    target = doc.get(path) if path in doc.values else None
    if not isinstance(target, str) or target in config.targets or "{{" in target:
        return []  # a target built per series is checked per instance, when the series is known
    known = ", ".join(sorted(config.targets)) or "none"
    line, column = doc.position(path)
    hint = did_you_mean(target, list(config.targets))
    message = (
        f"target '{fragment(doc.shown(path, target))}' is not in watcher.yaml{hint}: its targets are {known}"
    )
    return [Finding(doc.path, line, column, message)]


def _repeated_name(
    doc: YamlDocument, path: TreePath, raw: dict[str, Any], names: dict[str, int]
) -> list[Finding]:
    name = raw.get("name")
    if not isinstance(name, str):
        return []
    line, column = doc.position((*path, "name"))
    if name in names:
        return [
            Finding(
                doc.path,
                line,
                column,
                f"duplicate rule name '{fragment(name)}' (first at line {names[name]})",
            )
        ]
    names[name] = line
    return []


def _template_findings(doc: YamlDocument, path: TreePath, template: str) -> list[Finding]:
    line, column = doc.position(path)
    return [
        Finding(doc.path, line, column, f"summary: {problem.message}")
        for problem in template_problems(template)
    ]
