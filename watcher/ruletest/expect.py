"""What a rule unit test saw (a Timeline of evaluations per rule) against what it expected.

Pure: every mismatch becomes one message naming the time, the rule, what was expected and what
was got, with the evaluation behind it (`got pending (since 5m30s, value 0.31 > 0.25)`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby

from watcher.decisions.evaluation import RulePolicy, Transition
from watcher.model import Measurement, NoData, Outcome, RuleState, SourceError, Value
from watcher.rules.durations import format_duration
from watcher.rules.rulefmt import Rule
from watcher.ruletest.fileformat import (
    ExpectedValue,
    IncidentExpectation,
    RuleTestCase,
    StateExpectation,
    ValueRange,
)


@dataclass(frozen=True)
class Evaluation:
    offset: timedelta  # from the start of the test
    measurement: Measurement
    transition: Transition


@dataclass(frozen=True)
class Timeline:
    """Every evaluation of one rule in one test, in time order."""

    rule: Rule
    policy: RulePolicy
    start: datetime  # the test's time 0
    evaluations: tuple[Evaluation, ...]

    def at(self, offset: timedelta) -> Evaluation | None:
        """The latest evaluation at or before `offset`: what the rule's state was then."""
        index = bisect.bisect_right([one.offset for one in self.evaluations], offset)
        return self.evaluations[index - 1] if index else None

    def labels_at(self, offset: timedelta) -> dict[str, str]:
        """The rule's labels and those of the series it last measured, at or before `offset`."""
        labels = dict(self.rule.labels)
        for evaluation in reversed(self.evaluations):
            if evaluation.offset <= offset and isinstance(evaluation.measurement, Value):
                return {**labels, **evaluation.measurement.labels}
        return labels

    def since(self, at: datetime | None) -> str:
        return format_duration(at - self.start) if at is not None else "?"


def check_case(case: RuleTestCase, timelines: Mapping[str, Timeline]) -> list[str]:
    """Every mismatch of `case`, by time."""
    found: list[tuple[timedelta, str]] = []
    by_time = sorted(case.incidents, key=lambda expected: expected.at)
    for at, group in groupby(by_time, key=lambda expected: expected.at):
        found.extend((at, message) for message in _incidents_at(at, list(group), timelines))
    for expected in case.states:
        found.extend((expected.at, message) for message in _state(expected, timelines[expected.rule]))
    found.sort(key=lambda item: item[0])
    return [f"at {format_duration(at)}: {message}" for at, message in found]


def _incidents_at(
    at: timedelta, expected: list[IncidentExpectation], timelines: Mapping[str, Timeline]
) -> list[str]:
    """The incidents open at `at` are exactly the rules firing then."""
    messages: list[str] = []
    named = {one.rule for one in expected if one.rule is not None}
    for one in expected:
        if one.rule is not None:
            messages.extend(_incident(at, one, timelines[one.rule]))
    for rule_id, timeline in timelines.items():
        evaluation = timeline.at(at)
        if rule_id not in named and evaluation is not None and _firing(evaluation):
            messages.append(f"unexpected incident {rule_id}: {describe(evaluation, timeline, at)}")
    return messages


def _incident(at: timedelta, expected: IncidentExpectation, timeline: Timeline) -> list[str]:
    rule_id = timeline.rule.id
    evaluation = timeline.at(at)
    if evaluation is None or not _firing(evaluation):
        return [f"expected {rule_id} firing, got {describe(evaluation, timeline, at)}"]
    messages: list[str] = []
    labels = timeline.labels_at(at)
    wrong = {key: value for key, value in expected.labels.items() if labels.get(key) != value}
    if wrong:
        messages.append(
            f"expected {rule_id} firing with labels {_labels_text(wrong)}, got {_labels_text(labels)}"
        )
    if expected.value is not None and not value_matches(expected.value, evaluation.transition.value):
        got = describe(evaluation, timeline, at)
        messages.append(f"expected {rule_id} firing with value {_expected_text(expected.value)}, got {got}")
    return messages


def _state(expected: StateExpectation, timeline: Timeline) -> list[str]:
    rule_id = timeline.rule.id
    evaluation = timeline.at(expected.at)
    if evaluation is None:
        return [f"expected {rule_id} {expected.state}, got no evaluation yet"]
    messages: list[str] = []
    got = describe(evaluation, timeline, expected.at)
    if evaluation.transition.current.state is not expected.state:
        messages.append(f"expected {rule_id} {expected.state}, got {got}")
    outcome = evaluation.transition.outcome
    if expected.outcome is not None and outcome is not expected.outcome:
        messages.append(f"expected {rule_id} to evaluate {expected.outcome}, got {outcome}: {got}")
    if expected.value is not None and not value_matches(expected.value, evaluation.transition.value):
        messages.append(f"expected {rule_id} with value {_expected_text(expected.value)}, got {got}")
    return messages


def _firing(evaluation: Evaluation) -> bool:
    return evaluation.transition.current.state is RuleState.FIRING


def value_matches(expected: ExpectedValue, got: float | None) -> bool:
    """`got` is the number expected (to a relative 1e-9, floats being floats) or within the range."""
    if got is None:
        return False
    if isinstance(expected, ValueRange):
        above = expected.above is None or got > expected.above
        below = expected.below is None or got < expected.below
        return above and below
    return math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12)


def _expected_text(expected: ExpectedValue) -> str:
    return str(expected) if isinstance(expected, ValueRange) else _number(expected)


def _number(value: float) -> str:
    return f"{value:.6g}"


def describe(evaluation: Evaluation | None, timeline: Timeline, at: timedelta) -> str:
    """`pending (since 5m30s, value 0.31 > 0.25)`: the state at `at` and the evaluation behind it."""
    if evaluation is None:
        return "no evaluation yet"
    status = evaluation.transition.current
    details: list[str] = []
    if status.state is RuleState.PENDING:
        details.append(f"since {timeline.since(status.active_since)}")
    elif status.state is RuleState.FIRING:
        details.append(f"since {timeline.since(status.fired_at)}")
    if evaluation.offset != at:
        details.append(f"last evaluated at {format_duration(evaluation.offset)}")
    details.append(_outcome_text(evaluation, timeline))
    return f"{status.state} ({', '.join(details)})"


def _outcome_text(evaluation: Evaluation, timeline: Timeline) -> str:
    transition = evaluation.transition
    measurement = evaluation.measurement
    if transition.outcome is Outcome.ERROR and isinstance(measurement, SourceError):
        return f"error: {measurement.message}"
    if transition.value is not None:
        threshold = timeline.rule.threshold
        return f"value {_number(transition.value)} {_relation(transition.value, threshold)} {threshold:g}"
    if isinstance(measurement, NoData):
        return f"no data: {measurement.reason}"
    if isinstance(measurement, Value):
        return f"no data: {_why_no_data(measurement, timeline.policy)}"
    return str(transition.outcome)


def _why_no_data(value: Value, policy: RulePolicy) -> str:
    if math.isnan(value.value):
        return "the value is NaN"
    samples = "an unknown number of" if value.samples is None else f"{value.samples:g}"
    needed = f", at least {policy.min_samples:g} needed" if policy.min_samples is not None else ""
    return f"value {value.value:g} over {samples} samples{needed}"


def _relation(value: float, threshold: float) -> str:
    if value > threshold:
        return ">"
    return "<" if value < threshold else "="


def _labels_text(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}"
