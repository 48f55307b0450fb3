"""`watcher test TESTFILE…`: rule unit tests, in the spirit of `promtool test rules`, for watcher's
rules and its state machine (inactive → pending → firing, `for`, `keep_firing_for`, no data).

A test file (paths are relative to it)::

    rule_files: [../fraud-detector.yaml]     # files or globs
    config: ../../watcher.yaml               # optional; see "Configuration" below
    evaluation_interval: 15s                 # optional; default: each rule's own interval
    tests:
      - name: p99 latency breach fires after 1m
        interval: 15s                        # spacing of input samples (default 1m)
        input_series:
          - series: 'model_request_seconds_bucket{model="fraud-detector",le="0.25"}'
            values: '0+100x20 2000+50x20'    # a+bxn, a-bxn, axn, _ (no sample), _xn; see below
        input_values:                        # optional: a rule's measured values, given directly
          fraud-detector/accuracy-1h: '0.95x10 0.8x10'
          # or {values: '0.95x10 0.8x10', samples: '500x20'} when min_samples matters
        expected_incidents:                  # the incidents open at `at`: exactly these rules
          - at: 6m
            rule: fraud-detector/p99-latency
            labels: {team: payments}         # optional: these labels, among the incident's
            value: {above: 0.25, below: 1}   # optional: the latest value, a number or a range
          - at: 2m                           # no rule: no incident is open at 2m
        expected_states:                     # optional: a rule's state at a time
          - at: 4m
            rule: fraud-detector/p99-latency
            state: pending                   # inactive | pending | firing
            outcome: breach                  # optional: ok | breach | no_data | error
            value: 0.31                      # optional, as above

Values notation (watcher.ruletest.notation): `0+10x3` is 0 10 20 30; `5x2` is 5 5 5; `_x3` is
three steps without a sample. promtool's `stale` cannot be backfilled and is refused.

Evaluation: the input series are written as OpenMetrics, backfilled with promtool into a temporary
directory, and one real Prometheus serves them for the whole file. A test's time 0 is
2020-01-01T00:00:00Z for the first test; every later test starts whole days after the previous
one ends, past the longest range, subquery and offset of the rules' queries plus the 5m lookback,
so no test sees another's data. Each rule is evaluated at 0, its interval, twice that, ... up to
the test's last input point or expectation, through the same source and pure state machine as the
daemon (min_samples included); the state at `at` is the one of the latest evaluation at or before
it. Prometheus rules are evaluated; SQL and drift rules only when the test gives their
input_values (a value per `interval`, no data where `_` or past the end; without `samples`, every
value counts as backed by enough samples).

Configuration: `config:` names a watcher.yaml (its targets and evaluation defaults apply; its
Prometheus is never queried). Without it, `watcher test --config FILE` serves; without either, a
built-in configuration with the SPEC's defaults that accepts every target the rule files name.

Output: each failed expectation as `TESTFILE: test "name": at 6m: expected fraud-detector/p99-latency
firing, got pending (since 5m30s, value 0.31 > 0.25)`, each problem of a test file (or of the rule
files and configuration it names) as FILE:LINE:COL: message, then `3 tests, 3 passed, 0 failed`.
Exit 0 when every test passes, 1 on any failure or finding, 2 when a test file cannot be read.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from watcher.commands.common import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE
from watcher.decisions.evaluation import RulePolicy, RuleStatus, step
from watcher.engine.bind import build_source, policy_for
from watcher.model import ErrorKind, Measurement, NoData, SeriesValues, SourceAnswer, SourceError, Value
from watcher.rules.config import WatcherConfig
from watcher.rules.durations import format_duration, parse_duration
from watcher.rules.findings import Finding
from watcher.rules.rulefmt import MinSamplesQuery, Rule
from watcher.ruletest.expect import Evaluation, Timeline, check_case
from watcher.ruletest.fileformat import InputValues, RuleTestCase, RuleTestFile
from watcher.ruletest.load import evaluated_rules, load_test_file
from watcher.ruletest.notation import SeriesId, openmetrics_value
from watcher.ruletest.prometheus import LocalPrometheus, PrometheusUnavailable, start_prometheus
from watcher.sources.base import NO_SCOPE, QueryScope, Source
from watcher.sources.prometheus import PrometheusClient

BASE_TIME = datetime(2020, 1, 1, tzinfo=UTC)  # time 0 of the first test (promtool uses 0)
LOOKBACK = timedelta(minutes=5)  # Prometheus' default query.lookback-delta
_DAY = timedelta(days=1)
_RANGE = re.compile(r"\[\s*([0-9a-zA-Z]+)\s*(?::\s*([0-9a-zA-Z]*)\s*)?\]")
_OFFSET = re.compile(r"\boffset\s+-?\s*([0-9a-zA-Z]+)")


@dataclass(frozen=True)
class CaseResult:
    name: str
    failures: list[str]  # empty: passed


@dataclass(frozen=True)
class FileResult:
    cases: list[CaseResult] = field(default_factory=list)
    not_run: PrometheusUnavailable | None = None  # every test of the file counts as failed


class InputValuesSource:
    """A rule's measured values given by the test: one per `interval` from the test's start."""

    def __init__(self, inputs: InputValues, start: datetime, interval: timedelta, policy: RulePolicy) -> None:
        self._inputs = inputs
        self._start = start
        self._interval = interval
        self._assumed_samples = policy.min_samples

    def measure(self, at: datetime, scope: QueryScope = NO_SCOPE) -> Measurement:
        offset = at - self._start
        index = offset // self._interval
        value = self._inputs.values[index] if 0 <= index < len(self._inputs.values) else None
        if value is None:
            return NoData(f"no input value at {format_duration(offset)}")
        samples = self._assumed_samples
        if self._inputs.samples is not None:
            samples = self._inputs.samples[index] if index < len(self._inputs.samples) else None
        return Value(value=value, samples=samples, evidence={"input_values": True})


def run_file(test_file: RuleTestFile) -> FileResult:
    """Every test of a checked file, against one Prometheus serving all their input series."""
    starts = case_starts(test_file)
    if not any(_needs_prometheus(test_file, case) for case in test_file.cases):
        return FileResult(
            [
                _run_case(test_file, case, start, None)
                for case, start in zip(test_file.cases, starts, strict=True)
            ]
        )
    with tempfile.TemporaryDirectory(prefix="watcher-test-") as work_dir:
        prometheus = start_prometheus(Path(work_dir), openmetrics_text(test_file, starts))
        if isinstance(prometheus, PrometheusUnavailable):
            return FileResult(not_run=prometheus)
        try:
            return FileResult(_run_with(test_file, starts, prometheus))
        finally:
            prometheus.stop()


def _run_with(
    test_file: RuleTestFile, starts: Sequence[datetime], prometheus: LocalPrometheus
) -> list[CaseResult]:
    client = PrometheusClient(prometheus.url, {}, test_file.config.evaluation.timeout)
    try:
        return [
            _run_case(test_file, case, start, client)
            for case, start in zip(test_file.cases, starts, strict=True)
        ]
    finally:
        client.close()


def _run_case(
    test_file: RuleTestFile, case: RuleTestCase, start: datetime, client: PrometheusClient | None
) -> CaseResult:
    timelines: dict[str, Timeline] = {}
    for rule in evaluated_rules(test_file.rules, case):
        policy = policy_for(rule)
        inputs = case.inputs.get(rule.id)
        source: Source
        if inputs is not None:
            source = InputValuesSource(inputs, start, case.interval, policy)
        else:
            source = build_source(rule, test_file.config, client)
        timelines[rule.id] = simulate(rule, source, policy, start, test_file.interval_of(rule), case.end)
    return CaseResult(case.name, check_case(case, timelines))


def one_measurement(answer: SourceAnswer) -> Measurement:
    """Rule unit tests follow one series per rule: several are an error the test shows."""
    if isinstance(answer, SeriesValues):
        message = f"the query returned {len(answer.series)} series; rule tests follow one series per rule"
        return SourceError(ErrorKind.BAD_ANSWER, message, retryable=False)
    return answer


def simulate(
    rule: Rule, source: Source, policy: RulePolicy, start: datetime, interval: timedelta, end: timedelta
) -> Timeline:
    """Evaluate `rule` at start, start + interval, ... up to start + end, as the daemon would."""
    status = RuleStatus()
    evaluations: list[Evaluation] = []
    offset = timedelta(0)
    while offset <= end:
        measurement = one_measurement(source.measure(start + offset))
        transition = step(status, measurement, policy, start + offset)
        evaluations.append(Evaluation(offset, measurement, transition))
        status = transition.current
        offset += interval
    return Timeline(rule, policy, start, tuple(evaluations))


def _needs_prometheus(test_file: RuleTestFile, case: RuleTestCase) -> bool:
    return any(rule.id not in case.inputs for rule in evaluated_rules(test_file.rules, case))


def case_starts(test_file: RuleTestFile) -> list[datetime]:
    """Time 0 of each test: whole days apart, far enough that no query reaches a neighbour's data."""
    reach = max((query_reach(query) for query in _queries(test_file)), default=timedelta(0))
    starts: list[datetime] = []
    start = BASE_TIME
    for case in test_file.cases:
        starts.append(start)
        needed = case.end + reach + LOOKBACK
        start += _DAY * (math.floor(needed / _DAY) + 1)
    return starts


