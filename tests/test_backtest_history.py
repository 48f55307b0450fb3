"""Which version a replay decides on, and when the recorded data cannot judge it (no Prometheus
needed: the history and the replay's targets alone)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from watcher.backtest.history import VersionChange, VersionHistory
from watcher.backtest.targets import ReplayClock, ReplayTargets

T0 = datetime(2024, 3, 1, tzinfo=UTC)
STEP = timedelta(seconds=3)
TARGET = "fraud-prod"


def _targets(*changes: VersionChange) -> ReplayTargets:
    return ReplayTargets([TARGET], VersionHistory(changes), ReplayClock(T0), STEP)


def _judgeable(targets: ReplayTargets, at: datetime) -> bool:
    targets.clock.now = at
    return targets.counterfactual(TARGET) is None


RECORD = (
    VersionChange(T0 - timedelta(hours=1), TARGET, "2"),
    VersionChange(T0, TARGET, "3"),
    # The daemon's own rollback, 37.6 s in: the replay is to make that decision itself.
    VersionChange(T0 + timedelta(seconds=37.6), TARGET, "2", automatic=True),
)


def test_the_replay_decides_on_the_record_less_watchers_automatic_rollbacks() -> None:
    targets = _targets(*RECORD)

    assert targets.live_version(TARGET) == "3"
    targets.clock.now = T0 + timedelta(minutes=5)
    assert targets.live_version(TARGET) == "3"  # until the replay rolls back itself
    assert targets.recorded.version_at(TARGET, targets.clock.now) == "2"


def test_a_replay_rolling_back_a_step_after_the_daemon_judges_throughout() -> None:
    targets = _targets(*RECORD)

    assert _judgeable(targets, T0 + timedelta(seconds=38))  # the daemon's rollback 0.4 s ago
    targets.roll_back(TARGET, "3", "2")
    for seconds in (41, 44, 300):
        assert _judgeable(targets, T0 + timedelta(seconds=seconds))


def test_a_replay_rolling_back_before_the_daemon_judges_throughout() -> None:
    targets = _targets(*RECORD)

    targets.clock.now = T0 + timedelta(seconds=35)
    targets.roll_back(TARGET, "3", "2")
    for seconds in (35, 37, 38, 41, 300):
        assert _judgeable(targets, T0 + timedelta(seconds=seconds))


def test_a_replay_that_never_rolls_back_cannot_judge_the_restored_versions_data() -> None:
    targets = _targets(*RECORD)

    assert _judgeable(targets, T0 + timedelta(seconds=38))  # still the decision's step
    assert not _judgeable(targets, T0 + timedelta(seconds=40.6))
    assert not _judgeable(targets, T0 + timedelta(minutes=5))


def test_a_rollback_a_person_made_is_taken_as_given() -> None:
    manual = VersionChange(T0 + timedelta(seconds=37.6), TARGET, "2")
    targets = _targets(*RECORD[:2], manual)

    targets.clock.now = T0 + timedelta(seconds=38)
    assert targets.live_version(TARGET) == "2"
    assert _judgeable(targets, T0 + timedelta(minutes=5))


def test_a_would_be_rollback_the_record_never_made_cannot_be_judged() -> None:
    targets = _targets(*RECORD[:2])

    targets.clock.now = T0 + timedelta(seconds=38)
    targets.roll_back(TARGET, "3", "2")
    assert not _judgeable(targets, T0 + timedelta(seconds=41))
