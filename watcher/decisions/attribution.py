"""Which version a rule's evaluation speaks for: attributed to the live version, or settling.

A measurement reads a window of data, [now - lookback, now]. It is evidence against a version only
when that version was live over the whole window (SPEC.md section 3). While the window still holds
data of an earlier version (just after a rollback, a release or an undo) the rule is *settling*:
its breaches are no evidence against the version now live.

The version history of a target is the list of its continuous live periods (VersionSighting, in
the order they began). Before watcher's first sighting of a target, the version it first saw
counts as live: its first period is taken to have begun at the dawn of time, so a fresh start has
no blind spot. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from watcher.decisions.known_good import VersionSighting


class AttributionKind(StrEnum):
    ATTRIBUTED = "attributed"  # the live version was live over the whole window
    SETTLING = "settling"  # the window spans a version change
    UNVERSIONED = "unversioned"  # no target, or its version is unknown: nothing to attribute


@dataclass(frozen=True)
class Attribution:
    kind: AttributionKind
    version: str | None  # the version live now (None when unknown)
    live_since: datetime | None  # when it went live; None: before watcher's first sighting
    window_start: datetime
    previous_version: str | None = None  # while settling: the version the window still holds

    @property
    def settling(self) -> bool:
        return self.kind is AttributionKind.SETTLING

    @property
    def clean_at(self) -> datetime | None:
        """When the window will hold only the live version (None: it already does, or never known)."""
        return None if self.live_since is None or not self.settling else self.live_since


def live_period(history: Sequence[VersionSighting], at: datetime) -> tuple[int, VersionSighting] | None:
    """The index and period of the version live at `at`: the last period begun at or before it."""
    found: tuple[int, VersionSighting] | None = None
    for index, period in enumerate(history):
        if period.first_seen <= at or index == 0:
            found = (index, period)
    return found


def went_live_at(history: Sequence[VersionSighting], version: str) -> datetime | None:
    """When the current period of `version` began; None for the first period ever seen (it counts
    as live since before watcher looked) or a version with no period in the history."""
    for index in range(len(history) - 1, -1, -1):
        if history[index].version == version:
            return None if index == 0 else history[index].first_seen
    return None


def attribute(
    history: Sequence[VersionSighting], live: str | None, lookback: timedelta, now: datetime
) -> Attribution:
    """Attribute an evaluation at `now` over a window of `lookback` to the live version, or not."""
    window_start = now - lookback
    if live is None:
        return Attribution(AttributionKind.UNVERSIONED, None, None, window_start)
    if not history or history[-1].version != live:
        # The live version is newer than anything recorded: it went live no earlier than the last
        # sighting of its predecessor, which is all that is known. Settling until it is recorded.
        previous = history[-1] if history else None
        if previous is None:
            return Attribution(AttributionKind.ATTRIBUTED, live, None, window_start)
        return Attribution(AttributionKind.SETTLING, live, previous.last_seen, window_start, previous.version)
    since = went_live_at(history, live)
    if since is None or since <= window_start:
        return Attribution(AttributionKind.ATTRIBUTED, live, since, window_start)
    return Attribution(
        AttributionKind.SETTLING, live, since, window_start, history[-2].version if len(history) > 1 else None
    )


def clipped_window_start(window_start: datetime, attribution: Attribution) -> datetime:
    """`:window_start` for SQL and drift queries: never earlier than when the live version went live."""
    if attribution.live_since is None:
        return window_start
    return max(window_start, attribution.live_since)
