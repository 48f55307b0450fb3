"""The rule state machine, driven table-first: every state x outcome, then the boundaries."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.decisions.attribution import Attribution, AttributionKind
from watcher.decisions.evaluation import (
    UNHEALTHY_AFTER,
    RulePolicy,
    RuleStatus,
    Transition,
    TransitionReason,
    classify,
    step,
    step_in_full,
)
from watcher.model import ErrorKind, Measurement, NoData, NoDataPolicy, Outcome, RuleState, SourceError, Value

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
FOR = timedelta(minutes=5)
KEEP = timedelta(minutes=2)
INTERVAL = timedelta(seconds=30)

OK = Value(0.5)
BREACH = Value(2.0)
NO_DATA = NoData("empty result")
ERROR = SourceError(ErrorKind.TIMEOUT, "query timed out", retryable=True)


def policy(
    on_no_data: NoDataPolicy = NoDataPolicy.KEEP,
    for_: timedelta = FOR,
    keep: timedelta = KEEP,
    min_samples: float | None = None,
) -> RulePolicy:
    return RulePolicy(
        for_=for_, keep_firing_for=keep, on_no_data=on_no_data, above=1.0, below=None, min_samples=min_samples
    )


def ago(delta: timedelta) -> datetime:
    return T0 - delta


# Starting points, each as persisted after an evaluation 30 s before T0.
INACTIVE = RuleStatus(last_evaluated_at=ago(INTERVAL), last_outcome=Outcome.OK, last_value=0.5)
PENDING = RuleStatus(
    state=RuleState.PENDING,
    active_since=ago(timedelta(minutes=2)),
    last_breach_at=ago(INTERVAL),
    last_evaluated_at=ago(INTERVAL),
    last_outcome=Outcome.BREACH,
    last_value=2.0,
)
PENDING_DUE = replace(PENDING, active_since=ago(FOR))  # `for` is over at T0
FIRING = RuleStatus(
    state=RuleState.FIRING,
    active_since=ago(timedelta(minutes=10)),
    fired_at=ago(timedelta(minutes=5)),
    last_breach_at=ago(INTERVAL),  # inside keep_firing_for at T0
    last_evaluated_at=ago(INTERVAL),
    last_outcome=Outcome.BREACH,
    last_value=2.0,
)
FIRING_PAST_KEEP = replace(FIRING, last_breach_at=ago(KEEP))  # keep_firing_for is over at T0

S = RuleState
R = TransitionReason
KEEP_P, RESOLVE_P, ALERT_P = NoDataPolicy.KEEP, NoDataPolicy.RESOLVE, NoDataPolicy.ALERT

# (start, measurement, no-data policy, expected state, expected reason)
TABLE: list[tuple[str, RuleStatus, Measurement, NoDataPolicy, RuleState, TransitionReason]] = [
    ("inactive-ok", INACTIVE, OK, KEEP_P, S.INACTIVE, R.STAYED_INACTIVE),
    ("inactive-breach", INACTIVE, BREACH, KEEP_P, S.PENDING, R.BREACH_STARTED),
    ("inactive-nodata-keep", INACTIVE, NO_DATA, KEEP_P, S.INACTIVE, R.NO_DATA_KEPT),
    ("inactive-nodata-resolve", INACTIVE, NO_DATA, RESOLVE_P, S.INACTIVE, R.STAYED_INACTIVE),
    ("inactive-nodata-alert", INACTIVE, NO_DATA, ALERT_P, S.PENDING, R.NO_DATA_ALERT),
    ("inactive-error", INACTIVE, ERROR, KEEP_P, S.INACTIVE, R.ERROR_IGNORED),
    ("pending-ok", PENDING, OK, KEEP_P, S.INACTIVE, R.RECOVERED),
    ("pending-breach", PENDING, BREACH, KEEP_P, S.PENDING, R.STILL_PENDING),
    ("pending-due-breach", PENDING_DUE, BREACH, KEEP_P, S.FIRING, R.FOR_ELAPSED),
    ("pending-nodata-keep", PENDING, NO_DATA, KEEP_P, S.PENDING, R.NO_DATA_KEPT),
    ("pending-due-nodata-keep", PENDING_DUE, NO_DATA, KEEP_P, S.PENDING, R.NO_DATA_KEPT),
    ("pending-nodata-resolve", PENDING, NO_DATA, RESOLVE_P, S.INACTIVE, R.NO_DATA_RESOLVED),
    ("pending-nodata-alert", PENDING, NO_DATA, ALERT_P, S.PENDING, R.NO_DATA_ALERT),
    ("pending-due-nodata-alert", PENDING_DUE, NO_DATA, ALERT_P, S.FIRING, R.NO_DATA_ALERT),
    ("pending-error", PENDING, ERROR, KEEP_P, S.PENDING, R.ERROR_IGNORED),
    ("pending-due-error", PENDING_DUE, ERROR, ALERT_P, S.PENDING, R.ERROR_IGNORED),
    ("firing-ok-inside-keep", FIRING, OK, KEEP_P, S.FIRING, R.KEEP_FIRING),
    ("firing-ok-past-keep", FIRING_PAST_KEEP, OK, KEEP_P, S.INACTIVE, R.RECOVERED),
    ("firing-breach", FIRING, BREACH, KEEP_P, S.FIRING, R.STILL_FIRING),
    ("firing-nodata-keep", FIRING_PAST_KEEP, NO_DATA, KEEP_P, S.FIRING, R.NO_DATA_KEPT),
    ("firing-nodata-resolve-inside-keep", FIRING, NO_DATA, RESOLVE_P, S.FIRING, R.KEEP_FIRING),
    ("firing-nodata-resolve-past-keep", FIRING_PAST_KEEP, NO_DATA, RESOLVE_P, S.INACTIVE, R.NO_DATA_RESOLVED),
    ("firing-nodata-alert", FIRING_PAST_KEEP, NO_DATA, ALERT_P, S.FIRING, R.NO_DATA_ALERT),
    ("firing-error", FIRING_PAST_KEEP, ERROR, RESOLVE_P, S.FIRING, R.ERROR_IGNORED),
]


@pytest.mark.parametrize(
    ("start", "measurement", "on_no_data", "state", "reason"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_every_state_and_outcome(
    start: RuleStatus,
    measurement: Measurement,
    on_no_data: NoDataPolicy,
    state: RuleState,
    reason: TransitionReason,
) -> None:
    transition = step(start, measurement, policy(on_no_data), T0)

    assert (transition.current.state, transition.reason) == (state, reason)
    assert transition.previous == start
    assert transition.outcome is classify(measurement, policy(on_no_data))
    assert transition.fired == (start.state is not S.FIRING and state is S.FIRING)
    assert transition.resolved == (start.state is S.FIRING and state is S.INACTIVE)
    assert_consistent(transition.current)


def test_breach_from_inactive_opens_an_episode_now() -> None:
    current = step(INACTIVE, BREACH, policy(), T0).current

    assert current.active_since == T0
    assert current.last_breach_at == T0
    assert current.last_evaluated_at == T0
    assert current.fired_at is None
    assert (current.last_outcome, current.last_value) == (Outcome.BREACH, 2.0)


def test_zero_for_fires_on_the_first_breach() -> None:
    transition = step(INACTIVE, BREACH, policy(for_=timedelta(0)), T0)

    assert transition.fired
    assert transition.reason is R.FIRED_IMMEDIATELY
    assert transition.current.fired_at == T0
    assert transition.current.active_since == T0


def test_firing_breach_refreshes_last_breach_but_not_the_episode() -> None:
    current = step(FIRING, BREACH, policy(), T0).current

    assert current.last_breach_at == T0
    assert current.active_since == FIRING.active_since
    assert current.fired_at == FIRING.fired_at


def test_recovery_clears_the_episode() -> None:
    current = step(FIRING_PAST_KEEP, OK, policy(), T0).current

    assert current.active_since is None
    assert current.fired_at is None
    assert current.last_value == 0.5


@pytest.mark.parametrize(
    ("pending_for", "state"),
    [
        (FOR - timedelta(seconds=1), S.PENDING),
        (FOR, S.FIRING),
        (FOR + timedelta(seconds=1), S.FIRING),
    ],
    ids=["one-second-before", "exactly-at", "one-second-after"],
)
def test_for_boundary_to_the_second(pending_for: timedelta, state: RuleState) -> None:
    start = replace(PENDING, active_since=ago(pending_for))

    assert step(start, BREACH, policy(), T0).current.state is state


def test_pending_fires_at_the_for_boundary_over_a_run_of_evaluations() -> None:
    status = RuleStatus()
    states = []
    for tick in range(12):  # every 30 s from T0: fires at T0 + 5m, the 11th evaluation
        transition = step(status, BREACH, policy(), T0 + tick * INTERVAL)
        states.append(transition.current.state)
        status = transition.current
    assert states == [S.PENDING] * 10 + [S.FIRING] * 2
    assert status.fired_at == T0 + FOR


@pytest.mark.parametrize(
    ("since_breach", "state"),
    [
        (KEEP - timedelta(seconds=1), S.FIRING),
        (KEEP, S.INACTIVE),
    ],
    ids=["one-second-before", "exactly-at"],
)
def test_keep_firing_for_boundary(since_breach: timedelta, state: RuleState) -> None:
    start = replace(FIRING, last_breach_at=ago(since_breach))

    assert step(start, OK, policy(), T0).current.state is state


def test_zero_keep_firing_for_resolves_on_the_first_ok() -> None:
    transition = step(FIRING, OK, policy(keep=timedelta(0)), T0)

    assert transition.resolved
    assert transition.reason is R.RECOVERED


def test_errors_change_nothing_but_health() -> None:
    for start in (INACTIVE, PENDING, PENDING_DUE, FIRING, FIRING_PAST_KEEP):
        current = step(start, ERROR, policy(NoDataPolicy.ALERT), T0).current

        assert current == replace(start, consecutive_errors=1, last_outcome=Outcome.ERROR, last_value=None), (
            start.state
        )


def test_fourth_error_in_a_row_reports_unhealthy_once() -> None:
    status = PENDING
    reported = []
    for tick in range(1, 7):
        transition = step(status, ERROR, policy(), T0 + tick * INTERVAL)
        reported.append(transition.became_unhealthy)
        status = transition.current
    assert UNHEALTHY_AFTER == 4
    assert reported == [False, False, False, True, False, False]
    assert status.consecutive_errors == 6
    assert status.unhealthy

    recovered = step(status, OK, policy(), T0 + 7 * INTERVAL)
    assert recovered.became_healthy
    assert not recovered.became_unhealthy
    assert recovered.current.consecutive_errors == 0
    assert not recovered.current.unhealthy


def test_three_errors_then_a_value_never_report_unhealthy() -> None:
    status = INACTIVE
    for tick in range(1, 4):
        status = step(status, ERROR, policy(), T0 + tick * INTERVAL).current
    transition = step(status, NO_DATA, policy(), T0 + 4 * INTERVAL)
    assert not transition.became_unhealthy
    assert not transition.became_healthy
    assert transition.current.consecutive_errors == 0


def test_error_between_breaches_keeps_the_pending_clock() -> None:
    status = step(RuleStatus(), BREACH, policy(), T0).current
    status = step(status, ERROR, policy(), T0 + timedelta(minutes=2)).current
    assert status.state is S.PENDING
    assert status.active_since == T0
    fired = step(status, BREACH, policy(), T0 + FOR)
    assert fired.fired
    assert fired.reason is R.FOR_ELAPSED


@pytest.mark.parametrize(
    ("gap", "active_since", "reason"),
    [
        (timedelta(minutes=59), T0 - timedelta(minutes=62), R.FOR_ELAPSED),
        (timedelta(minutes=60), T0 - timedelta(minutes=62), R.FOR_ELAPSED),
        (timedelta(minutes=61), T0, R.OUTAGE_RESET),
    ],
    ids=["59m-keeps", "60m-keeps", "61m-resets"],
)
def test_outage_tolerance_for_a_pending_rule(
    gap: timedelta, active_since: datetime, reason: TransitionReason
) -> None:
    # Pending since 62 minutes ago; the watcher was then down for `gap`.
    start = replace(PENDING, active_since=ago(timedelta(minutes=62)), last_evaluated_at=ago(gap))

    transition = step(start, BREACH, policy(), T0)

    assert transition.reason is reason
    assert transition.current.active_since == active_since


def test_downtime_inside_the_tolerance_counts_toward_for() -> None:
    # Pending 20 of 25 minutes, then a 10 minute restart: it fires on the first breach after.
    rule = policy(for_=timedelta(minutes=25))
    start = replace(
        PENDING, active_since=ago(timedelta(minutes=30)), last_evaluated_at=ago(timedelta(minutes=10))
    )

    transition = step(start, BREACH, rule, T0)

    assert transition.fired
    assert transition.current.active_since == start.active_since


def test_outage_reset_then_fires_only_after_a_full_for() -> None:
    start = replace(PENDING, last_evaluated_at=ago(timedelta(hours=2)))
    status = step(start, BREACH, policy(), T0).current
    assert step(status, BREACH, policy(), T0 + FOR - timedelta(seconds=1)).current.state is S.PENDING
    assert step(status, BREACH, policy(), T0 + FOR).current.state is S.FIRING


def test_outage_reset_on_no_data_kept_restarts_the_clock() -> None:
    start = replace(PENDING, last_evaluated_at=ago(timedelta(hours=2)))

    transition = step(start, NO_DATA, policy(NoDataPolicy.KEEP), T0)

    assert transition.reason is R.OUTAGE_RESET
    assert transition.current.state is S.PENDING
    assert transition.current.active_since == T0


def test_outage_does_not_stop_a_firing_rule() -> None:
    start = replace(FIRING, last_evaluated_at=ago(timedelta(hours=3)), last_breach_at=ago(timedelta(hours=3)))

    transition = step(start, BREACH, policy(), T0)

    assert transition.current.state is S.FIRING
    assert transition.reason is R.STILL_FIRING
    assert transition.current.fired_at == start.fired_at


def test_an_outage_after_a_recovery_is_just_an_ok() -> None:
    start = replace(PENDING, last_evaluated_at=ago(timedelta(hours=2)))

    assert step(start, OK, policy(), T0).reason is R.RECOVERED


def test_a_source_outage_longer_than_the_tolerance_restarts_a_pending_clock() -> None:
    # Errors do not advance last_evaluated_at: the breach was not observed during the outage.
    status = replace(PENDING, last_evaluated_at=T0)
    for minutes in range(10, 71, 10):
        status = step(status, ERROR, policy(), T0 + timedelta(minutes=minutes)).current
    assert status.last_evaluated_at == T0

    transition = step(status, BREACH, policy(), T0 + timedelta(minutes=75))

    assert transition.reason is R.OUTAGE_RESET
    assert transition.current.active_since == T0 + timedelta(minutes=75)


@pytest.mark.parametrize(
    "start", [INACTIVE, PENDING, PENDING_DUE, FIRING, FIRING_PAST_KEEP], ids=lambda s: s.state.value
)
@pytest.mark.parametrize("measurement", [OK, BREACH, NO_DATA], ids=["ok", "breach", "no_data"])
def test_clock_going_back_makes_no_progress(start: RuleStatus, measurement: Measurement) -> None:
    earlier = ago(INTERVAL + timedelta(seconds=1))

    transition = step(start, measurement, policy(NoDataPolicy.ALERT, for_=timedelta(0)), earlier)

    assert transition.reason is R.CLOCK_WENT_BACK
    assert not transition.fired
    assert not transition.resolved
    assert transition.current.state is start.state
    assert transition.current.active_since == start.active_since
    assert transition.current.last_evaluated_at == start.last_evaluated_at


def test_rule_resumes_once_the_clock_has_caught_up() -> None:
    back = step(PENDING_DUE, BREACH, policy(), ago(timedelta(minutes=1))).current
    assert back.state is S.PENDING

    assert step(back, BREACH, policy(), T0).fired


def test_same_time_twice_is_not_a_clock_going_back() -> None:
    start = replace(PENDING_DUE, last_evaluated_at=T0)

    assert step(start, BREACH, policy(), T0).reason is R.FOR_ELAPSED


@pytest.mark.parametrize(
    ("measurement", "outcome"),
    [
        (Value(2.0, samples=None), Outcome.NO_DATA),
        (Value(2.0, samples=99), Outcome.NO_DATA),
        (Value(2.0, samples=math.nan), Outcome.NO_DATA),
        (Value(2.0, samples=100), Outcome.BREACH),
        (Value(0.5, samples=1000), Outcome.OK),
    ],
    ids=["unknown", "below", "nan", "exactly-enough", "plenty"],
)
def test_min_samples(measurement: Value, outcome: Outcome) -> None:
    assert classify(measurement, policy(min_samples=100)) is outcome


def test_too_few_samples_acts_as_no_data_under_its_policy() -> None:
    transition = step(PENDING, Value(2.0, samples=3), policy(NoDataPolicy.RESOLVE, min_samples=100), T0)

    assert transition.outcome is Outcome.NO_DATA
    assert transition.value is None
    assert transition.reason is R.NO_DATA_RESOLVED


def test_without_min_samples_an_unknown_sample_count_is_fine() -> None:
    assert classify(Value(2.0), policy()) is Outcome.BREACH


@pytest.mark.parametrize(
    ("measurement", "outcome"),
    [
        (Value(math.nan), Outcome.NO_DATA),
        (Value(math.inf), Outcome.BREACH),
        (Value(-math.inf), Outcome.OK),
        (Value(1.0), Outcome.OK),  # at the threshold is not over it
        (NO_DATA, Outcome.NO_DATA),
        (ERROR, Outcome.ERROR),
    ],
    ids=["nan", "inf", "minus-inf", "at-threshold", "no-data", "error"],
)
def test_classify(measurement: Measurement, outcome: Outcome) -> None:
    assert classify(measurement, policy()) is outcome


def test_nan_is_no_data_under_the_rules_policy() -> None:
    transition = step(FIRING_PAST_KEEP, Value(math.nan), policy(NoDataPolicy.KEEP), T0)

    assert transition.reason is R.NO_DATA_KEPT
    assert transition.current.state is S.FIRING
    assert transition.value is None


@pytest.mark.parametrize(
    ("above", "below", "value", "breaches"),
    [
        (1.0, None, 1.01, True),
        (1.0, None, 1.0, False),
        (None, 0.92, 0.91, True),
        (None, 0.92, 0.92, False),
        (None, 0.92, math.nan, False),
    ],
)
def test_breaches(above: float | None, below: float | None, value: float, breaches: bool) -> None:
    rule = RulePolicy(FOR, KEEP, NoDataPolicy.KEEP, above=above, below=below)

    assert rule.breaches(value) is breaches


def test_no_data_alert_flags_the_episode_until_it_ends() -> None:
    alert = policy(NoDataPolicy.ALERT)
    status = step(RuleStatus(), BREACH, alert, T0).current
    assert not status.fired_on_no_data
    status = step(status, NO_DATA, alert, T0 + timedelta(minutes=1)).current
    assert status.fired_on_no_data
    fired = step(status, BREACH, alert, T0 + FOR)
    assert fired.fired
    assert fired.current.fired_on_no_data  # a real breach at the end does not clear it

    resolved = step(fired.current, OK, alert, T0 + FOR + KEEP)
    assert resolved.resolved
    assert not resolved.current.fired_on_no_data


def test_an_episode_of_real_breaches_is_not_flagged() -> None:
    alert = policy(NoDataPolicy.ALERT, for_=timedelta(0))
    fired = step(RuleStatus(), BREACH, alert, T0)
    assert fired.fired
    assert not fired.current.fired_on_no_data

    # Missing data once firing changes nothing about how it fired.
    assert not step(fired.current, NO_DATA, alert, T0 + INTERVAL).current.fired_on_no_data


def test_firing_on_no_data_immediately_is_flagged() -> None:
    fired = step(RuleStatus(), NO_DATA, policy(NoDataPolicy.ALERT, for_=timedelta(0)), T0)

    assert fired.fired
    assert fired.reason is R.NO_DATA_ALERT
    assert fired.current.fired_on_no_data


def test_no_data_kept_while_pending_lets_the_clock_run() -> None:
    status = step(RuleStatus(), BREACH, policy(), T0).current
    status = step(status, NO_DATA, policy(), T0 + timedelta(minutes=3)).current
    assert status.active_since == T0

    assert step(status, BREACH, policy(), T0 + FOR).fired


def test_transition_value_is_the_measured_number_only() -> None:
    assert step(INACTIVE, BREACH, policy(), T0).value == 2.0
    assert step(INACTIVE, NO_DATA, policy(), T0).value is None
    assert step(INACTIVE, ERROR, policy(), T0).value is None


# --- invariants over random histories -----------------------------------------------------------

MEASUREMENTS = st.sampled_from(
    [OK, BREACH, NO_DATA, ERROR, Value(math.nan), Value(2.0, samples=1), Value(0.5, samples=10**6)]
)
POLICIES = st.builds(
    RulePolicy,
    for_=st.sampled_from([timedelta(0), timedelta(seconds=30), FOR, timedelta(minutes=25)]),
    keep_firing_for=st.sampled_from([timedelta(0), KEEP]),
    on_no_data=st.sampled_from(list(NoDataPolicy)),
    above=st.just(1.0),
    below=st.none(),
    min_samples=st.sampled_from([None, 100.0]),
    outage_tolerance=st.just(timedelta(hours=1)),
)
# Mostly ordinary intervals, sometimes an outage past the tolerance.
GAPS = st.one_of(st.integers(0, 120), st.integers(0, 2 * 3600)).map(lambda s: timedelta(seconds=s))


def assert_consistent(status: RuleStatus) -> None:
    if status.state is S.INACTIVE:
        assert status.active_since is None and status.fired_at is None
        assert not status.fired_on_no_data
    if status.state is S.PENDING:
        assert status.active_since is not None and status.fired_at is None
        assert status.last_breach_at is not None
    if status.state is S.FIRING:
        assert status.active_since is not None and status.fired_at is not None
        assert status.last_breach_at is not None
        assert status.active_since <= status.fired_at
    assert status.unhealthy == (status.consecutive_errors >= UNHEALTHY_AFTER)


def assert_sound(transition: Transition) -> None:
    previous, current = transition.previous, transition.current
    assert_consistent(current)
    if transition.outcome is Outcome.ERROR:
        assert replace(
            current, consecutive_errors=0, unhealthy=False, last_outcome=None, last_value=None
        ) == (replace(previous, consecutive_errors=0, unhealthy=False, last_outcome=None, last_value=None))
        assert current.consecutive_errors == previous.consecutive_errors + 1
    else:
        assert current.consecutive_errors == 0
    if transition.fired:
        assert transition.outcome is Outcome.BREACH or current.fired_on_no_data
    if transition.outcome is Outcome.NO_DATA and current.state is not S.INACTIVE:
        assert previous.state is not S.INACTIVE or current.fired_on_no_data


@settings(max_examples=300, deadline=None)
@given(rule=POLICIES, history=st.lists(st.tuples(GAPS, MEASUREMENTS), max_size=40))
def test_random_histories_keep_the_status_valid(
    rule: RulePolicy, history: list[tuple[timedelta, Measurement]]
) -> None:
    status, now, unhealthy_reports = RuleStatus(), T0, 0
    for gap, measurement in history:
        now += gap
        transition = step(status, measurement, rule, now)
        assert_sound(transition)
        assert transition.current.last_evaluated_at is None or transition.current.last_evaluated_at <= now
        unhealthy_reports += transition.became_unhealthy
        if transition.became_healthy:
            unhealthy_reports = 0
        assert unhealthy_reports <= 1
        status = transition.current


@settings(max_examples=200, deadline=None)
@given(
    rule=POLICIES,
    history=st.lists(st.tuples(st.integers(-3600, 3600), MEASUREMENTS), max_size=40),
)
def test_a_clock_going_back_never_fires_or_moves_time_backwards(
    rule: RulePolicy, history: list[tuple[int, Measurement]]
) -> None:
    status, now = RuleStatus(), T0
    for seconds, measurement in history:
        now += timedelta(seconds=seconds)
        transition = step(status, measurement, rule, now)
        assert_sound(transition)
        if transition.reason is R.CLOCK_WENT_BACK:
            assert transition.current.state is transition.previous.state
            assert not transition.fired
        before, after = transition.previous.last_evaluated_at, transition.current.last_evaluated_at
        assert before is None or (after is not None and after >= before)
        status = transition.current


def _statuses_near_rest() -> Iterator[RuleStatus]:
    """Every status that differs from a rule at rest in one way or more, over small domains."""
    for state, errors, unhealthy, no_data, version, settling, since, evaluated in itertools.product(
        list(RuleState),
        [0, 1, 4],
        [False, True],
        [False, True],
        [None, "v1"],
        [False, True],
        [None, ago(timedelta(hours=2))],
        [None, ago(INTERVAL), T0 + INTERVAL],
    ):
        yield RuleStatus(
            state=state,
            active_since=since,
            last_evaluated_at=evaluated,
            last_outcome=Outcome.OK,
            last_value=0.5,
            consecutive_errors=errors,
            unhealthy=unhealthy,
            fired_on_no_data=no_data,
            version=version,
            settling=settling,
        )


_WINDOW = ago(timedelta(minutes=5))
_ATTRIBUTIONS = [
    None,
    Attribution(AttributionKind.ATTRIBUTED, "v1", None, _WINDOW),
    Attribution(AttributionKind.ATTRIBUTED, "v2", ago(timedelta(hours=2)), _WINDOW),
    Attribution(AttributionKind.SETTLING, "v2", ago(timedelta(minutes=1)), _WINDOW, "v1"),
    Attribution(AttributionKind.UNVERSIONED, None, None, _WINDOW),
]
_MEASUREMENTS: list[Measurement] = [OK, BREACH, NO_DATA, ERROR, Value(float("nan")), Value(0.5, samples=1)]


def test_the_shortcut_for_a_rule_at_rest_changes_nothing() -> None:
    """`step` takes a shortcut for a rule at rest on an ok evaluation: over every combination of
    small domains it gives exactly what the full way gives."""
    compared = 0
    for status in _statuses_near_rest():
        for measurement, on_no_data, min_samples, attribution in itertools.product(
            _MEASUREMENTS, list(NoDataPolicy), [None, 2.0], _ATTRIBUTIONS
        ):
            rule = policy(on_no_data=on_no_data, min_samples=min_samples)
            expected = step_in_full(status, measurement, rule, T0, attribution)
            assert step(status, measurement, rule, T0, attribution) == expected, (status, measurement)
            compared += 1
    assert compared > 100_000
