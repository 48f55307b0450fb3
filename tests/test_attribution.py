"""Attribution and settling, pure: windows before, across and after a version change."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from watcher.decisions.attribution import AttributionKind, attribute, clipped_window_start, went_live_at
from watcher.decisions.evaluation import RulePolicy, RuleStatus, TransitionReason, step
from watcher.decisions.known_good import VersionSighting
from watcher.model import NoDataPolicy, RuleState, Value

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def period(version: str, start: timedelta, end: timedelta) -> VersionSighting:
    return VersionSighting(version, T0 + start, T0 + end, had_incident=False)


# v2 live since before watcher looked, v3 released at +10m, rolled back to v2 at +20m.
HISTORY = [period("2", 0 * MIN, 9 * MIN), period("3", 10 * MIN, 19 * MIN), period("2", 20 * MIN, 30 * MIN)]


@pytest.mark.parametrize(
    ("history", "live", "lookback", "at", "kind", "previous"),
    [
        # The first version ever seen counts as live since before watcher looked: no blind spot.
        (HISTORY[:1], "2", 60 * MIN, 1 * MIN, AttributionKind.ATTRIBUTED, None),
        # A window that ends before the release holds only v2.
        (HISTORY[:1], "2", 5 * MIN, 9 * MIN, AttributionKind.ATTRIBUTED, None),
        # Across the release: v3 is live but the window still holds v2.
        (HISTORY[:2], "3", 5 * MIN, 12 * MIN, AttributionKind.SETTLING, "2"),
        # Exactly at the edge: the window starts when v3 went live.
        (HISTORY[:2], "3", 5 * MIN, 15 * MIN, AttributionKind.ATTRIBUTED, None),
        # After the release by more than the window: v3 alone.
        (HISTORY[:2], "3", 5 * MIN, 18 * MIN, AttributionKind.ATTRIBUTED, None),
        # Across the rollback: v2 is live again, the window still holds v3.
        (HISTORY, "2", 5 * MIN, 22 * MIN, AttributionKind.SETTLING, "3"),
        # After the rollback by the whole window: v2 alone, though v2 was also live long ago.
        (HISTORY, "2", 5 * MIN, 26 * MIN, AttributionKind.ATTRIBUTED, None),
        # A zero lookback (an instant gauge) is attributed at once.
        (HISTORY, "2", timedelta(0), 20 * MIN, AttributionKind.ATTRIBUTED, None),
        # The adapter reports a version newer than any record: settling until it is recorded.
        (HISTORY, "4", 5 * MIN, 31 * MIN, AttributionKind.SETTLING, "2"),
        # No version known at all: nothing to attribute to.
        ([], None, 5 * MIN, 1 * MIN, AttributionKind.UNVERSIONED, None),
    ],
)
def test_attribution_of_a_window(
    history: list[VersionSighting],
    live: str | None,
    lookback: timedelta,
    at: timedelta,
    kind: AttributionKind,
    previous: str | None,
) -> None:
    attribution = attribute(history, live, lookback, T0 + at)
    assert attribution.kind is kind
    assert attribution.version == live
    if kind is AttributionKind.SETTLING:
        assert attribution.previous_version == previous


def test_went_live_at_is_the_start_of_the_current_period_and_none_for_the_first() -> None:
    assert went_live_at(HISTORY, "2") == T0 + 20 * MIN
    assert went_live_at(HISTORY[:2], "3") == T0 + 10 * MIN
    assert went_live_at(HISTORY[:1], "2") is None


def test_sql_and_drift_window_start_is_clipped_to_when_the_version_went_live() -> None:
    young = attribute(HISTORY, "2", timedelta(hours=6), T0 + 25 * MIN)
    assert clipped_window_start(T0 + 25 * MIN - timedelta(hours=6), young) == T0 + 20 * MIN
    first = attribute(HISTORY[:1], "2", timedelta(hours=6), T0 + 5 * MIN)
    assert clipped_window_start(T0 - timedelta(hours=6), first) == T0 - timedelta(hours=6)


POLICY = RulePolicy(
    for_=2 * MIN, keep_firing_for=timedelta(0), on_no_data=NoDataPolicy.KEEP, above=0.05, below=None
)
BREACH = Value(0.2)
OK = Value(0.01)


def test_a_settling_breach_neither_starts_nor_advances_an_episode() -> None:
    settling = attribute(HISTORY, "2", 5 * MIN, T0 + 22 * MIN)
    transition = step(RuleStatus(), BREACH, POLICY, T0 + 22 * MIN, settling)
    assert transition.reason is TransitionReason.SETTLING
    assert transition.current.state is RuleState.INACTIVE
    # An ok evaluation counts as usual while settling.
    assert step(RuleStatus(), OK, POLICY, T0 + 22 * MIN, settling).reason is TransitionReason.STAYED_INACTIVE


def test_pending_time_does_not_carry_across_a_version_change() -> None:
    on_v3 = attribute(HISTORY[:2], "3", 5 * MIN, T0 + 16 * MIN)
    pending = step(RuleStatus(), BREACH, POLICY, T0 + 16 * MIN, on_v3).current
    assert pending.state is RuleState.PENDING and pending.version == "3"
    # Rolled back to v2 at +20m: at +21m the episode on v3 ends, whatever the value says.
    on_v2 = attribute(HISTORY, "2", 5 * MIN, T0 + 21 * MIN)
    changed = step(pending, BREACH, POLICY, T0 + 21 * MIN, on_v2)
    assert changed.reason is TransitionReason.VERSION_CHANGED
    assert changed.current.state is RuleState.INACTIVE and changed.current.version is None


def test_a_firing_episode_ends_with_its_version() -> None:
    on_v3 = attribute(HISTORY[:2], "3", 5 * MIN, T0 + 16 * MIN)
    at_once = replace(POLICY, for_=timedelta(0))
    firing = step(RuleStatus(), BREACH, at_once, T0 + 16 * MIN, on_v3)
    assert firing.fired and firing.current.version == "3"
    on_v2 = attribute(HISTORY, "2", 5 * MIN, T0 + 27 * MIN)
    after = step(firing.current, BREACH, POLICY, T0 + 27 * MIN, on_v2)
    assert after.reason is TransitionReason.VERSION_CHANGED and after.resolved


def test_a_clean_window_on_the_new_version_starts_a_new_episode_on_it() -> None:
    on_v2 = attribute(HISTORY, "2", 5 * MIN, T0 + 26 * MIN)
    started = step(RuleStatus(), BREACH, POLICY, T0 + 26 * MIN, on_v2)
    assert started.reason is TransitionReason.BREACH_STARTED and started.current.version == "2"


def test_rules_with_no_target_are_never_settling() -> None:
    transition = step(RuleStatus(), BREACH, POLICY, T0, None)
    assert transition.reason is TransitionReason.BREACH_STARTED and transition.current.version is None
