"""The schema of a rule unit test file (see watcher.ruletest.runner for the format) and what it becomes
once checked: a RuleTestFile of RuleTestCases, every time an offset from the test's start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Discriminator, Field, StrictStr, Tag, model_validator

from watcher.model import Outcome, RuleState
from watcher.rules.config import FrozenModel, WatcherConfig
from watcher.rules.durations import Duration, PositiveDuration
from watcher.rules.rulefmt import Number, Rule
from watcher.ruletest.notation import Point, SeriesId

DEFAULT_SERIES_INTERVAL = timedelta(minutes=1)  # as promtool's `interval`


def _kind(value: Any, mapping_tag: str, other_tag: str, other: type | tuple[type, ...]) -> str | None:
    """Which member of a mapping-or-scalar union a raw value is meant to be."""
    if isinstance(value, dict | FrozenModel):
        return mapping_tag
    if isinstance(value, other) and not isinstance(value, bool):
        return other_tag
    return None


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class ValueRange(FrozenModel):
    """A measured value strictly above `above` and/or strictly below `below`."""

    above: Number | None = None
    below: Number | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> ValueRange:
        if self.above is None and self.below is None:
            raise ValueError("give above:, below: or both")
        return self

    def __str__(self) -> str:
        bounds = [f"above {self.above:g}" if self.above is not None else ""]
        bounds.append(f"below {self.below:g}" if self.below is not None else "")
        return " and ".join(bound for bound in bounds if bound)


ExpectedValueSpec = Annotated[
    Annotated[Number, Tag("<number>")] | Annotated[ValueRange, Tag("<range>")],
    Discriminator(
        lambda value: _kind(value, "<range>", "<number>", (int, float)),
        custom_error_type="expected_value",
        custom_error_message="expected a number or a mapping {above:, below:}",
    ),
]


class SeriesSpec(FrozenModel):
    series: StrictStr
    values: StrictStr


class InputValuesSpec(FrozenModel):
    values: StrictStr
    samples: StrictStr | None = None


InputValuesEntry = Annotated[
    Annotated[StrictStr, Tag("<values>")] | Annotated[InputValuesSpec, Tag("<mapping>")],
    Discriminator(
        lambda value: _kind(value, "<mapping>", "<values>", str),
        custom_error_type="input_values",
        custom_error_message="expected a values string or a mapping {values:, samples:}",
    ),
]


class ExpectedIncidentSpec(FrozenModel):
    at: Duration
    rule: StrictStr | None = None  # none: no incident is open at `at`
    labels: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    value: ExpectedValueSpec | None = None


class ExpectedStateSpec(FrozenModel):
    at: Duration
    rule: StrictStr
    state: RuleState
    outcome: Outcome | None = None
    value: ExpectedValueSpec | None = None


class CaseSpec(FrozenModel):
    key_hints: ClassVar[dict[str, str]] = {
        "alert_rule_test": "'expected_incidents'",
        "exp_alerts": "'expected_incidents'",
        "promql_expr_test": "'expected_states'",
    }

    name: StrictStr = Field(min_length=1)
    interval: PositiveDuration = DEFAULT_SERIES_INTERVAL
    input_series: tuple[SeriesSpec, ...] = ()
    input_values: dict[StrictStr, InputValuesEntry] = Field(default_factory=dict)
    expected_incidents: tuple[ExpectedIncidentSpec, ...] = ()
    expected_states: tuple[ExpectedStateSpec, ...] = ()


class RuleTestFileSpec(FrozenModel):
    # Emptiness is checked after validation: pydantic would call a list whose every item is bad
    # "empty" too.
    rule_files: Annotated[tuple[StrictStr, ...], BeforeValidator(_one_or_many)]
    config: StrictStr | None = None
    evaluation_interval: PositiveDuration | None = None
    tests: tuple[CaseSpec, ...]


# What a checked test file is made of. Times are offsets from the start of the test.

ExpectedValue = float | ValueRange


@dataclass(frozen=True)
class InputSeries:
    series: SeriesId
    points: tuple[Point, ...]  # one per `interval`, from offset 0


@dataclass(frozen=True)
class InputValues:
    """A rule's measured values given directly, one per `interval` from offset 0."""

    values: tuple[Point, ...]
    samples: tuple[Point, ...] | None  # None: every value counts as backed by enough samples


@dataclass(frozen=True)
class IncidentExpectation:
    at: timedelta
    rule: str | None
    labels: Mapping[str, str]
    value: ExpectedValue | None


@dataclass(frozen=True)
class StateExpectation:
    at: timedelta
    rule: str
    state: RuleState
    outcome: Outcome | None
    value: ExpectedValue | None


@dataclass(frozen=True)
class RuleTestCase:
    name: str
    interval: timedelta
    series: tuple[InputSeries, ...]
    inputs: Mapping[str, InputValues]  # by rule id
    incidents: tuple[IncidentExpectation, ...]
    states: tuple[StateExpectation, ...]

    @property
    def end(self) -> timedelta:
        """The last moment the test looks at: its last input point or expectation."""
        lengths = [len(one.points) for one in self.series]
        lengths += [len(one.values) for one in self.inputs.values()]
        last_point = self.interval * (max(lengths, default=1) - 1)
        ats = [expected.at for expected in self.incidents] + [expected.at for expected in self.states]
        return max([last_point, *ats])


@dataclass(frozen=True)
class RuleTestFile:
    path: Path
    config: WatcherConfig
    rules: Mapping[str, Rule]  # every rule of the rule files, by id
    evaluation_interval: timedelta | None  # None: each rule's own interval
    cases: tuple[RuleTestCase, ...]

    def interval_of(self, rule: Rule) -> timedelta:
        return self.evaluation_interval or rule.interval
