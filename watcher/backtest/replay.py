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

from collections.abc import Callable, Mapping, Sequence
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
from watcher.decisions.attribution import Attribution
from watcher.decisions.evaluation import step
from watcher.decisions.known_good import VersionSighting
from watcher.engine.bind import RuntimeRule, build_runtime_rules, build_source
from watcher.engine.tick import Engine as WatcherEngine
from watcher.engine.tick import QuietWrite, TickResult
from watcher.incidents.dispatch import RollbackDispatcher
from watcher.model import Outcome, RuleState, SourceAnswer, SourceError, Value
from watcher.rules.config import SafetySettings, WatcherConfig
from watcher.rules.instances import is_vector_rule
from watcher.rules.rulefmt import Rule
from watcher.sources.prometheus import PrometheusSource
from watcher.store import migrate
from watcher.store.findings import FindingRecord
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
    findings: dict[int, list[FindingRecord]]  # per incident, the opening rule first
    traces: dict[str, RuleTrace]
    first_breach: dict[int, datetime]  # incident id -> when its opening rule began to breach
    rollbacks: list[WouldRollback]
    history: VersionHistory  # as the replay saw it, would-be rollbacks included
    evaluations: int
    # Per rule, the moments it was not judged at: after a would-be rollback, until the record
    # catches up, the recorded data is the other version's (see targets.ReplayTargets).
    unjudged: dict[str, int] = field(default_factory=dict)


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
    """The daemon's engine, less what only a long-running process needs.

    - A quiet rule's periodic state write is what a restart would assume anyway, and a replay never
      restarts (it would be most of the replay's work).
    - Most evaluations of a replay are of rules at rest on an ok answer: `pass_at_rest` steps them
      through the daemon's own `step` and keeps the outcome only when the engine would have made no
      write but the quiet one (`_quiet`), without the tick's batching, timing and logging around it.
      Anything else (a breach, an error, an open incident, settling) goes through `tick_group`.
    - An attribution that is not settling stays so until the version history changes: it is kept
      per (target, lookback) until the replay driver says the history changed (`forget`).
    """

    def __init__(self, store: Store, targets: ReplayTargets, safety: SafetySettings) -> None:
        super().__init__(store, targets, safety)
        self._steady: dict[tuple[str, timedelta], Attribution] = {}

    def write_quiet(self, writes: Sequence[QuietWrite], now: datetime) -> None:
        return

    def forget(self) -> None:
        """The version history changed (a recorded change, a would-be rollback)."""
        self._steady.clear()
        self.versions.forget()

    def attribution(self, runtime: RuntimeRule, now: datetime) -> Attribution | None:
        target = runtime.rule.target
        if target is None or is_vector_rule(runtime.rule):
            return super().attribution(runtime, now)
        key = (target, runtime.lookback)
        steady = self._steady.get(key)
        if steady is not None:
            return replace(steady, window_start=now - runtime.lookback)
        found = super().attribution(runtime, now)
        if found is not None and not found.settling:
            self._steady[key] = found
        return found

    def pass_at_rest(self, runtime: RuntimeRule, answer: SourceAnswer, now: datetime) -> TickResult | None:
        """The evaluation of a rule at rest that stays at rest, as `settle` would have made it; None
        when the rule must go through `tick_group` (nothing is kept then)."""
        rule_id = runtime.id
        if not isinstance(answer, Value) or rule_id in self._open_incident_rules:
            return None
        attribution = self.attribution(runtime, now)
        transition = step(self.status(rule_id), answer, runtime.policy, now, attribution)
        if transition.fired or not self._quiet(rule_id, transition):
            return None
        self._statuses[rule_id] = transition.current  # one thread: the replay driver's
        return TickResult(rule_id, answer, transition, None, 0.0, attribution)


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
    steps = [rule_step(rule, plan) for rule in plan.rules.values()]
    targets = ReplayTargets(sorted(names), plan.history, clock, timedelta(seconds=max(steps, default=0)))
    store = ReplayStore(database, targets)
    engine = ReplayEngine(store, targets, config.safety)
    recorder = VersionRecorder(store, targets)
    recorder.advance(plan.window.start - timedelta(microseconds=1), before_replay=True)
    runtimes = bind(plan, config, fetcher, targets)
    driver = _Driver(plan, store, engine, recorder, runtimes)
    driver.history_changed()
    for moment, due in schedule(plan, runtimes):
        driver.at(moment, due)
    return _collect(plan, store, driver, targets)


