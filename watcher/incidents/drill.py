"""A rollback drill: back to the known-good version and forward again, verifying both.

Meant for staging targets. Every step is timed, printed and audited; whatever fails, the drill
tries to leave the target on the version it found.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from watcher.decisions.known_good import choose_rollback_version
from watcher.remediations.base import AdapterFailure, LiveVersion, RemediationAdapter, RollbackResult
from watcher.store.records import AuditEvent
from watcher.store.repository import Store
from watcher.targets import TargetRegistry


@dataclass
class DrillStep:
    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class DrillReport:
    target: str
    steps: list[DrillStep] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)


def _timed(
    report: DrillReport, name: str, action: Callable[[], tuple[bool, str]], emit: Callable[[DrillStep], None]
) -> bool:
    started = time.perf_counter()
    try:
        ok, detail = action()
    except Exception as error:  # a drill reports every failure as a step, never a traceback
        ok, detail = False, f"{type(error).__name__}: {error}"
    step = DrillStep(name, ok, detail, time.perf_counter() - started)
    report.steps.append(step)
    emit(step)
    return ok


def _move(adapter: RemediationAdapter, key: str, from_version: str, to_version: str) -> tuple[bool, str]:
    outcome = adapter.rollback(intent_key=key, from_version=from_version, to_version=to_version)
    ok = outcome.result in (RollbackResult.DONE, RollbackResult.ALREADY_DONE)
    message = outcome.failure.message if outcome.failure else outcome.detail
    return ok, f"{from_version} -> {to_version}: {outcome.result.value} {message}".strip()


def _verify(adapter: RemediationAdapter, version: str) -> tuple[bool, str]:
    outcome = adapter.verify(version)
    detail = outcome.failure.message if outcome.failure else outcome.detail
    return outcome.ok, f"serves {version}: {detail}".strip()


@dataclass(frozen=True)
class _Plan:
    original: str  # the live version found, where the drill comes back to
    back_to: str
    why: str  # which kind of version `back_to` is (known-good, previous)


@dataclass(frozen=True)
class _NoPlan:
    step: str
    detail: str


def run_drill(
    store: Store,
    targets: TargetRegistry,
    target: str,
    actor: str,
    stable_after: timedelta,
    now: datetime,
    emit: Callable[[DrillStep], None],
) -> DrillReport:
    report = DrillReport(target)
    adapter = targets.adapter(target)
    plan = _plan(store, targets, adapter, target, stable_after, now)
    if isinstance(plan, _NoPlan):
        failed = plan
        _timed(report, failed.step, lambda: (False, failed.detail), emit)
        return report
    drill_id = uuid.uuid4().hex[:12]
    _audit(store, actor, "drill_started", target, plan.original, plan.back_to, now, drill=drill_id)
    _there_and_back(report, adapter, plan, drill_id, emit)
    _audit(
        store,
        actor,
        "drill_finished",
        target,
        plan.original,
        plan.back_to,
        now,
        drill=drill_id,
        ok=report.ok,
        steps=[{"step": s.name, "ok": s.ok, "seconds": round(s.seconds, 3)} for s in report.steps],
    )
    return report


def _plan(
    store: Store,
    targets: TargetRegistry,
    adapter: RemediationAdapter,
    target: str,
    stable_after: timedelta,
    now: datetime,
) -> _Plan | _NoPlan:
    live_answer = adapter.live_version()
    if isinstance(live_answer, AdapterFailure):
        return _NoPlan("read live version", live_answer.message)
    assert isinstance(live_answer, LiveVersion)
    choice = choose_rollback_version(
        live=live_answer.version,
        sightings=store.sightings(target),
        adapter_previous=targets.previous_version(target),
        stable_after=stable_after,
        now=now,
    )
    if choice.version is None:
        return _NoPlan("choose rollback version", "no known-good or previous version")
    return _Plan(live_answer.version, choice.version, choice.reason.value)


def _there_and_back(
    report: DrillReport,
    adapter: RemediationAdapter,
    plan: _Plan,
    drill_id: str,
    emit: Callable[[DrillStep], None],
) -> None:
    original, back_to = plan.original, plan.back_to

    def preflight() -> tuple[bool, str]:
        result = adapter.preflight(back_to)
        return result.ok, "; ".join(result.problems) or f"ok ({plan.why} version {back_to})"

    if not _timed(report, "preflight", preflight, emit):
        return
    moved = _timed(
        report, "roll back", lambda: _move(adapter, f"drill-{drill_id}-back", original, back_to), emit
    )
    if moved:
        _timed(report, "verify rollback", lambda: _verify(adapter, back_to), emit)
        _timed(
            report, "roll forward", lambda: _move(adapter, f"drill-{drill_id}-fwd", back_to, original), emit
        )
        _timed(report, "verify roll forward", lambda: _verify(adapter, original), emit)
    _restore_if_needed(report, adapter, original, drill_id, emit)


def _restore_if_needed(
    report: DrillReport,
    adapter: RemediationAdapter,
    original: str,
    drill_id: str,
    emit: Callable[[DrillStep], None],
) -> None:
    live = adapter.live_version()
    if isinstance(live, LiveVersion) and live.version != original:
        current = live.version
        _timed(
            report,
            "restore original version",
            lambda: _move(adapter, f"drill-{drill_id}-restore", current, original),
            emit,
        )


def _audit(
    store: Store,
    actor: str,
    kind: str,
    target: str,
    original: str,
    back_to: str,
    now: datetime,
    **detail: object,
) -> None:
    with store.transaction() as tx:
        tx.append_audit(
            AuditEvent(
                at=now,
                actor=actor,
                kind=kind,
                target=target,
                from_version=original,
                to_version=back_to,
                detail=dict(detail),
            )
        )
