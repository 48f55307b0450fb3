"""Which version to roll back to: the last known-good one (SPEC.md section 3).

A version is known-good when, in one continuous period live on the target, it stayed live for at
least `stable_after` without an incident. The choice is the newest such version other than the
live one (by the end of that period, then its start); with no such history, the adapter's own
previous version; else nothing, and the engine only notifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


@dataclass(frozen=True)
class VersionSighting:
    """One continuous period during which `version` was live on a target."""

    version: str
    first_seen: datetime
    last_seen: datetime
    had_incident: bool


class RollbackChoiceReason(StrEnum):
    KNOWN_GOOD = "known_good"
    ADAPTER_PREVIOUS = "adapter_previous"
    NONE = "none"


@dataclass(frozen=True)
class RollbackChoice:
    version: str | None
    reason: RollbackChoiceReason


def is_known_good(sighting: VersionSighting, stable_after: timedelta, now: datetime) -> bool:
    """Live for at least `stable_after` in this period, with no incident in it.

    A last_seen later than `now` (clock skew between replicas) only counts up to `now`.
    """
    if sighting.had_incident:
        return False
    return min(sighting.last_seen, now) - sighting.first_seen >= stable_after


def choose_rollback_version(
    live: str,
    sightings: Sequence[VersionSighting],
    adapter_previous: str | None,
    stable_after: timedelta,
    now: datetime,
) -> RollbackChoice:
    good = [s for s in sightings if s.version != live and is_known_good(s, stable_after, now)]
    if good:
        # The version string breaks exact ties so the choice never depends on input order.
        newest = max(good, key=lambda s: (s.last_seen, s.first_seen, s.version))
        return RollbackChoice(newest.version, RollbackChoiceReason.KNOWN_GOOD)
    if adapter_previous is not None and adapter_previous != live:
        return RollbackChoice(adapter_previous, RollbackChoiceReason.ADAPTER_PREVIOUS)
    return RollbackChoice(None, RollbackChoiceReason.NONE)
