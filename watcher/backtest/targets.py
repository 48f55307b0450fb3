"""Targets as they were: live versions answered from the version history at the replay's clock,
and dry-run adapters that record the rollback they would make instead of making it.

A would-be rollback changes the replay's own copy of the history (the restored version is live
from then on, until the next recorded change), as a real one would have changed what the daemon
saw afterwards. The recorded data is still the recorded data, though: while the replay has a
version live that the record does not, the data is the other version's, and judging the restored
version on it would invent incidents. Measurements of such a target are an error saying so
(errors move no state, open and resolve nothing) until the record catches up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from watcher.backtest.history import VersionChange, VersionHistory
from watcher.model import ErrorKind, SourceError
from watcher.remediations.base import (
    AdapterFailure,
    LiveVersion,
    PreflightReport,
    RemediationAdapter,
    RollbackOutcome,
    RollbackResult,
    VerifyOutcome,
    VersionInfo,
)
from watcher.targets import TargetRegistry, UnknownTarget


@dataclass(frozen=True)
class WouldRollback:
    at: datetime
    target: str
    from_version: str
    to_version: str


class ReplayClock:
    """The recorded clock: the replay driver moves it; targets read it."""

    def __init__(self, start: datetime) -> None:
        self.now = start


class DryRunAdapter:
    """A target that answers from history and records what it is asked to do."""

    def __init__(self, name: str, targets: ReplayTargets) -> None:
        self.name = name
        self._targets = targets

    def live_version(self) -> LiveVersion | AdapterFailure:
        version = self._targets.live_version(self.name)
        if version is None:
            return AdapterFailure(f"no version history for target {self.name}", retryable=False)
        return LiveVersion(version)

    def history(self) -> Sequence[VersionInfo] | AdapterFailure:
        changes = self._targets.history.target(self.name).changes
        return [VersionInfo(c.version, c.at) for c in reversed(changes) if c.at <= self._targets.clock.now]

    def previous_version(self) -> str | AdapterFailure | None:
        return self._targets.previous_version(self.name)

    def preflight(self, to_version: str) -> PreflightReport:
        return PreflightReport()

    def rollback(self, *, intent_key: str, from_version: str, to_version: str) -> RollbackOutcome:
        live = self._targets.live_version(self.name)
        if live == to_version:
            return RollbackOutcome(RollbackResult.ALREADY_DONE, "already on that version")
        if live != from_version:
            return RollbackOutcome(RollbackResult.VERSION_CHANGED, f"{from_version} is no longer live")
        self._targets.roll_back(self.name, from_version, to_version)
        return RollbackOutcome(RollbackResult.DONE, "dry run: recorded, not made")

    def verify(self, version: str) -> VerifyOutcome:
        return VerifyOutcome(ok=self._targets.live_version(self.name) == version)


class ReplayTargets(TargetRegistry):
    """The configured targets' names, their versions from `history` at `clock.now`."""

    def __init__(
        self,
        names: Sequence[str],
        recorded: VersionHistory,
        clock: ReplayClock,
        step: timedelta = timedelta(0),
    ) -> None:
        super().__init__({}, Path("."))
        self.step = step
        self._names = sorted(names)
        self.recorded = recorded
        # What the replay decides on: the record less watcher's own automatic rollbacks (the replay
        # makes its own); `recorded` stays what was live, so what the data is.
        self.history = recorded.without_automatic()
        self.clock = clock
        self.rollbacks: list[WouldRollback] = []
        self._dry = {name: DryRunAdapter(name, self) for name in self._names}

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def adapter(self, name: str) -> RemediationAdapter:
        if name not in self._dry:
            raise UnknownTarget(name)
        return self._dry[name]

    def live_version(self, name: str) -> str | None:
        return self.history.version_at(name, self.clock.now)

    def previous_version(self, name: str) -> str | None:
        return self.history.target(name).previous_at(self.clock.now)

    def counterfactual(self, name: str | None) -> SourceError | None:
        """Why the target's data cannot be judged now (the replay rolled back, the record did not)."""
        if name is None:
            return None
        now = self.clock.now
        replayed, recorded = self.history.version_at(name, now), self.recorded.version_at(name, now)
        if replayed == recorded or self._decision_pending(name, now):
            return None
        return SourceError(
            ErrorKind.CONFIG,
            f"{name}: the replay rolled back to {replayed}; the recorded data is {recorded}'s",
            retryable=False,
        )

    def _decision_pending(self, name: str, now: datetime) -> bool:
        """The replay and the record differ only by when the same automatic rollback was made: the
        record's came less than a step ago (the replay makes it itself at its next step), or the
        replay's came first and the record's follows within a step. Either way the window is nearly
        all the replaced version's data, and blocking it would keep the replay from reaching, or
        from following up, the decision the daemon made."""
        record = self.recorded.target(name)
        last = record.last_change_at(now)
        if last is not None and last.automatic and now - last.at < self.step:
            return True
        mine = self.history.target(name).last_change_at(now)
        if mine is None or not mine.replayed:
            return False
        coming = record.next_change_after(now)
        return (
            coming is not None
            and coming.automatic
            and coming.version == mine.version
            and coming.at - mine.at < self.step
        )

    def roll_back(self, name: str, from_version: str, to_version: str) -> None:
        now = self.clock.now
        self.history.target(name).add(VersionChange(now, name, to_version, replayed=True))
        self.rollbacks.append(WouldRollback(now, name, from_version, to_version))