def query_reach(query: str) -> timedelta:
    """How far back (or forward, with a negative offset) a query looks: its ranges, subquery
    steps and offsets added up, an upper bound for any nesting of them."""
    total = timedelta(0)
    texts = [part for match in _RANGE.finditer(query) for part in match.groups() if part]
    texts += [match.group(1) for match in _OFFSET.finditer(query)]
    for text in texts:
        parsed = parse_duration(text)
        if isinstance(parsed, timedelta):
            total += parsed
    return total


def _queries(test_file: RuleTestFile) -> list[str]:
    queries: list[str] = []
    for rule in test_file.rules.values():
        if rule.prometheus is not None:
            queries.append(rule.prometheus)
        if isinstance(rule.min_samples, MinSamplesQuery):
            queries.append(rule.min_samples.prometheus)
    return queries


def openmetrics_text(test_file: RuleTestFile, starts: Sequence[datetime]) -> str | None:
    """Every test's input series at its own times, each series' samples together and in order."""
    points: dict[SeriesId, list[tuple[int, float]]] = defaultdict(list)
    for case, start in zip(test_file.cases, starts, strict=True):
        start_ms = round(start.timestamp() * 1000)
        step_ms = round(case.interval.total_seconds() * 1000)
        for one in case.series:
            points[one.series].extend(
                (start_ms + index * step_ms, value)
                for index, value in enumerate(one.points)
                if value is not None
            )
    lines = [
        f"{series.openmetrics()} {openmetrics_value(value)} {millis / 1000:.3f}"
        for series in sorted(points, key=lambda one: (one.name, one.labels))
        for millis, value in sorted(points[series], key=lambda point: point[0])
    ]
    return "\n".join([*lines, "# EOF"]) + "\n" if lines else None


