"""A replay: the daemon's own Engine and rollback dispatcher run on a recorded clock.

Nothing here decides anything: state, incidents, grouping, safeties and the known-good choice are
the engine's. What differs from the daemon is only what the engine is plugged into:
- a throwaway SQLite database in memory, gone afterwards (the user's database is never written);
- sources answering from history (Prometheus from range queries fetched up front, SQL and drift
  measured at each moment as usual);
- targets answering the live version at the replay clock from the version history, with dry-run
  adapters that record the rollback they would make;
- the version history written into the throwaway store as the daemon records what it sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from watcher.backtest.clock import TimeRange, moments, step_seconds
from watcher.backtest.history import VersionHistory
from watcher.backtest.rangedata import GuardedSource, HistoryBatch, RangeFetcher, SeriesKey
from watcher.backtest.targets import ReplayClock, ReplayTargets, WouldRollback
from watcher.decisions.known_good import VersionSighting
from watcher.engine.bind import RuntimeRule, build_runtime_rules, build_source
from watcher.engine.tick import Engine as WatcherEngine
from watcher.engine.tick import QuietWrite, TickResult
from watcher.incidents.dispatch import RollbackDispatcher
from watcher.model import Outcome, RuleState, SourceError
from watcher.rules.config import WatcherConfig
from watcher.rules.rulefmt import Rule
from watcher.sources.prometheus import PrometheusSource
from watcher.store import migrate
from watcher.store.queue import WorkQueue
from watcher.store.records import AuditEvent, IncidentRecord, RollbackIntent
from watcher.store.repository import Store

HOLDER = "backtest"
_DAWN = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RulePoint:
    at: datetime
    value: float | None
    state: RuleState
    outcome: Outcome


@dataclass
class RuleTrace:
    rule: Rule
    step: int
    points: list[RulePoint] = field(default_factory=list)


@dataclass(frozen=True)
class Unreplayable:
    """A rule the replay cannot run, and why."""

    rule_id: str
    reason: str


@dataclass(frozen=True)
class ReplayResult:
    window: TimeRange
    incidents: list[IncidentRecord]  # oldest first
    intents: list[RollbackIntent]
    timelines: dict[int, list[AuditEvent]]
    traces: dict[str, RuleTrace]
    first_breach: dict[int, datetime]  # incident id -> when its opening rule began to breach
    rollbacks: list[WouldRollback]
    history: VersionHistory  # as the replay saw it, would-be rollbacks included
    evaluations: int


class ReplayStore(Store):
    """The throwaway store. Sightings are read often (every rule's attribution, every moment) and
    change only when the replay driver says so (`forget`): they are kept in memory in between.
    The daemon refreshes the live version's last sighting as it watches its targets; here a read
    shows the live one as seen up to the replay clock."""

    def __init__(self, engine: Engine, targets: ReplayTargets) -> None:
        super().__init__(engine)
        self.replay_targets = targets
        self._sightings: dict[str, list[VersionSighting]] = {}

    def forget(self) -> None:
        self._sightings.clear()

    def sightings(self, target: str) -> list[VersionSighting]:
        periods = self._sightings.get(target)
        if periods is None:
            periods = self._sightings[target] = super().sightings(target)
        now = self.replay_targets.clock.now
        if (
            periods
            and periods[-1].last_seen < now
            and periods[-1].version == self.replay_targets.live_version(target)
        ):
            return [*periods[:-1], replace(periods[-1], last_seen=now)]
        return list(periods)


class ReplayEngine(WatcherEngine):
    """The daemon's engine, less one chore: a quiet rule's periodic state write is what a restart
    would assume anyway, and a replay never restarts (it would be most of the replay's work)."""

    def write_quiet(self, writes: Sequence[QuietWrite], now: datetime) -> None:
        return


class VersionRecorder:
    """Writes the history's changes into the replay store as the clock passes them."""

    def __init__(self, store: Store, targets: ReplayTargets) -> None:
        self._store = store
        self._targets = targets
        self._until = _DAWN

    def advance(self, until: datetime, *, before_replay: bool = False) -> bool:
        """Record the changes up to `until`; whether there were any."""
        pending = [
            (name, change)
            for name in self._targets.names
            for change in self._targets.history.target(name).changes_between(self._until, until)
        ]
        self._until = until
        if not pending:
            return False
        with self._store.transaction() as tx:
            for name, change in sorted(pending, key=lambda item: item[1].at):
                previous = self._targets.history.target(name).version_at(
                    change.at - timedelta(microseconds=1)
                )
                if previous is not None and previous != change.version:
                    tx.record_live_version(name, previous, change.at)  # its period lasted until now
                tx.record_live_version(name, change.version, change.at)
                if before_replay and change.had_incident:
                    tx.mark_incident_on_live_version(name, change.version)
        return True


@dataclass(frozen=True)
class ReplayPlan:
    rules: dict[str, Rule]
    window: TimeRange
    step: timedelta | None  # None: each rule's own interval
    history: VersionHistory


def rule_step(rule: Rule, plan: ReplayPlan) -> int:
    return step_seconds(plan.step if plan.step is not None else rule.interval)


def series_keys(plan: ReplayPlan) -> dict[str, list[SeriesKey]]:
    """The (query, step) pairs each Prometheus rule reads: what to fetch."""
    keys: dict[str, list[SeriesKey]] = {}
    for rule_id, rule in plan.rules.items():
        if rule.prometheus is None:
            continue
        step = rule_step(rule, plan)
        queries = [rule.prometheus]
        if rule.min_samples is not None and not isinstance(rule.min_samples, int):
            queries.append(rule.min_samples.prometheus)
        keys[rule_id] = [(query, step) for query in queries]
    return keys


def fetch_history(plan: ReplayPlan, fetcher: RangeFetcher) -> list[Unreplayable]:
    """Fetch every Prometheus rule's range answers; the rules whose queries failed."""
    keys = series_keys(plan)
    fetcher.fetch((key for wanted in keys.values() for key in wanted), plan.window)
    failed: list[Unreplayable] = []
    for rule_id, wanted in keys.items():
        failures = [failure for key in wanted if (failure := fetcher.failure(key)) is not None]
        if failures:
            failed.append(Unreplayable(rule_id, failures[0].message))
    return failed


def bind(
    plan: ReplayPlan, config: WatcherConfig, fetcher: RangeFetcher | None, targets: ReplayTargets
) -> dict[str, RuntimeRule]:
    """The daemon's binding of each rule, its source answering from history, and judging nothing
    while the replay's version of its target differs from the record's."""
    runtimes = build_runtime_rules(plan.rules, config)
    batches: dict[int, HistoryBatch] = {}
    target_of: dict[int, str | None] = {}

    def guard(source: object) -> SourceError | None:
        return targets.counterfactual(target_of.get(id(source)))

    for rule_id, rule in plan.rules.items():
        if rule.prometheus is not None and fetcher is not None:
            step = rule_step(rule, plan)
            batch = batches.setdefault(step, HistoryBatch(fetcher, step, guard))
            source: object = build_source(rule, config, prometheus_batch=batch)
            assert isinstance(source, PrometheusSource)
        else:
            source = GuardedSource(runtimes[rule_id].source, guard)
        target_of[id(source)] = rule.target
        target_of[id(runtimes[rule_id].source)] = rule.target
        runtimes[rule_id] = replace(runtimes[rule_id], source=source)
    return runtimes


def schedule(
    plan: ReplayPlan, runtimes: Mapping[str, RuntimeRule]
) -> list[tuple[datetime, list[RuntimeRule]]]:
    """Each moment of the replay with the rules due at it, in time order."""
    due: dict[datetime, list[RuntimeRule]] = {}
    for rule_id, runtime in runtimes.items():
        for moment in moments(plan.window, rule_step(runtime.rule, plan)):
            due.setdefault(moment, []).append(runtimes[rule_id])
    return sorted(due.items())


def throwaway_database() -> Engine:
    """An in-memory SQLite database, gone when disposed: one connection shared by the replay's one
    thread (nothing is written to disk, so nothing waits on it)."""
    database = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    event.listen(database, "connect", _foreign_keys)
    return database


def _foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def replay(plan: ReplayPlan, config: WatcherConfig, fetcher: RangeFetcher | None) -> ReplayResult:
    """Run the engine over the plan's window on a throwaway store; what it would have done."""
    database = throwaway_database()
    try:
        migrate.upgrade(database)
        return _run(plan, config, fetcher, database)
    finally:
        database.dispose()


def _run(
    plan: ReplayPlan, config: WatcherConfig, fetcher: RangeFetcher | None, database: Engine
) -> ReplayResult:
    clock = ReplayClock(plan.window.start)
    names = {*config.targets, *(rule.target for rule in plan.rules.values() if rule.target)}
    targets = ReplayTargets(sorted(names), plan.history, clock)
    store = ReplayStore(database, targets)
    engine = ReplayEngine(store, targets, config.safety)
    dispatcher = RollbackDispatcher(store, targets, HOLDER, config.safety.verify_after)
    recorder = VersionRecorder(store, targets)
    recorder.advance(plan.window.start - timedelta(microseconds=1), before_replay=True)
    runtimes = bind(plan, config, fetcher, targets)
    traces = {rid: RuleTrace(r.rule, rule_step(r.rule, plan)) for rid, r in runtimes.items()}
    first_breach: dict[int, datetime] = {}
    evaluations = 0
    for moment, due in schedule(plan, runtimes):
        clock.now = moment
        if recorder.advance(moment):
            store.forget()
        results = engine.tick_group(due, moment)
        evaluations += len(results)
        _trace(results, traces, first_breach, moment)
        if any(result.incident_opened is not None or result.transition.fired for result in results):
            dispatcher.run_due(moment)  # as the daemon does right after a tick that opened one
            store.forget()
    return _collect(plan, store, traces, first_breach, targets, evaluations)


def _trace(
    results: Sequence[TickResult],
    traces: dict[str, RuleTrace],
    first_breach: dict[int, datetime],
    moment: datetime,
) -> None:
    for result in results:
        current = result.transition.current
        traces[result.rule_id].points.append(
            RulePoint(moment, result.transition.value, current.state, result.transition.outcome)
        )
        if result.incident_opened is not None:
            first_breach[result.incident_opened] = current.active_since or moment


def _collect(
    plan: ReplayPlan,
    store: Store,
    traces: dict[str, RuleTrace],
    first_breach: dict[int, datetime],
    targets: ReplayTargets,
    evaluations: int,
) -> ReplayResult:
    incidents = sorted(store.incidents(limit=1_000_000), key=lambda incident: incident.id)
    return ReplayResult(
        window=plan.window,
        incidents=incidents,
        intents=WorkQueue(store).intents(),
        timelines={incident.id: store.timeline(incident.id) for incident in incidents},
        traces=traces,
        first_breach=first_breach,
        rollbacks=list(targets.rollbacks),
        history=targets.history,
        evaluations=evaluations,
    )