class _Driver:
    """The replay's loop: the clock, the version record, and each moment's rules through the engine."""

    def __init__(
        self,
        plan: ReplayPlan,
        store: ReplayStore,
        engine: ReplayEngine,
        recorder: VersionRecorder,
        runtimes: Mapping[str, RuntimeRule],
    ) -> None:
        self.store = store
        self.engine = engine
        self.targets = store.replay_targets
        self.recorder = recorder
        self.dispatcher = RollbackDispatcher(store, self.targets, HOLDER, engine.safety.verify_after)
        self.traces = {rid: RuleTrace(r.rule, rule_step(r.rule, plan)) for rid, r in runtimes.items()}
        self.first_breach: dict[int, datetime] = {}
        self.evaluations = 0
        self.unjudged: dict[str, int] = {}
        # The rules read straight from their history when at rest (see ReplayEngine.pass_at_rest).
        self.readers = {rid: reader for rid, r in runtimes.items() if (reader := _history_reader(r))}
        self.blocked: frozenset[str] = frozenset()
        # When whether a target can be judged changes by time alone: at each automatic rollback in
        # the record (the replay does not take it as given) and one step after (see
        # ReplayTargets._decision_pending).
        self.data_changes = sorted(
            moment
            for name in self.targets.names
            for change in self.targets.recorded.target(name).changes
            if change.automatic
            for moment in (change.at, change.at + self.targets.step)
        )

    def history_changed(self) -> None:
        """The version history changed: caches go, and which targets cannot be judged is asked anew
        (it changes only with the history: a recorded change or a would-be rollback)."""
        self.store.forget()
        self.engine.forget()
        self.blocked = frozenset(n for n in self.targets.names if self.targets.counterfactual(n))

    def at(self, moment: datetime, due: Sequence[RuntimeRule]) -> None:
        self.targets.clock.now = moment
        data_changed = bool(self.data_changes) and self.data_changes[0] <= moment
        while self.data_changes and self.data_changes[0] <= moment:
            self.data_changes.pop(0)
        if self.recorder.advance(moment) or data_changed:
            self.history_changed()
        results: list[TickResult] = []
        busy: list[RuntimeRule] = []
        for runtime in due:
            if runtime.rule.target in self.blocked:
                self.unjudged[runtime.id] = self.unjudged.get(runtime.id, 0) + 1
                continue
            reader = self.readers.get(runtime.id)
            rested = None if reader is None else self.engine.pass_at_rest(runtime, reader(moment), moment)
            if rested is None:
                busy.append(runtime)
            else:
                results.append(rested)
        if busy:
            results += self.engine.tick_group(busy, moment)
        self.evaluations += len(results)
        _trace(results, self.traces, self.first_breach, moment)
        if any(result.incident_opened is not None or result.transition.fired for result in results):
            self.dispatcher.run_due(moment)  # as the daemon does right after a tick that opened one
            self.history_changed()


def _history_reader(runtime: RuntimeRule) -> Callable[[datetime], SourceAnswer] | None:
    """How a Prometheus rule over one series reads its answer at a moment from its history (its
    target is judgeable: the driver checked), or None for the rules the engine must measure."""
    source = runtime.source
    if not isinstance(source, PrometheusSource) or is_vector_rule(runtime.rule):
        return None
    batch = source.batch
    if not isinstance(batch, HistoryBatch):
        return None
    keys = batch.keys(source)
    fetcher = batch.fetcher

    def read(moment: datetime) -> SourceAnswer:
        return source.measure_answers([fetcher.answer(key, moment) for key in keys], moment)

    return read


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


def _collect(plan: ReplayPlan, store: Store, driver: _Driver, targets: ReplayTargets) -> ReplayResult:
    incidents = sorted(store.incidents(limit=1_000_000), key=lambda incident: incident.id)
    return ReplayResult(
        window=plan.window,
        incidents=incidents,
        intents=WorkQueue(store).intents(),
        timelines={incident.id: store.timeline(incident.id) for incident in incidents},
        findings=store.findings([incident.id for incident in incidents]),
        traces=driver.traces,
        first_breach=driver.first_breach,
        rollbacks=list(targets.rollbacks),
        history=targets.history,
        evaluations=driver.evaluations,
        unjudged=driver.unjudged,
    )
