"""The safety policy: may a firing rule roll its target back by itself, or must a human decide?

`decide` is pure. Its checks run in one fixed order and the first that applies wins, so the same
inputs always give the same reason:

1. no_data_alert          the episode counted missing data as a breach: never a rollback  -> NOTIFY_ONLY
2. rule_notifies          the rule's action is notify                                      -> NOTIFY_ONLY
3. no_target              the rule names no rollback target                               -> NOTIFY_ONLY
4. no_rollback_version    no known-good or previous version to go back to                 -> NOTIFY_ONLY
5. target_busy            a rollback of this target is under way or being verified        -> NOTIFY_ONLY
6. rule_asks_approval     the rule's action is approve                                     -> ASK_APPROVAL
7. auto_rollback_disabled safety.auto_rollback is false                                    -> ASK_APPROVAL
8. paused                 `watcher pause` is in force                                      -> ASK_APPROVAL
9. cooldown               the target was rolled back less than `cooldown` ago             -> ASK_APPROVAL
10. rate_limited          `max_rollbacks` rollbacks of the target within the period        -> ASK_APPROVAL
otherwise auto_rollback                                                                    -> ROLL_BACK

A safety that stops an automatic rollback turns it into a request for approval, never silence.
A manual rollback (a button press, the CLI) is its own authority and does not come through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from watcher.model import Action


@dataclass(frozen=True)
class SafetyPolicy:
    auto_rollback: bool
    cooldown: timedelta
    max_rollbacks: int
    max_rollbacks_period: timedelta


@dataclass(frozen=True)
class TargetRollbackHistory:
    """What the safety policy needs to know about one target.

    `rollback_times`: past rollbacks of this target that succeeded or are in flight, automatic or
    manual. `paused`/`pause_reason`: the global `watcher pause` switch.
    """

    rollback_times: Sequence[datetime]
    paused: bool
    pause_reason: str | None = None


class DecisionKind(StrEnum):
    ROLL_BACK = "roll_back"
    ASK_APPROVAL = "ask_approval"
    NOTIFY_ONLY = "notify_only"


class DecisionReason(StrEnum):
    AUTO_ROLLBACK = "auto_rollback"
    RULE_ASKS_APPROVAL = "rule_asks_approval"
    RULE_NOTIFIES = "rule_notifies"
    AUTO_ROLLBACK_DISABLED = "auto_rollback_disabled"
    PAUSED = "paused"
    COOLDOWN = "cooldown"
    RATE_LIMITED = "rate_limited"
    NO_TARGET = "no_target"
    NO_ROLLBACK_VERSION = "no_rollback_version"
    NO_DATA_ALERT = "no_data_alert"
    TARGET_BUSY = "target_busy"


@dataclass(frozen=True)
class SafetyDecision:
    kind: DecisionKind
    reason: DecisionReason
    detail: str  # human text for Slack and the audit trail


def decide(
    action: Action,
    has_target: bool,
    rollback_version: str | None,
    fired_on_no_data: bool,
    policy: SafetyPolicy,
    history: TargetRollbackHistory,
    now: datetime,
    *,
    target_busy: bool = False,
) -> SafetyDecision:
    """What to do about a rule that fired (or an incident re-examined), in the order documented above."""
    refusal = _why_not_roll_back(action, has_target, rollback_version, fired_on_no_data)
    if refusal is not None:
        return refusal
    if target_busy:
        # Other rules of the same model still see the bad version's data in their windows while a
        # rollback is being made or verified: that is the same trouble, not a reason to go further back.
        return _notify(DecisionReason.TARGET_BUSY, "a rollback of this target is under way or being verified")
    if action is Action.APPROVE:
        return _ask(
            DecisionReason.RULE_ASKS_APPROVAL,
            f"the rule asks for approval to roll back to {rollback_version}",
        )
    stop = _automatic_rollback_stopped(policy, history, now)
    if stop is not None:
        return stop
    return SafetyDecision(
        DecisionKind.ROLL_BACK, DecisionReason.AUTO_ROLLBACK, f"rolling back to {rollback_version}"
    )


def _why_not_roll_back(
    action: Action, has_target: bool, rollback_version: str | None, fired_on_no_data: bool
) -> SafetyDecision | None:
    """Checks 1-4: the cases where no rollback can be made or proposed at all."""
    if fired_on_no_data:
        return _notify(DecisionReason.NO_DATA_ALERT, "fired on missing data: never a rollback")
    if action is Action.NOTIFY:
        return _notify(DecisionReason.RULE_NOTIFIES, "the rule only notifies")
    if not has_target:
        return _notify(DecisionReason.NO_TARGET, "no rollback target is configured for this model")
    if rollback_version is None:
        return _notify(
            DecisionReason.NO_ROLLBACK_VERSION, "no known-good or previous version to roll back to"
        )
    return None


def _automatic_rollback_stopped(
    policy: SafetyPolicy, history: TargetRollbackHistory, now: datetime
) -> SafetyDecision | None:
    """Checks 7-10: the safeties that turn an automatic rollback into a request for approval."""
    if not policy.auto_rollback:
        return _ask(DecisionReason.AUTO_ROLLBACK_DISABLED, "automatic rollback is off (safety.auto_rollback)")
    if history.paused:
        because = f": {history.pause_reason}" if history.pause_reason else ""
        return _ask(DecisionReason.PAUSED, f"automatic rollbacks are paused{because}")
    last = max(history.rollback_times, default=None)
    if last is not None and now - last < policy.cooldown:
        # A rollback time after `now` (clock skew between replicas) counts as just now.
        ago = max(now - last, timedelta(0))
        return _ask(
            DecisionReason.COOLDOWN,
            f"cooldown: last rollback {format_duration(ago)} ago,"
            f" cooldown {format_duration(policy.cooldown)}",
        )
    recent = rollbacks_within(history.rollback_times, policy.max_rollbacks_period, now)
    if recent >= policy.max_rollbacks:
        return _ask(
            DecisionReason.RATE_LIMITED,
            f"rate limited: {recent} rollbacks in the last {format_duration(policy.max_rollbacks_period)},"
            f" limit {policy.max_rollbacks} per {format_duration(policy.max_rollbacks_period)}",
        )
    return None


def rollbacks_within(rollback_times: Sequence[datetime], period: timedelta, now: datetime) -> int:
    """Rollbacks in the window (now - period, now]; later times (clock skew) count as in it."""
    return sum(1 for at in rollback_times if now - at < period)


def format_duration(duration: timedelta) -> str:
    """Prometheus-style text, whole seconds: 45s, 12m, 1h30m, 1d2h; 0s for zero or less."""
    remaining = max(int(duration.total_seconds()), 0)
    parts: list[str] = []
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, seconds)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _notify(reason: DecisionReason, detail: str) -> SafetyDecision:
    return SafetyDecision(DecisionKind.NOTIFY_ONLY, reason, detail)


def _ask(reason: DecisionReason, detail: str) -> SafetyDecision:
    return SafetyDecision(DecisionKind.ASK_APPROVAL, reason, detail)
