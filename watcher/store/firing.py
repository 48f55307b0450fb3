"""The one read a firing decision needs: pause, recent rollbacks and whether the target is busy.

Read on one connection, so the engine asks the store once per firing instead of once per fact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from watcher.model import IncidentStatus, RollbackStatus
from watcher.store import tables as t

_ACTIVE = (RollbackStatus.PENDING.value, RollbackStatus.RUNNING.value)
_BUSY = (IncidentStatus.ROLLING_BACK.value, IncidentStatus.VERIFYING.value)
PAUSE_CONTROL = "auto_rollback_pause"


@dataclass(frozen=True)
class FiringFacts:
    paused: bool
    pause_reason: str | None
    rollback_times: tuple[datetime, ...]  # rollbacks of the target asked for since the period began
    target_busy: bool  # a rollback of the target is under way or being verified


def read_firing_facts(connection: Connection, target: str | None, since: datetime) -> FiringFacts:
    pause = connection.execute(select(t.controls.c.value).where(t.controls.c.name == PAUSE_CONTROL)).scalar()
    paused = bool((pause or {}).get("paused"))
    reason = (pause or {}).get("reason") if paused else None
    if target is None:
        return FiringFacts(paused, reason, (), False)
    intents = t.rollback_intents.c
    times = connection.execute(
        select(intents.created_at).where(
            intents.target == target,
            intents.created_at >= since,
            intents.status.in_([*_ACTIVE, RollbackStatus.SUCCEEDED.value]),
        )
    ).scalars()
    active = connection.execute(
        select(intents.id).where(intents.target == target, intents.status.in_(_ACTIVE)).limit(1)
    ).first()
    incidents = t.incidents.c
    busy = connection.execute(
        select(incidents.id)
        .where(and_(incidents.target == target, incidents.resolved_at.is_(None), incidents.status.in_(_BUSY)))
        .limit(1)
    ).first()
    return FiringFacts(paused, reason, tuple(times), active is not None or busy is not None)
