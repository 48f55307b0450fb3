"""The rule state machine: one pure step per evaluation, with Prometheus alerting-rule semantics.

A rule is inactive, pending (breaching, `for` not yet over) or firing. Each evaluation classifies a
Measurement into one Outcome and moves the persisted RuleStatus on, returning a Transition with a
typed reason that survives into the audit trail. Nothing here reads the clock or does I/O.

Decisions worth knowing (SPEC.md section 3):

- The `for` clock is wall time since `active_since`, so downtime of the watcher counts toward it,
  as in Prometheus' restored `for` state; a gap since the last evaluation longer than
  `outage_tolerance` restarts a pending rule's clock at `now` (a firing rule stays firing).
- `error` is invisible to the state machine: state, `active_since`, `fired_at`, `last_breach_at`
  and `last_evaluated_at` stay as they were; only the error count and health move. Because
  `last_evaluated_at` is not advanced by errors, a source outage longer than the tolerance
  restarts a pending clock just as a watcher outage does: the breach was not observed meanwhile.
- `no_data` follows the rule's policy. keep: state unchanged, and a pending rule neither fires
  nor resets on it (its clock keeps running; it fires on the next breach once `for` is over).
  resolve: treated like ok. alert: treated like a breach, and the episode is flagged
  `fired_on_no_data` so that no rollback is ever made for it.
- A clock that went backwards (now earlier than the last evaluation) makes no state progress on
  that evaluation and never fires; `last_evaluated_at` keeps the latest time seen, so the rule
  resumes once the clock has caught up. Health counting still happens.
- A Value whose number is NaN, or with fewer samples than `min_samples` (or none known when
  `min_samples` is set), counts as no_data. Infinities are values (Prometheus returns +Inf).
- Versions (see attribution): an episode counts against the version live when it began. When
  another version goes live the episode ends there (VERSION_CHANGED): pending time never carries
  across a version change. While the rule's window still spans the change it is settling: a
  breach is no evidence against the version now live, so it neither starts nor advances an
  episode (SETTLING); an ok evaluation counts as usual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum, StrEnum

from watcher.decisions.attribution import Attribution
from watcher.model import Measurement, NoData, NoDataPolicy, Outcome, RuleState, SourceError, Value

UNHEALTHY_AFTER = 4  # consecutive errors before a rule is reported unhealthy (once)
DEFAULT_OUTAGE_TOLERANCE = timedelta(hours=1)  # Prometheus' rules.alert.for-outage-tolerance


@dataclass(frozen=True)
class RulePolicy:
    """What one rule asks of the state machine; built by the engine from a validated Rule."""

    for_: timedelta
    keep_firing_for: timedelta
    on_no_data: NoDataPolicy
    above: float | None
    below: float | None
    min_samples: float | None = None
    outage_tolerance: timedelta = DEFAULT_OUTAGE_TOLERANCE

    def breaches(self, value: float) -> bool:
        """Breach when value > above or value < below (NaN never breaches)."""
        over = self.above is not None and value > self.above
        under = self.below is not None and value < self.below
        return over or under


@dataclass(frozen=True)
class RuleStatus:
    """What is persisted per rule between evaluations (and across restarts).

    `active_since` starts the current breach episode (pending or firing); `fired_at` is when it
    fired; `last_breach_at` the last evaluation counted as a breach (drives keep_firing_for).
    `last_evaluated_at` is the latest evaluation that reached the state machine (errors do not);
    `last_outcome` and `last_value` describe the latest evaluation of any kind.
    `fired_on_no_data` is set while an episode has counted a no-data evaluation as a breach (on
    the way to firing or at it); it is cleared when the rule goes back to inactive.
    """

    state: RuleState = RuleState.INACTIVE
    active_since: datetime | None = None
    fired_at: datetime | None = None
    last_breach_at: datetime | None = None
    last_evaluated_at: datetime | None = None
    last_outcome: Outcome | None = None
    last_value: float | None = None
    consecutive_errors: int = 0
    unhealthy: bool = False
    fired_on_no_data: bool = False
    version: str | None = None  # the version the current episode counts against (None: inactive)
    settling: bool = False  # the last evaluation's window spanned a version change


class TransitionReason(StrEnum):
    STAYED_INACTIVE = "stayed_inactive"  # inactive, nothing breaching
    BREACH_STARTED = "breach_started"  # inactive -> pending
    STILL_PENDING = "still_pending"  # pending, `for` not over yet
    FOR_ELAPSED = "for_elapsed"  # pending -> firing
    FIRED_IMMEDIATELY = "fired_immediately"  # for=0: inactive -> firing
    STILL_FIRING = "still_firing"  # firing and breaching
    KEEP_FIRING = "keep_firing"  # recovered, but still inside keep_firing_for
    RECOVERED = "recovered"  # pending/firing -> inactive on an ok evaluation
    NO_DATA_KEPT = "no_data_kept"  # no data, policy keep: state unchanged
    NO_DATA_RESOLVED = "no_data_resolved"  # no data, policy resolve: pending/firing -> inactive
    NO_DATA_ALERT = "no_data_alert"  # no data, policy alert: counted as a breach
    ERROR_IGNORED = "error_ignored"  # the source failed: nothing moves but the error count
    OUTAGE_RESET = "outage_reset"  # pending after a gap over outage_tolerance: `for` restarts now
    CLOCK_WENT_BACK = "clock_went_back"  # now < last evaluation: no state progress
    VERSION_CHANGED = "version_changed"  # another version went live: the episode ends here
    SETTLING = "settling"  # a breach on a window that spans a version change: held against none


@dataclass(frozen=True)
class Transition:
    previous: RuleStatus
    current: RuleStatus
    outcome: Outcome
    reason: TransitionReason
    value: float | None  # the measured number when the outcome is ok or breach, else None

    @property
    def fired(self) -> bool:
        return self.previous.state is not RuleState.FIRING and self.current.state is RuleState.FIRING

    @property
    def resolved(self) -> bool:
        return self.previous.state is RuleState.FIRING and self.current.state is RuleState.INACTIVE

    @property
    def became_unhealthy(self) -> bool:
        """True only on the evaluation that reached UNHEALTHY_AFTER errors in a row."""
        return self.current.unhealthy and not self.previous.unhealthy

    @property
    def became_healthy(self) -> bool:
        return self.previous.unhealthy and not self.current.unhealthy


class _Effect(Enum):
    """What an outcome does to the state, once the no-data policy has been applied."""

    BREACH = "breach"
    RECOVERY = "recovery"
    HOLD = "hold"


@dataclass(frozen=True)
class _Step:
    """The inputs of one state-specific move, gathered once."""

    effect: _Effect
    on_no_data: bool  # this evaluation had no data
    outage: bool  # the gap since the last evaluation exceeds the outage tolerance
    policy: RulePolicy
    now: datetime


def classify(measurement: Measurement, policy: RulePolicy) -> Outcome:
    if isinstance(measurement, SourceError):
        return Outcome.ERROR
    if isinstance(measurement, NoData):
        return Outcome.NO_DATA
    if math.isnan(measurement.value) or not _enough_samples(measurement, policy.min_samples):
        return Outcome.NO_DATA
    return Outcome.BREACH if policy.breaches(measurement.value) else Outcome.OK


def step(
    status: RuleStatus,
    measurement: Measurement,
    policy: RulePolicy,
    now: datetime,
    attribution: Attribution | None = None,
) -> Transition:
    """Move `status` on by one evaluation of `measurement` at `now`.

    `attribution` says which version the evaluation's window speaks for; None: the rule has no
    versioned target and every evaluation counts."""
    outcome = classify(measurement, policy)
    value = measurement.value if isinstance(measurement, Value) and outcome in _MEASURED else None
    if outcome is Outcome.OK and _at_rest(status, now, attribution):
        # Most evaluations: the status only takes the new reading. `step_in_full` gives the same
        # (tests/test_evaluation.py checks it on generated statuses), at three times the cost.
        current = replace(status, last_outcome=outcome, last_value=value, last_evaluated_at=now)
        return Transition(status, current, outcome, TransitionReason.STAYED_INACTIVE, value)
    return step_in_full(status, measurement, policy, now, attribution)


def step_in_full(
    status: RuleStatus,
    measurement: Measurement,
    policy: RulePolicy,
    now: datetime,
    attribution: Attribution | None = None,
) -> Transition:
    """`step` without its shortcut for a rule at rest on an ok evaluation."""
    outcome = classify(measurement, policy)
    value = measurement.value if isinstance(measurement, Value) and outcome in _MEASURED else None
    observed = _with_health(status, outcome, value)
    if outcome is Outcome.ERROR:
        return Transition(status, observed, outcome, TransitionReason.ERROR_IGNORED, value)
    last = status.last_evaluated_at
    if last is not None and now < last:
        return Transition(status, observed, outcome, TransitionReason.CLOCK_WENT_BACK, value)
    observed = replace(
        observed, last_evaluated_at=now, settling=attribution is not None and attribution.settling
    )
    if _version_changed(status, attribution):
        return Transition(status, _inactive(observed), outcome, TransitionReason.VERSION_CHANGED, value)
    effect = _effect_of(outcome, policy.on_no_data)
    if effect is _Effect.BREACH and attribution is not None and attribution.settling:
        held = observed if status.state is RuleState.FIRING else _inactive(observed)
        return Transition(status, held, outcome, TransitionReason.SETTLING, value)
    move = _Step(
        effect=effect,
        on_no_data=outcome is Outcome.NO_DATA,
        outage=last is not None and now - last > policy.outage_tolerance,
        policy=policy,
        now=now,
    )
    current, reason = _advance(observed, move)
    if current.state is not RuleState.INACTIVE and status.state is RuleState.INACTIVE:
        current = replace(current, version=attribution.version if attribution else None)
    return Transition(status, current, outcome, _relabel_no_data(reason, outcome, policy), value)


def _at_rest(status: RuleStatus, now: datetime, attribution: Attribution | None) -> bool:
    """Inactive and healthy, no episode and no settling window, the clock going forward."""
    return (
        status.state is RuleState.INACTIVE
        and status.consecutive_errors == 0
        and not status.unhealthy
        and not status.settling
        and (status.last_evaluated_at is None or now >= status.last_evaluated_at)
        and (attribution is None or not attribution.settling)
    )


def _version_changed(status: RuleStatus, attribution: Attribution | None) -> bool:
    """An episode under way on a version that is no longer live."""
    return (
        status.state is not RuleState.INACTIVE
        and attribution is not None
        and attribution.version is not None
        and status.version is not None
        and status.version != attribution.version
    )


_MEASURED = (Outcome.OK, Outcome.BREACH)


def _enough_samples(value: Value, min_samples: float | None) -> bool:
    if min_samples is None:
        return True
    samples = value.samples
    # An unknown or NaN sample count cannot prove there were enough observations.
    return samples is not None and not math.isnan(samples) and samples >= min_samples


def _with_health(status: RuleStatus, outcome: Outcome, value: float | None) -> RuleStatus:
    errors = status.consecutive_errors + 1 if outcome is Outcome.ERROR else 0
    return replace(
        status,
        last_outcome=outcome,
        last_value=value,
        consecutive_errors=errors,
        unhealthy=errors >= UNHEALTHY_AFTER,
    )


def _effect_of(outcome: Outcome, on_no_data: NoDataPolicy) -> _Effect:
    if outcome is Outcome.BREACH:
        return _Effect.BREACH
    if outcome is Outcome.OK:
        return _Effect.RECOVERY
    return {
        NoDataPolicy.KEEP: _Effect.HOLD,
        NoDataPolicy.RESOLVE: _Effect.RECOVERY,
        NoDataPolicy.ALERT: _Effect.BREACH,
    }[on_no_data]


def _advance(status: RuleStatus, move: _Step) -> tuple[RuleStatus, TransitionReason]:
    if status.state is RuleState.PENDING:
        return _from_pending(status, move)
    if status.state is RuleState.FIRING:
        return _from_firing(status, move)
    return _from_inactive(status, move)


def _from_inactive(status: RuleStatus, move: _Step) -> tuple[RuleStatus, TransitionReason]:
    if move.effect is _Effect.HOLD:
        return status, TransitionReason.NO_DATA_KEPT
    if move.effect is _Effect.RECOVERY:
        return status, TransitionReason.STAYED_INACTIVE
    started = replace(
        status,
        state=RuleState.PENDING,
        active_since=move.now,
        last_breach_at=move.now,
        fired_on_no_data=move.on_no_data,
    )
    if move.policy.for_ <= timedelta(0):
        return _fire(started, move.now), TransitionReason.FIRED_IMMEDIATELY
    return started, TransitionReason.BREACH_STARTED


def _from_pending(status: RuleStatus, move: _Step) -> tuple[RuleStatus, TransitionReason]:
    if move.effect is _Effect.RECOVERY:
        return _inactive(status), TransitionReason.RECOVERED
    if move.effect is _Effect.HOLD:
        if move.outage:
            # Nothing breaching was seen in the new clock: the episode's no-data flag restarts too.
            restarted = replace(status, active_since=move.now, fired_on_no_data=False)
            return restarted, TransitionReason.OUTAGE_RESET
        return status, TransitionReason.NO_DATA_KEPT
    # A missing active_since would be a corrupt record: restart the clock rather than fire.
    since = move.now if move.outage or status.active_since is None else status.active_since
    flagged = move.on_no_data if move.outage else status.fired_on_no_data or move.on_no_data
    breaching = replace(status, active_since=since, last_breach_at=move.now, fired_on_no_data=flagged)
    if move.now - since >= move.policy.for_:
        return _fire(breaching, move.now), TransitionReason.FOR_ELAPSED
    return breaching, TransitionReason.OUTAGE_RESET if move.outage else TransitionReason.STILL_PENDING


def _from_firing(status: RuleStatus, move: _Step) -> tuple[RuleStatus, TransitionReason]:
    if move.effect is _Effect.BREACH:
        # fired_on_no_data describes how the episode fired; later evaluations do not change it.
        return replace(status, last_breach_at=move.now), TransitionReason.STILL_FIRING
    if move.effect is _Effect.HOLD:
        return status, TransitionReason.NO_DATA_KEPT
    last_breach = status.last_breach_at or status.fired_at or move.now
    if move.now - last_breach < move.policy.keep_firing_for:
        return status, TransitionReason.KEEP_FIRING
    return _inactive(status), TransitionReason.RECOVERED


def _fire(status: RuleStatus, now: datetime) -> RuleStatus:
    return replace(status, state=RuleState.FIRING, fired_at=now)


def _inactive(status: RuleStatus) -> RuleStatus:
    # last_breach_at is kept: it stays true as history and nothing inactive reads it.
    return replace(
        status,
        state=RuleState.INACTIVE,
        active_since=None,
        fired_at=None,
        fired_on_no_data=False,
        version=None,
    )


def _relabel_no_data(reason: TransitionReason, outcome: Outcome, policy: RulePolicy) -> TransitionReason:
    """Name no-data evaluations as such, keeping the reasons that say more (reset, keep firing)."""
    if outcome is not Outcome.NO_DATA:
        return reason
    if policy.on_no_data is NoDataPolicy.ALERT and reason in _BREACH_REASONS:
        return TransitionReason.NO_DATA_ALERT
    if policy.on_no_data is NoDataPolicy.RESOLVE and reason is TransitionReason.RECOVERED:
        return TransitionReason.NO_DATA_RESOLVED
    return reason


_BREACH_REASONS = frozenset(
    {
        TransitionReason.BREACH_STARTED,
        TransitionReason.STILL_PENDING,
        TransitionReason.FOR_ELAPSED,
        TransitionReason.FIRED_IMMEDIATELY,
        TransitionReason.STILL_FIRING,
    }
)