def run_test_files(
    paths: Sequence[Path],
    *,
    out: TextIO,
    err: TextIO,
    default_config: WatcherConfig | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Load, run and report every test file; the exit code of `watcher test`."""
    tests = failed = findings = 0
    unreadable = False
    for path in paths:
        loaded = load_test_file(path, default_config=default_config, env=env)
        for finding in loaded.findings:
            print(_shown(finding), file=out)
        findings += len(loaded.findings)
        unreadable = unreadable or loaded.unreadable
        if loaded.test_file is None:
            continue
        for note in skipped_rules(loaded.test_file):
            print(f"{path}: note: {note}", file=err)
        result = run_file(loaded.test_file)
        tests += len(loaded.test_file.cases)
        failed += _report(path, loaded.test_file, result, out)
    summary = f"{tests} test{'' if tests == 1 else 's'}, {tests - failed} passed, {failed} failed"
    if findings:
        summary += f", {findings} finding{'' if findings == 1 else 's'}"
    print(summary, file=out)
    if unreadable:
        return EXIT_USAGE
    return EXIT_FINDINGS if failed or findings else EXIT_OK


def _report(path: Path, test_file: RuleTestFile, result: FileResult, out: TextIO) -> int:
    """Print the failures of one file; how many of its tests failed."""
    if result.not_run is not None:
        print(f"{path}: cannot run its {len(test_file.cases)} tests: {result.not_run.reason}", file=out)
        return len(test_file.cases)
    for case in result.cases:
        for failure in case.failures:
            print(f'{path}: test "{case.name}": {failure}', file=out)
    return sum(1 for case in result.cases if case.failures)


def skipped_rules(test_file: RuleTestFile) -> list[str]:
    """The rules that no test of the file evaluates, and why."""
    evaluated = {rule.id for case in test_file.cases for rule in evaluated_rules(test_file.rules, case)}
    return [
        f"{rule.id} is a {'sql' if rule.sql is not None else 'drift'} rule and no test gives its "
        "input_values: it is not evaluated"
        for rule in test_file.rules.values()
        if rule.id not in evaluated
    ]


def _shown(finding: Finding) -> str:
    """The finding with its file relative to the working directory when it lies below it."""
    try:
        shown = finding.file.absolute().relative_to(Path.cwd())
    except ValueError:
        shown = finding.file
    return f"{shown}:{finding.line}:{finding.column}: {finding.message}"
