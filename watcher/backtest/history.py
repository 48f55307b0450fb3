"""The version history a replay runs on: which version of each target was live when.

Two places it comes from: watcher's own records of live versions in the configured database (read
only, never created, in one small function: the only place that knows how they are stored), or a
CSV file `time,target,version` with one row per change, for times before watcher ran. A target's
first known version counts as live since before its first change, as SPEC.md section 3 has it for
a fresh start.
"""

from __future__ import annotations

import bisect
import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from watcher.decisions.known_good import VersionSighting


@dataclass(frozen=True)
class VersionChange:
    at: datetime
    target: str
    version: str
    had_incident: bool = False  # watcher's records say an incident was opened on this period
    replayed: bool = False  # a would-be rollback of the replay, not a recorded change
    # A rollback watcher made on its own (not asked by a person): the replay makes its own such
    # decisions, so it does not take this one as given; the data after it is still this version's.
    automatic: bool = False


@dataclass(frozen=True)
class HistoryProblem:
    message: str


@dataclass
class TargetHistory:
    """One target's changes in time order; the replay may add its own (would-be rollbacks)."""

    changes: list[VersionChange] = field(default_factory=list)

    def _times(self) -> list[datetime]:
        return [change.at for change in self.changes]

    def version_at(self, moment: datetime) -> str | None:
        """The version live at `moment`: the last change at or before it, else the first known."""
        if not self.changes:
            return None
        index = bisect.bisect_right(self._times(), moment) - 1
        return self.changes[max(index, 0)].version

    def last_change_at(self, moment: datetime) -> VersionChange | None:
        """The last change at or before `moment`."""
        index = bisect.bisect_right(self._times(), moment) - 1
        return self.changes[index] if index >= 0 else None

    def next_change_after(self, moment: datetime) -> VersionChange | None:
        """The first change after `moment`."""
        index = bisect.bisect_right(self._times(), moment)
        return self.changes[index] if index < len(self.changes) else None

    def previous_at(self, moment: datetime) -> str | None:
        """The version live before the one live at `moment` (what an adapter calls its previous)."""
        index = bisect.bisect_right(self._times(), moment) - 1
        live = self.version_at(moment)
        for change in reversed(self.changes[: max(index, 0)]):
            if change.version != live:
                return change.version
        return None

    def add(self, change: VersionChange) -> None:
        """Insert a change (after any change at the same moment)."""
        index = bisect.bisect_right(self._times(), change.at)
        self.changes.insert(index, change)

    def changes_between(self, start: datetime, end: datetime) -> list[VersionChange]:
        """Changes with start < at <= end."""
        return [change for change in self.changes if start < change.at <= end]


class VersionHistory:
    """Every target's history; a copy per replay, so a would-be rollback of one run stays there."""

    def __init__(self, changes: Iterable[VersionChange] = ()) -> None:
        self.targets: dict[str, TargetHistory] = {}
        for change in sorted(changes, key=lambda c: c.at):
            self.targets.setdefault(change.target, TargetHistory()).changes.append(change)

    def copy(self) -> VersionHistory:
        return VersionHistory(change for history in self.targets.values() for change in history.changes)

    def without_automatic(self) -> VersionHistory:
        """A copy without watcher's automatic rollbacks: the history a replay decides on."""
        return VersionHistory(
            change for history in self.targets.values() for change in history.changes if not change.automatic
        )

    def target(self, name: str) -> TargetHistory:
        return self.targets.setdefault(name, TargetHistory())

    def version_at(self, name: str, moment: datetime) -> str | None:
        history = self.targets.get(name)
        return history.version_at(moment) if history is not None else None

    def before_records(self, given: VersionHistory) -> VersionHistory:
        """These records, with `given` changes (a --versions file) for the times before them: a
        target's given changes count up to its first recorded change, every one of them for a
        target watcher never recorded."""
        changes = [change for history in self.targets.values() for change in history.changes]
        for name, history in given.targets.items():
            recorded = self.targets.get(name)
            first = recorded.changes[0].at if recorded is not None and recorded.changes else None
            changes.extend(change for change in history.changes if first is None or change.at < first)
        return VersionHistory(changes)


def parse_csv_time(text: str) -> datetime:
    """RFC 3339 (or unix seconds); a time without an offset is UTC."""
    text = text.strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def read_versions_csv(path: Path) -> VersionHistory | HistoryProblem:
    """`time,target,version` rows, one per change (a header row is allowed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        return HistoryProblem(f"{path}: cannot read ({error.strerror or type(error).__name__})")
    changes: list[VersionChange] = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if number == 1 and [cell.strip().lower() for cell in row] == ["time", "target", "version"]:
            continue
        if len(row) != 3 or not row[1].strip() or not row[2].strip():
            return HistoryProblem(f"{path}:{number}: expected time,target,version")
        try:
            moment = parse_csv_time(row[0])
        except ValueError:
            return HistoryProblem(f"{path}:{number}: {row[0].strip()!r} is not a time (RFC 3339)")
        changes.append(VersionChange(moment, row[1].strip(), row[2].strip()))
    return VersionHistory(changes)


def recorded_history(database: str, targets: Sequence[str]) -> VersionHistory | HistoryProblem:
    """The live versions watcher recorded per target in `database`, read only.

    A database that does not exist is not created (an empty history); each recorded period of a
    version is a change at its first sighting. A period that began with a rollback watcher made on
    its own (an automatic rollback: the intent's requester is watcher) is marked `automatic`."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from watcher.incidents.flow import ACTOR as WATCHER
    from watcher.model import RollbackStatus
    from watcher.store.database import is_sqlite, open_engine
    from watcher.store.queue import WorkQueue
    from watcher.store.records import IntentPurpose
    from watcher.store.repository import Store

    sqlite_file = make_url(database).database if is_sqlite(database) else None
    if sqlite_file is not None and (sqlite_file in ("", ":memory:") or not Path(sqlite_file).exists()):
        return VersionHistory()
    # SQLite opened read-only: open_engine's set-up would switch the file's journal mode.
    engine = (
        create_engine(f"sqlite:///file:{Path(sqlite_file).absolute()}?mode=ro&uri=true")
        if sqlite_file is not None
        else open_engine(database)
    )
    try:
        store = Store(engine)
        sightings: Mapping[str, list[VersionSighting]] = {name: store.sightings(name) for name in targets}
        automatic = {
            (intent.target, intent.to_version, intent.finished_at)
            for intent in WorkQueue(store).intents()
            if intent.requested_by == WATCHER
            and intent.purpose is IntentPurpose.ROLLBACK
            and intent.status is RollbackStatus.SUCCEEDED
        }
    except Exception as error:  # not migrated yet, unreachable: say so, the CSV may still serve
        return HistoryProblem(f"cannot read watcher's version records: {type(error).__name__}")
    finally:
        engine.dispose()
    return VersionHistory(
        VersionChange(
            sighting.first_seen,
            name,
            sighting.version,
            sighting.had_incident,
            # The dispatcher records the new period in the transaction that finishes the intent.
            automatic=(name, sighting.version, sighting.first_seen) in automatic,
        )
        for name, periods in sightings.items()
        for sighting in periods
    )
