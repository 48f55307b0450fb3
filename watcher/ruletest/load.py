"""Loading and checking a rule unit test file: every problem as FILE:LINE:COL: message.

The test file's own problems are reported at their place in it; problems of the rule files and
the configuration it names keep their own files and positions. A file with any problem runs no
test.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from watcher.remediations.base import AdapterSettings
from watcher.rules.config import GLOB_CHARACTERS, PrometheusSettings, TargetConfig, WatcherConfig, load_config
from watcher.rules.durations import format_duration
from watcher.rules.findings import Finding, did_you_mean, sorted_findings, validation_findings
from watcher.rules.rulefmt import Rule, load_rule_file
from watcher.rules.yamlsafe import TreePath, YamlDocument, YamlFailure, load_mapping_document, without_repeats
from watcher.ruletest.fileformat import (
    CaseSpec,
    ExpectedIncidentSpec,
    ExpectedStateSpec,
    IncidentExpectation,
    InputSeries,
    InputValues,
    InputValuesSpec,
    RuleTestCase,
    RuleTestFile,
    RuleTestFileSpec,
    StateExpectation,
)
from watcher.ruletest.notation import NotationError, Point, SeriesId, parse_series, parse_values

# Never used for a query: the test runner hands every source its own local Prometheus. Rule files
# are checked against a configuration that has a prometheus section, as the daemon's would be.
PLACEHOLDER_PROMETHEUS = PrometheusSettings(url="http://127.0.0.1:9090")
STAND_IN_ADAPTER = "(rule test stand-in)"
# A test stepping one rule more often than this is a typo (`at: 30d` with rules every 15s).
MAX_EVALUATIONS = 10_000


@dataclass(frozen=True)
class RuleTestFileResult:
    test_file: RuleTestFile | None  # None when there is any finding
    findings: list[Finding] = field(default_factory=list)
    unreadable: bool = False  # the test file itself is missing or unreadable


def load_test_file(
    path: Path, *, default_config: WatcherConfig | None = None, env: Mapping[str, str] | None = None
) -> RuleTestFileResult:
    """Read and check `path`. `default_config` serves test files without `config:`; without
    either, a built-in configuration accepts any target the rule files name."""
    environment = os.environ if env is None else env
    doc = load_mapping_document(path, environment)
    if isinstance(doc, YamlFailure):
        return RuleTestFileResult(None, sorted_findings(doc.findings), unreadable=doc.unreadable)
    try:
        spec = RuleTestFileSpec.model_validate(doc.data)
    except ValidationError as error:
        findings = [*doc.findings, *without_repeats(doc, validation_findings(error, doc, RuleTestFileSpec))]
        return RuleTestFileResult(None, sorted_findings(findings))
    checker = _Checker(doc, spec.evaluation_interval)
    for key in ("rule_files", "tests"):
        if not getattr(spec, key):
            checker.at((key,), f"{key}: give at least one")
    rule_paths = checker.rule_paths(spec)
    config = checker.config(spec, rule_paths, default_config, environment)
    rules = checker.rules(rule_paths, config, environment) if config is not None else None
    cases = [checker.case(index, case, rules) for index, case in enumerate(spec.tests)]
    findings = [*doc.findings, *checker.findings]
    if findings or config is None or rules is None:
        return RuleTestFileResult(None, sorted_findings(findings))
    return RuleTestFileResult(RuleTestFile(path, config, rules, spec.evaluation_interval, tuple(cases)))


class _Checker:
    """Collects the findings of one test file while turning its parts into checked values."""

    def __init__(self, doc: YamlDocument, evaluation_interval: timedelta | None) -> None:
        self.doc = doc
        self.evaluation_interval = evaluation_interval
        self.findings: list[Finding] = []

    def at(self, path: TreePath, message: str, *, on_key: bool = False) -> None:
        line, column = self.doc.key_position(path) if on_key else self.doc.position(path)
        self.findings.append(Finding(self.doc.path, line, column, message))

    def rule_paths(self, spec: RuleTestFileSpec) -> list[Path]:
        base = self.doc.path.parent
        single = isinstance(self.doc.data.get("rule_files"), str)
        paths: list[Path] = []
        for index, entry in enumerate(spec.rule_files):
            where: TreePath = ("rule_files",) if single else ("rule_files", index)
            located = base / entry
            if not GLOB_CHARACTERS.isdisjoint(entry):
                matches = sorted(glob.glob(str(located), recursive=True))
                if not matches:
                    self.at(where, f"rule_files: no file matches '{entry}'")
                paths.extend(Path(match) for match in matches if Path(match).is_file())
            elif located.is_file():
                paths.append(located)
            elif located.is_dir():
                self.at(where, f"rule_files: '{entry}' is a directory: name files, or a glob like dir/*.yaml")
            else:
                self.at(where, f"rule_files: '{entry}' does not exist (paths are relative to this file)")
        return list(dict.fromkeys(paths))

    def config(
        self,
        spec: RuleTestFileSpec,
        rule_paths: Sequence[Path],
        default: WatcherConfig | None,
        env: Mapping[str, str],
    ) -> WatcherConfig | None:
        if spec.config is None:
            config = default or _built_in_config(self.doc.path, rule_paths, env)
        else:
            located = self.doc.path.parent / spec.config
            if not located.is_file():
                self.at(
                    ("config",), f"config: '{spec.config}' does not exist (paths are relative to this file)"
                )
                return None
            loaded = load_config(located, env)
            self.findings.extend(loaded.findings)
            if loaded.config is None:
                return None
            config = loaded.config
        if config.prometheus is None:
            config = config.model_copy(update={"prometheus": PLACEHOLDER_PROMETHEUS})
        return config

    def rules(
        self, paths: Sequence[Path], config: WatcherConfig, env: Mapping[str, str]
    ) -> dict[str, Rule] | None:
        rules: dict[str, Rule] = {}
        clean = True
        for path in paths:
            result = load_rule_file(path, config, env)
            self.findings.extend(result.findings)
            if result.rule_file is None:
                clean = False
                continue
            for rule in result.rule_file.rules:
                if rule.id in rules:
                    first = rules[rule.id]
                    message = f"rule id '{rule.id}' is already defined in {first.file}:{first.line}"
                    self.findings.append(Finding(rule.file, rule.line, rule.column, message))
                    clean = False
                rules.setdefault(rule.id, rule)
        return rules if clean else None

    def case(self, index: int, spec: CaseSpec, rules: Mapping[str, Rule] | None) -> RuleTestCase:
        path: TreePath = ("tests", index)
        if not spec.expected_incidents and not spec.expected_states:
            self.at(path, f'test "{spec.name}" expects nothing: give expected_incidents or expected_states')
        inputs = self._inputs(path, spec, rules)
        incidents = tuple(
            self._incident((*path, "expected_incidents", number), expected, rules, inputs)
            for number, expected in enumerate(spec.expected_incidents)
        )
        states = tuple(
            self._state((*path, "expected_states", number), expected, rules, inputs)
            for number, expected in enumerate(spec.expected_states)
        )
        case = RuleTestCase(spec.name, spec.interval, self._series(path, spec), inputs, incidents, states)
        if rules is not None:
            self._length(path, case, rules)
        return case

    def _series(self, path: TreePath, spec: CaseSpec) -> tuple[InputSeries, ...]:
        found: dict[SeriesId, int] = {}
        series: list[InputSeries] = []
        for number, entry in enumerate(spec.input_series):
            where = (*path, "input_series", number)
            selector = parse_series(entry.series)
            points = self._points((*where, "values"), entry.values)
            if isinstance(selector, NotationError):
                self.at((*where, "series"), f"series: {selector.message}")
                continue
            if selector in found:
                self.at(
                    (*where, "series"),
                    f"series {selector} is given twice (first in input_series[{found[selector]}])",
                )
                continue
            found[selector] = number
            if points is not None:
                series.append(InputSeries(selector, points))
        return tuple(series)

    def _points(self, where: TreePath, text: str) -> tuple[Point, ...] | None:
        points = parse_values(text)
        if isinstance(points, NotationError):
            self.at(where, f"{where[-1]}: {points.message}")
            return None
        return tuple(points)

    def _inputs(
        self, path: TreePath, spec: CaseSpec, rules: Mapping[str, Rule] | None
    ) -> dict[str, InputValues]:
        inputs: dict[str, InputValues] = {}
        for rule_id, entry in spec.input_values.items():
            where = (*path, "input_values", rule_id)
            if rules is not None and rule_id not in rules:
                self.at(where, _unknown_rule(rule_id, rules), on_key=True)
            if isinstance(entry, InputValuesSpec):
                values = self._points((*where, "values"), entry.values)
                samples = (
                    self._points((*where, "samples"), entry.samples) if entry.samples is not None else None
                )
            else:
                values, samples = self._points(where, entry), None
            if values is not None:
                inputs[rule_id] = InputValues(values, samples)
        return inputs

    def _incident(
        self,
        where: TreePath,
        spec: ExpectedIncidentSpec,
        rules: Mapping[str, Rule] | None,
        inputs: Mapping[str, InputValues],
    ) -> IncidentExpectation:
        if spec.rule is None and (spec.labels or spec.value is not None):
            self.at(where, "labels and value describe an incident: name its rule")
        if spec.rule is not None:
            self._testable((*where, "rule"), spec.rule, rules, inputs)
        return IncidentExpectation(spec.at, spec.rule, dict(spec.labels), spec.value)

    def _state(
        self,
        where: TreePath,
        spec: ExpectedStateSpec,
        rules: Mapping[str, Rule] | None,
        inputs: Mapping[str, InputValues],
    ) -> StateExpectation:
        self._testable((*where, "rule"), spec.rule, rules, inputs)
        return StateExpectation(spec.at, spec.rule, spec.state, spec.outcome, spec.value)

    def _testable(
        self, where: TreePath, rule_id: str, rules: Mapping[str, Rule] | None, inputs: Mapping[str, Any]
    ) -> None:
        if rules is None:
            return  # the rule files have findings of their own: nothing to compare with
        rule = rules.get(rule_id)
        if rule is None:
            self.at(where, _unknown_rule(rule_id, rules))
        elif rule.prometheus is None and rule_id not in inputs:
            kind = "sql" if rule.sql is not None else "drift"
            self.at(where, f"rule '{rule_id}' is a {kind} rule: give its values in this test's input_values")

    def _length(self, path: TreePath, case: RuleTestCase, rules: Mapping[str, Rule]) -> None:
        for rule in evaluated_rules(rules, case):
            interval = self.evaluation_interval or rule.interval
            if case.end / interval + 1 > MAX_EVALUATIONS:
                message = (
                    f'test "{case.name}" would evaluate {rule.id} more than {MAX_EVALUATIONS} times '
                    f"(every {format_duration(interval)} up to {format_duration(case.end)}): "
                    "shorten it or set evaluation_interval"
                )
                self.at(path, message)
                return


def evaluated_rules(rules: Mapping[str, Rule], case: RuleTestCase) -> list[Rule]:
    """The rules a test steps: every Prometheus rule, and those given input_values."""
    return [rule for rule in rules.values() if rule.prometheus is not None or rule.id in case.inputs]


def _unknown_rule(rule_id: str, rules: Mapping[str, Rule]) -> str:
    hint = did_you_mean(rule_id, list(rules))
    return f"rule '{rule_id}' is not in the rule files{hint}"


def _built_in_config(test_path: Path, rule_paths: Sequence[Path], env: Mapping[str, str]) -> WatcherConfig:
    """The SPEC's defaults, a Prometheus, and every target the rule files name as a stand-in (a
    unit test rolls nothing back)."""
    targets = {
        name: TargetConfig(name=name, adapter=STAND_IN_ADAPTER, settings=AdapterSettings())
        for name in _named_targets(rule_paths, env)
    }
    return WatcherConfig(
        prometheus=PLACEHOLDER_PROMETHEUS,
        targets=targets,
        path=test_path.absolute(),
        base_dir=test_path.parent.absolute(),
    )


def _named_targets(rule_paths: Sequence[Path], env: Mapping[str, str]) -> list[str]:
    names: list[Any] = []  # as written; only strings are names
    for path in rule_paths:
        doc = load_mapping_document(path, env)
        if isinstance(doc, YamlFailure):
            continue  # reported when the rule file is loaded
        names.append(doc.data.get("target"))
        rules = doc.data.get("rules")
        if isinstance(rules, list):
            names.extend(rule.get("target") for rule in rules if isinstance(rule, dict))
    return sorted({name for name in names if isinstance(name, str)})
