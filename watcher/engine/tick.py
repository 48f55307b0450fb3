"""One tick of a rule: measure, step the state machine, persist in one transaction.

Time is passed in (`now`): the daemon's scheduler reads the clock, the engine never does. The
order is fixed: network first (measure, each rule scoped to its target's live version; when the
rule fires, ask the target its live version), then one transaction with no network call inside
it. Every evaluation is attributed first (see decisions.attribution): a breach counts against a
version only when that version was live over the rule's whole window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from watcher.decisions.attribution import Attribution
from watcher.decisions.evaluation import RuleStatus, Transition, TransitionReason, step
from watcher.decisions.known_good import choose_rollback_version
from watcher.decisions.safety import SafetyPolicy, TargetRollbackHistory, decide
from watcher.engine.series import SeriesBook
from watcher.engine.versions import VersionBook
from watcher.incidents import flow as incident_flow
from watcher.incidents import follow as incident_follow
from watcher.model import (
    ErrorKind,
    Measurement,
    NoData,
    Outcome,
    RuleState,
    SeriesValues,
    SourceAnswer,
    SourceError,
)
from watcher.rules.instances import InstanceProblem, is_vector_rule
from watcher.sources.base import QueryScope, measure_together
from watcher.store.queue import WorkQueue
from watcher.store.repository import Store

if TYPE_CHECKING:
    from watcher.engine.bind import RuntimeRule
    from watcher.metrics import Metrics
    from watcher.rules.config import SafetySettings
    from watcher.targets import TargetRegistry

log = logging.getLogger(__name__)

QUIET_WRITE_EVERY = timedelta(minutes=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class QuietWrite:
    """A quiet rule's periodic state write, deferred to be made with its group's."""

    rule_id: str
    state_hash: str
    content_hash: str
    status: RuleStatus


@dataclass(frozen=True)
class TickResult:
    rule_id: str
    measurement: Measurement
    transition: Transition
    incident_opened: int | None
    seconds: float
    attribution: Attribution | None = None

    @property
    def settling(self) -> bool:
        return self.attribution is not None and self.attribution.settling


class Engine:
    def __init__(
        self,
        store: Store,
        targets: TargetRegistry,
        safety: SafetySettings,
        metrics: Metrics | None = None,
        *,
        dry_run: bool = False,
    ) -> None:
        self.store = store
        self.queue = WorkQueue(store)
        self.targets = targets
        self.safety = safety
        self.metrics = metrics
        self.dry_run = dry_run
        self.versions = VersionBook(store)
        self.series = SeriesBook()
        self._statuses: dict[str, RuleStatus] = {}
        self._open_incident_rules: set[str] = set()
        self._persisted_at: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def load_states(self, rules: dict[str, RuntimeRule]) -> None:
        """Restore rule states: a rule keeps its state while its query and threshold are unchanged;
        so do the instances of a rule over many series (their ids start with the rule's)."""
        stored = self.store.rule_states()
        open_rules = self.store.rules_in_open_incidents()
        statuses: dict[str, RuleStatus] = {}
        for rule_id, runtime in rules.items():
            if rule_id in stored and stored[rule_id].state_hash == runtime.rule.state_hash:
                statuses[rule_id] = stored[rule_id].status
            if runtime.rule.prometheus is None:
                continue
            instances = [
                key
                for key, state in stored.items()
                if key.startswith(rule_id + "{") and state.state_hash == runtime.rule.state_hash
            ]
            self.series.restore(runtime, instances)
            statuses.update((key, stored[key].status) for key in instances)
        with self._lock:
            self._open_incident_rules = open_rules
            self._statuses = statuses

    def carry_states(self, rules: dict[str, RuntimeRule], previous: dict[str, RuntimeRule]) -> None:
        """On reload: drop the state of rules that went away or whose query/threshold changed."""
        with self._lock:
            for rule_id in list(self._statuses):
                old = previous.get(rule_id)
                new = rules.get(rule_id)
                parent = rule_id.split("{", 1)[0]  # an instance goes with its rule
                old, new = previous.get(parent), rules.get(parent)
                if new is None or old is None or old.rule.state_hash != new.rule.state_hash:
                    del self._statuses[rule_id]
        self.series.forget_rules(rules)

    def status(self, rule_id: str) -> RuleStatus:
        with self._lock:
            return self._statuses.get(rule_id, RuleStatus())

    def attribution(self, runtime: RuntimeRule, now: datetime) -> Attribution | None:
        """Which version an evaluation of the rule at `now` speaks for (None: no target).

        A target watcher has never seen is asked its live version first, and that first sighting
        is recorded: it counts as live since before watcher looked, so a fresh start has no blind
        spot and an episode begun now is on a known version."""
        target = runtime.rule.target
        if is_vector_rule(runtime.rule):
            return None  # its target is built per series: each instance is attributed on its own
        if target is not None and self.versions.live(target, now) is None:
            live = self.targets.live_version(target)
            if live is not None:
                self._record_new_version(runtime, live, now)
        return self.versions.attribute(target, runtime.lookback, now)

    def tick(self, runtime: RuntimeRule, now: datetime) -> TickResult:
        return self.tick_group([runtime], now)[0]

    def measure_group(
        self, runtimes: Sequence[RuntimeRule], now: datetime
    ) -> tuple[list[SourceAnswer], list[Attribution | None], float]:
        """Measure a group of rules at `now` (Prometheus rules sharing a request), each scoped to
        its target's live version; with the attributions and each rule's share of the time."""
        started = time.perf_counter()
        attributions = [self.attribution(runtime, now) for runtime in runtimes]
        scopes = [scope_of(attribution) for attribution in attributions]
        measurements = measure_together([runtime.source for runtime in runtimes], now, scopes)
        return measurements, attributions, (time.perf_counter() - started) / max(1, len(runtimes))

    def tick_group(self, runtimes: Sequence[RuntimeRule], now: datetime) -> list[TickResult]:
        """One tick of an evaluation group: measure together, settle each rule, write the quiet
        ones' states in one transaction. A rule that fails is logged and left out of the results;
        the others go on (its state in the database is untouched: the next tick is the retry)."""
        try:
            measurements, attributions, share = self.measure_group(runtimes, now)
        except Exception:
            log.exception("measuring %d rules failed", len(runtimes), extra={"event": "tick_failed"})
            return []
        results: list[TickResult] = []
        quiet_writes: list[QuietWrite] = []
        for runtime, answer, attribution in zip(runtimes, measurements, attributions, strict=True):
            try:
                if isinstance(answer, SeriesValues) or is_vector_rule(runtime.rule):
                    results += self.settle_series(runtime, answer, now, share, quiet_writes)
                else:
                    results.append(self.settle(runtime, answer, now, share, quiet_writes, attribution))
            except Exception:
                log.exception(
                    "tick of %s failed", runtime.id, extra={"event": "tick_failed", "rule": runtime.id}
                )
        try:
            self.write_quiet(quiet_writes, now)
        except Exception:  # quiet states are what a restart assumes anyway; the next tick retries
            log.exception("writing quiet rule states failed", extra={"event": "tick_failed"})
        return results

    def settle(
        self,
        runtime: RuntimeRule,
        measurement: Measurement,
        now: datetime,
        measured_seconds: float,
        quiet_writes: list[QuietWrite] | None = None,
        attribution: Attribution | None = None,
    ) -> TickResult:
        """Step the rule's state machine on its measurement and persist what changed.

        With `quiet_writes`, a quiet rule's periodic state write is appended there instead, for
        `write_quiet` to make together with its group's in one transaction."""
        started = time.perf_counter()
        rule = runtime.rule
        if attribution is None:
            attribution = self.attribution(runtime, now)
        previous = self.status(rule.id)
        transition = step(previous, measurement, runtime.policy, now, attribution)
        context = None
        if transition.fired:
            context = self._firing_context(runtime, transition, now)
            live = context.live_version
            if attribution is not None and live is not None and live != attribution.version:
                # The target's version is newer than watcher's record: record it, and judge this
                # evaluation again on it (a window that spans the change speaks for no version).
                attribution = self._record_new_version(runtime, live, now)
                transition = step(previous, measurement, runtime.policy, now, attribution)
                context = context if transition.fired else None
        opened: int | None = None
        if not self.dry_run and self._worth_writing(rule.id, transition, now):
            if quiet_writes is not None and self._quiet(rule.id, transition):
                quiet_writes.append(
                    QuietWrite(rule.id, rule.state_hash, rule.content_hash, transition.current)
                )
            else:
                opened = self._persist(runtime, transition, measurement, context, attribution, now)
                with self._lock:
                    self._persisted_at[rule.id] = now
        with self._lock:
            self._statuses[rule.id] = transition.current
        seconds = measured_seconds + time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.observe_tick(rule.id, transition, seconds)
        self._log(rule.id, measurement, transition)
        return TickResult(rule.id, measurement, transition, opened, seconds, attribution)

    def settle_series(
        self,
        runtime: RuntimeRule,
        answer: SourceAnswer,
        now: datetime,
        share: float,
        quiet_writes: list[QuietWrite] | None = None,
    ) -> list[TickResult]:
        """Settle each instance of a rule over many series on its own series' measurement.

        An error or no data for the whole query reaches every known instance as it is; an
        instance whose series is missing is held, then resolved (see engine.series); one whose
        target is not configured is an error for that instance alone."""
        if not isinstance(answer, SeriesValues):
            return [
                self._settle_instance(i, answer, now, share, quiet_writes) for i in self.series.known(runtime)
            ]
        results: list[TickResult] = []
        seen: set[str] = set()
        for item in answer.series:
            instance = self.series.instance(runtime, item.labels)
            if isinstance(instance, InstanceProblem):
                log.warning(
                    "%s: %s", instance.instance_id, instance.message, extra={"event": "instance_problem"}
                )
                if self.metrics is not None:
                    self.metrics.instance_problem(runtime.rule.id)
                continue
            seen.add(instance.id)
            results.append(self._settle_instance(instance, item.measurement, now, share, quiet_writes))
        for absent in self.series.missing(runtime, seen):
            gone = NoData(
                "its series is gone" if absent.vanished else "its series is missing from the answer"
            )
            results.append(self._settle_instance(absent.runtime, gone, now, share, quiet_writes))
        return results

    def _settle_instance(
        self,
        instance: RuntimeRule,
        measurement: Measurement,
        now: datetime,
        share: float,
        quiet_writes: list[QuietWrite] | None,
    ) -> TickResult:
        target = instance.rule.target
        if target is not None and target not in self.targets.names:
            # Never silently dropped: an error of this instance, logged, counted, shown by eval.
            message = f"target '{target}' is not in watcher.yaml"
            measurement = SourceError(ErrorKind.CONFIG, message, retryable=False)
            return self.settle(instance, measurement, now, share, quiet_writes, None)
        return self.settle(instance, measurement, now, share, quiet_writes, self.attribution(instance, now))

    def _record_new_version(
        self, runtime: RuntimeRule, live: str | None, now: datetime
    ) -> Attribution | None:
        target = runtime.rule.target
        if target is not None and live is not None and not self.dry_run:
            with self.store.transaction() as tx:
                tx.record_live_version(target, live, now)
            self.versions.forget(target)
        return self.versions.attribute(target, runtime.lookback, now, live=live)

    def _firing_context(
        self, runtime: RuntimeRule, transition: Transition, now: datetime
    ) -> incident_flow.FiringContext:
        rule = runtime.rule
        live = self.targets.live_version(rule.target) if rule.target else None
        choice = None
        if rule.target and live is not None:
            choice = choose_rollback_version(
                live=live,
                sightings=self.versions.history(rule.target, now),
                adapter_previous=self.targets.previous_version(rule.target),
                stable_after=self.safety.stable_after,
                now=now,
            )
        facts = self.store.firing_facts(rule.target, now - self.safety.max_rollbacks.period)
        history = TargetRollbackHistory(
            rollback_times=list(facts.rollback_times), paused=facts.paused, pause_reason=facts.pause_reason
        )
        decision = decide(
            target_busy=facts.target_busy,
            action=rule.action,
            has_target=rule.target is not None,
            rollback_version=choice.version if choice else None,
            fired_on_no_data=transition.current.fired_on_no_data,
            policy=self._safety_policy(),
            history=history,
            now=now,
        )
        return incident_flow.FiringContext(live_version=live, choice=choice, decision=decision)

    def _safety_policy(self) -> SafetyPolicy:
        return SafetyPolicy(
            auto_rollback=self.safety.auto_rollback,
            cooldown=self.safety.cooldown,
            max_rollbacks=self.safety.max_rollbacks.count,
            max_rollbacks_period=self.safety.max_rollbacks.period,
        )

    def write_quiet(self, writes: Sequence[QuietWrite], now: datetime) -> None:
        """Write quiet rules' states in one transaction (a group's worth, not one each)."""
        if not writes or self.dry_run:
            return
        with self.store.transaction() as tx:
            for write in writes:
                tx.save_rule_status(write.rule_id, write.state_hash, write.content_hash, write.status, now)
        with self._lock:
            for write in writes:
                self._persisted_at[write.rule_id] = now

    def _quiet(self, rule_id: str, transition: Transition) -> bool:
        """Inactive, still inactive, nothing open, health unchanged, not settling on a breach."""
        previous, current = transition.previous, transition.current
        return (
            previous.state is RuleState.INACTIVE
            and current.state is RuleState.INACTIVE
            and previous.consecutive_errors == current.consecutive_errors
            and previous.unhealthy == current.unhealthy
            and transition.reason is not TransitionReason.SETTLING
            and rule_id not in self._open_incident_rules
        )

    def _worth_writing(self, rule_id: str, transition: Transition, now: datetime) -> bool:
        """A quiet rule is written at most once a minute: its state is the default one a restart
        would assume anyway, and a write per evaluation would be most of the daemon's work."""
        if not self._quiet(rule_id, transition):
            return True
        with self._lock:
            last = self._persisted_at.get(rule_id)
        return last is None or now - last >= QUIET_WRITE_EVERY or now < last

    def _persist(
        self,
        runtime: RuntimeRule,
        transition: Transition,
        measurement: Measurement,
        context: incident_flow.FiringContext | None,
        attribution: Attribution | None,
        now: datetime,
    ) -> int | None:
        rule = runtime.rule
        opened: int | None = None
        joined = False
        with self.store.transaction() as tx:
            tx.save_rule_status(rule.id, rule.state_hash, rule.content_hash, transition.current, now)
            if transition.fired and context is not None:
                opened = incident_flow.fire(tx, rule, transition, measurement, context, now)
                joined = opened is None
            if transition.reason is TransitionReason.SETTLING and attribution is not None:
                joined = (
                    incident_flow.settling_evidence(tx, rule, transition, measurement, attribution, now)
                    is not None
                )
            if transition.became_unhealthy:
                message = measurement.message if isinstance(measurement, SourceError) else "unknown"
                incident_flow.record_unhealthy(tx, rule, message, now)
            # Only this engine opens and resolves incidents, so it knows which rules are in one
            # and spares the lookup for the many rules that stay quiet.
            still_open = (
                incident_follow.follow(tx, rule, transition, attribution, now)
                if opened is not None or joined or rule.id in self._open_incident_rules
                else False
            )
        with self._lock:
            if still_open:
                self._open_incident_rules.add(rule.id)
            else:
                self._open_incident_rules.discard(rule.id)
        return opened

    def _log(self, rule_id: str, measurement: Measurement, transition: Transition) -> None:
        level = logging.INFO if transition.previous.state != transition.current.state else logging.DEBUG
        if transition.outcome is Outcome.ERROR:
            level = logging.WARNING
        log.log(
            level,
            "evaluated %s: %s",
            rule_id,
            transition.outcome.value,
            extra={
                "event": "evaluation",
                "rule": rule_id,
                "outcome": transition.outcome.value,
                "value": transition.value,
                "state_from": transition.previous.state.value,
                "state_to": transition.current.state.value,
                "reason": transition.reason.value,
                "error": measurement.message if isinstance(measurement, SourceError) else None,
            },
        )


def scope_of(attribution: Attribution | None) -> QueryScope:
    """What a source needs of the version: the live one, and since when (to clip its window)."""
    if attribution is None:
        return QueryScope()
    return QueryScope(version=attribution.version, live_since=attribution.live_since)
