"""Choosing the version to roll back to: last known-good, else the adapter's previous one."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from watcher.decisions.known_good import (
    RollbackChoice,
    RollbackChoiceReason,
    VersionSighting,
    choose_rollback_version,
    is_known_good,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
STABLE = timedelta(hours=1)
H = timedelta(hours=1)


def seen(version: str, start_ago: timedelta, end_ago: timedelta, incident: bool = False) -> VersionSighting:
    return VersionSighting(version, NOW - start_ago, NOW - end_ago, incident)


def choose(
    sightings: list[VersionSighting], previous: str | None = "prev", live: str = "5"
) -> RollbackChoice:
    return choose_rollback_version(live, sightings, previous, STABLE, NOW)


KG = RollbackChoiceReason.KNOWN_GOOD


@pytest.mark.parametrize(
    ("sightings", "expected"),
    [
        # 5 live now; 4 ran 2h clean before it; 3 ran 10h clean before that.
        (
            [seen("3", 20 * H, 10 * H), seen("4", 10 * H, 8 * H), seen("5", 8 * H, 0 * H)],
            RollbackChoice("4", KG),
        ),
        # 4 had an incident: skip to 3.
        (
            [seen("3", 20 * H, 10 * H), seen("4", 10 * H, 8 * H, True), seen("5", 8 * H, 0 * H)],
            RollbackChoice("3", KG),
        ),
        # 4 ran only 59 minutes: not yet known-good.
        (
            [
                seen("3", 20 * H, 10 * H),
                seen("4", 10 * H, 10 * H - timedelta(minutes=59)),
                seen("5", 8 * H, 0 * H),
            ],
            RollbackChoice("3", KG),
        ),
        # 4 ran exactly stable_after: known-good.
        ([seen("3", 20 * H, 10 * H), seen("4", 10 * H, 9 * H)], RollbackChoice("4", KG)),
        # 4's second period had an incident but its first was clean; the clean one is older than 3's.
        (
            [seen("4", 30 * H, 25 * H), seen("3", 25 * H, 10 * H), seen("4", 10 * H, 9 * H, True)],
            RollbackChoice("3", KG),
        ),
        # The live version's own stable past never counts.
        (
            [seen("5", 30 * H, 20 * H), seen("4", 20 * H, 19 * H + timedelta(minutes=1))],
            RollbackChoice("prev", RollbackChoiceReason.ADAPTER_PREVIOUS),
        ),
        # No history at all: the adapter's previous version.
        ([], RollbackChoice("prev", RollbackChoiceReason.ADAPTER_PREVIOUS)),
    ],
    ids=[
        "newest-clean",
        "skip-incident",
        "too-short",
        "exactly-stable",
        "clean-period-of-a-version-counts-by-its-own-end",
        "live-excluded",
        "no-history",
    ],
)
def test_choice(sightings: list[VersionSighting], expected: RollbackChoice) -> None:
    assert choose(sightings) == expected


def test_adapter_previous_equal_to_live_is_no_choice() -> None:
    assert choose([], previous="5") == RollbackChoice(None, RollbackChoiceReason.NONE)


def test_nothing_at_all_is_no_choice() -> None:
    assert choose([seen("4", 2 * H, 1.5 * H)], previous=None) == RollbackChoice(
        None, RollbackChoiceReason.NONE
    )


def test_known_good_history_beats_the_adapter_previous() -> None:
    assert choose([seen("2", 50 * H, 40 * H)], previous="4") == RollbackChoice("2", KG)


def test_ties_on_last_seen_go_to_the_later_start_then_the_version() -> None:
    same_end = [seen("a", 10 * H, 2 * H), seen("b", 5 * H, 2 * H), seen("c", 5 * H, 2 * H)]

    for _ in range(5):
        random.shuffle(same_end)
        assert choose(same_end).version == "c"


@pytest.mark.parametrize(
    ("sighting", "good"),
    [
        (seen("4", 2 * H, 1 * H), True),
        (seen("4", 2 * H, 1 * H, incident=True), False),
        (seen("4", 1 * H, timedelta(seconds=1)), False),
        # last_seen in the future (clock skew) counts only up to now.
        (seen("4", 30 * timedelta(minutes=1), -1 * H), False),
        (seen("4", 1 * H, -1 * H), True),
    ],
    ids=["stable", "incident", "one-second-short", "future-end-capped", "future-end-long-enough"],
)
def test_is_known_good(sighting: VersionSighting, good: bool) -> None:
    assert is_known_good(sighting, STABLE, NOW) is good
