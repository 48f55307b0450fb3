"""The safety policy: every reason, the order of the checks, and the limits to the second."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from watcher.decisions.safety import (
    DecisionKind,
    DecisionReason,
    SafetyDecision,
    SafetyPolicy,
    TargetRollbackHistory,
    decide,
    format_duration,
    rollbacks_within,
)
from watcher.model import Action

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
POLICY = SafetyPolicy(
    auto_rollback=True,
    cooldown=timedelta(minutes=30),
    max_rollbacks=3,
    max_rollbacks_period=timedelta(hours=24),
)
CLEAR = TargetRollbackHistory(rollback_times=(), paused=False, pause_reason=None)


def decision(
    action: Action = Action.ROLLBACK,
    *,
    has_target: bool = True,
    version: str | None = "7",
    no_data: bool = False,
    policy: SafetyPolicy = POLICY,
    history: TargetRollbackHistory = CLEAR,
) -> SafetyDecision:
    return decide(action, has_target, version, no_data, policy, history, T0)


def rolled_back(*ago: timedelta, paused: bool = False, reason: str | None = None) -> TargetRollbackHistory:
    return TargetRollbackHistory(rollback_times=[T0 - a for a in ago], paused=paused, pause_reason=reason)


H = timedelta(hours=1)
M = timedelta(minutes=1)
K, R = DecisionKind, DecisionReason

CASES: list[tuple[str, SafetyDecision, DecisionKind, DecisionReason]] = [
    ("rollback", decision(), K.ROLL_BACK, R.AUTO_ROLLBACK),
    ("approve", decision(Action.APPROVE), K.ASK_APPROVAL, R.RULE_ASKS_APPROVAL),
    ("notify", decision(Action.NOTIFY), K.NOTIFY_ONLY, R.RULE_NOTIFIES),
    ("no-target", decision(has_target=False), K.NOTIFY_ONLY, R.NO_TARGET),
    ("no-version", decision(version=None), K.NOTIFY_ONLY, R.NO_ROLLBACK_VERSION),
    ("approve-no-version", decision(Action.APPROVE, version=None), K.NOTIFY_ONLY, R.NO_ROLLBACK_VERSION),
    ("no-data", decision(no_data=True), K.NOTIFY_ONLY, R.NO_DATA_ALERT),
    (
        "disabled",
        decision(policy=SafetyPolicy(False, POLICY.cooldown, 3, POLICY.max_rollbacks_period)),
        K.ASK_APPROVAL,
        R.AUTO_ROLLBACK_DISABLED,
    ),
    ("paused", decision(history=rolled_back(paused=True, reason="release freeze")), K.ASK_APPROVAL, R.PAUSED),
    ("cooldown", decision(history=rolled_back(12 * M)), K.ASK_APPROVAL, R.COOLDOWN),
    ("rate-limited", decision(history=rolled_back(1 * H, 5 * H, 23 * H)), K.ASK_APPROVAL, R.RATE_LIMITED),
]


@pytest.mark.parametrize(("made", "kind", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_reason(made: SafetyDecision, kind: DecisionKind, reason: DecisionReason) -> None:
    assert (made.kind, made.reason) == (kind, reason)
    assert made.detail


def test_a_stopped_automatic_rollback_asks_instead_of_going_silent() -> None:
    stopped = [c for c in CASES if c[3] in {R.AUTO_ROLLBACK_DISABLED, R.PAUSED, R.COOLDOWN, R.RATE_LIMITED}]
    assert len(stopped) == 4
    assert all(c[1].kind is K.ASK_APPROVAL for c in stopped)


ALL_AGAINST = rolled_back(5 * M, 2 * H, 3 * H, paused=True)
NO_AUTO = SafetyPolicy(False, POLICY.cooldown, 3, POLICY.max_rollbacks_period)


@pytest.mark.parametrize(
    ("made", "reason"),
    [
        (decision(Action.NOTIFY, has_target=False, version=None, no_data=True), R.NO_DATA_ALERT),
        (decision(Action.NOTIFY, has_target=False, version=None), R.RULE_NOTIFIES),
        (decision(has_target=False, version=None), R.NO_TARGET),
        (decision(Action.APPROVE, policy=NO_AUTO, history=ALL_AGAINST), R.RULE_ASKS_APPROVAL),
        (decision(policy=NO_AUTO, history=ALL_AGAINST), R.AUTO_ROLLBACK_DISABLED),
        (decision(history=ALL_AGAINST), R.PAUSED),
        (decision(history=rolled_back(5 * M, 2 * H, 3 * H)), R.COOLDOWN),
    ],
    ids=["no-data", "notify", "no-target", "approve", "disabled", "paused", "cooldown"],
)
def test_checks_run_in_the_documented_order(made: SafetyDecision, reason: DecisionReason) -> None:
    assert made.reason is reason


@pytest.mark.parametrize(
    ("since_last", "reason"),
    [
        (timedelta(minutes=30) - timedelta(seconds=1), R.COOLDOWN),
        (timedelta(minutes=30), R.AUTO_ROLLBACK),
    ],
    ids=["one-second-inside", "exactly-over"],
)
def test_cooldown_boundary(since_last: timedelta, reason: DecisionReason) -> None:
    assert decision(history=rolled_back(since_last, 20 * H)).reason is reason


def test_cooldown_uses_the_latest_rollback_whatever_the_order() -> None:
    made = decision(history=rolled_back(20 * H, 12 * M, 5 * H))

    assert made.reason is R.COOLDOWN
    assert made.detail == "cooldown: last rollback 12m ago, cooldown 30m"


def test_a_rollback_time_in_the_future_counts_as_just_now() -> None:
    made = decision(history=rolled_back(-2 * M))

    assert made.reason is R.COOLDOWN
    assert "last rollback 0s ago" in made.detail


@pytest.mark.parametrize(
    ("ago", "reason"),
    [
        ((1 * H, 5 * H, 24 * H - timedelta(seconds=1)), R.RATE_LIMITED),
        ((1 * H, 5 * H, 24 * H), R.AUTO_ROLLBACK),
        ((1 * H, 5 * H), R.AUTO_ROLLBACK),
    ],
    ids=["third-inside-window", "third-just-outside", "two-of-three"],
)
def test_rate_limit_window(ago: tuple[timedelta, ...], reason: DecisionReason) -> None:
    assert decision(history=rolled_back(*ago)).reason is reason


def test_rate_limit_detail() -> None:
    made = decision(history=rolled_back(1 * H, 5 * H, 23 * H))

    assert made.detail == "rate limited: 3 rollbacks in the last 1d, limit 3 per 1d"


def test_zero_max_rollbacks_always_asks() -> None:
    policy = SafetyPolicy(True, timedelta(0), 0, timedelta(hours=24))

    assert decision(policy=policy).reason is R.RATE_LIMITED


def test_paused_detail_carries_the_reason() -> None:
    assert decision(history=rolled_back(paused=True, reason="release freeze")).detail == (
        "automatic rollbacks are paused: release freeze"
    )
    assert decision(history=rolled_back(paused=True)).detail == "automatic rollbacks are paused"


def test_details_name_the_version() -> None:
    assert "7" in decision().detail
    assert "7" in decision(Action.APPROVE).detail


def test_rollbacks_within() -> None:
    times = [T0 - 1 * H, T0 - 2 * H, T0 - 3 * H, T0 + 1 * M]

    assert rollbacks_within(times, timedelta(hours=2), T0) == 2  # 1h ago and the skewed one
    assert rollbacks_within(times, timedelta(hours=2, seconds=1), T0) == 3
    assert rollbacks_within([], timedelta(hours=2), T0) == 0


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(milliseconds=500), "0s"),
        (timedelta(seconds=45), "45s"),
        (timedelta(minutes=12, seconds=30), "12m30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=1, hours=2), "1d2h"),
        (timedelta(seconds=-5), "0s"),
    ],
)
def test_format_duration(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


def test_a_busy_target_is_never_rolled_back_again() -> None:
    from datetime import UTC, datetime, timedelta

    from watcher.decisions.safety import (
        DecisionKind,
        DecisionReason,
        SafetyPolicy,
        TargetRollbackHistory,
        decide,
    )
    from watcher.model import Action

    policy = SafetyPolicy(
        auto_rollback=True, cooldown=timedelta(0), max_rollbacks=10, max_rollbacks_period=timedelta(hours=1)
    )
    decision = decide(
        Action.ROLLBACK,
        True,
        "1",
        False,
        policy,
        TargetRollbackHistory([], False),
        datetime(2026, 1, 1, tzinfo=UTC),
        target_busy=True,
    )
    assert (decision.kind, decision.reason) == (DecisionKind.NOTIFY_ONLY, DecisionReason.TARGET_BUSY)
