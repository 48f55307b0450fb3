"""The intent-named repository over the watcher database.

Writes happen through a `Tx` (one transaction); the engine opens one per tick and makes no
network call while it is open. Audit events can only be appended: there is no method that
updates or deletes one, and the migrations add triggers that refuse it in the database too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection, Engine, RowMapping

from watcher.decisions.evaluation import RuleStatus
from watcher.decisions.known_good import VersionSighting
from watcher.model import IncidentStatus, Outcome, RollbackStatus, RuleState
from watcher.store import tables as t
from watcher.store.findings import FindingRecord, FindingWrites, incident_findings
from watcher.store.firing import PAUSE_CONTROL, FiringFacts, read_firing_facts
from watcher.store.queue_writes import QueueWrites
from watcher.store.records import AuditEvent, IncidentRecord, PauseState

_RULE_STATE_FIELDS = [c.name for c in t.rule_states.columns if c.name != "rule_id"]
_UPDATE_RULE_STATE = (
    update(t.rule_states)
    .where(t.rule_states.c.rule_id == bindparam("key"))
    .values({name: bindparam(name) for name in _RULE_STATE_FIELDS})
)


@dataclass(frozen=True)
class StoredRuleState:
    status: RuleStatus
    state_hash: str
    content_hash: str


@dataclass(frozen=True)
class NewIncident:
    rule_id: str
    rule_hash: str
    model: str
    target: str | None
    signal: str
    severity: str
    action: str
    summary: str
    opened_at: datetime
    live_version: str | None
    evidence: dict[str, Any]


def _status_from_row(row: RowMapping) -> RuleStatus:
    return RuleStatus(
        state=RuleState(row["state"]),
        active_since=row["active_since"],
        fired_at=row["fired_at"],
        last_breach_at=row["last_breach_at"],
        last_evaluated_at=row["last_evaluated_at"],
        last_outcome=Outcome(row["last_outcome"]) if row["last_outcome"] else None,
        last_value=row["last_value"],
        consecutive_errors=row["consecutive_errors"],
        unhealthy=row["unhealthy"],
        fired_on_no_data=row["fired_on_no_data"],
        version=row["version"],
        settling=row["settling"],
    )


def incident_from_row(row: RowMapping) -> IncidentRecord:
    return IncidentRecord(
        id=row["id"],
        rule_id=row["rule_id"],
        rule_hash=row["rule_hash"],
        model=row["model"],
        target=row["target"],
        signal=row["signal"],
        severity=row["severity"],
        action=row["action"],
        status=IncidentStatus(row["status"]),
        summary=row["summary"],
        opened_at=row["opened_at"],
        resolved_at=row["resolved_at"],
        live_version=row["live_version"],
        evidence=dict(row["evidence"] or {}),
        decision_reason=row["decision_reason"],
        decision_detail=row["decision_detail"],
        rollback_from=row["rollback_from"],
        rollback_to=row["rollback_to"],
        rollback_status=RollbackStatus(row["rollback_status"]) if row["rollback_status"] else None,
        verify_due_at=row["verify_due_at"],
        verify_attempts=row["verify_attempts"],
        acknowledged_by=row["acknowledged_by"],
        silenced_until=row["silenced_until"],
        undone_by=row["undone_by"],
        slack_channel=row["slack_channel"],
        slack_ts=row["slack_ts"],
    )


def audit_from_row(row: RowMapping) -> AuditEvent:
    return AuditEvent(
        id=row["id"],
        at=row["at"],
        actor=row["actor"],
        kind=row["kind"],
        incident_id=row["incident_id"],
        rule_id=row["rule_id"],
        rule_hash=row["rule_hash"],
        target=row["target"],
        from_version=row["from_version"],
        to_version=row["to_version"],
        detail=dict(row["detail"] or {}),
    )


class Tx(FindingWrites, QueueWrites):
    """Writes inside one open transaction."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    # --- audit -------------------------------------------------------------------------------
    def append_audit(self, event: AuditEvent) -> int:
        result = self.connection.execute(
            insert(t.audit_events).values(
                at=event.at,
                actor=event.actor,
                kind=event.kind,
                incident_id=event.incident_id,
                rule_id=event.rule_id,
                rule_hash=event.rule_hash,
                target=event.target,
                from_version=event.from_version,
                to_version=event.to_version,
                detail=event.detail,
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    # --- rule state --------------------------------------------------------------------------
    def save_rule_status(
        self, rule_id: str, state_hash: str, content_hash: str, status: RuleStatus, now: datetime
    ) -> None:
        values = {
            "state_hash": state_hash,
            "content_hash": content_hash,
            "state": status.state.value,
            "active_since": status.active_since,
            "fired_at": status.fired_at,
            "last_breach_at": status.last_breach_at,
            "last_evaluated_at": status.last_evaluated_at,
            "last_outcome": status.last_outcome.value if status.last_outcome else None,
            "last_value": status.last_value,
            "consecutive_errors": status.consecutive_errors,
            "unhealthy": status.unhealthy,
            "fired_on_no_data": status.fired_on_no_data,
            "updated_at": now,
            "version": status.version,
            "settling": status.settling,
        }
        # One statement built once with bind parameters: this runs on every tick of every rule.
        changed = self.connection.execute(_UPDATE_RULE_STATE, {"key": rule_id, **values}).rowcount
        if not changed:
            self.connection.execute(insert(t.rule_states).values(rule_id=rule_id, **values))

    # --- incidents ---------------------------------------------------------------------------
    def open_incident(self, new: NewIncident) -> int:
        result = self.connection.execute(
            insert(t.incidents).values(
                rule_id=new.rule_id,
                rule_hash=new.rule_hash,
                model=new.model,
                target=new.target,
                signal=new.signal,
                severity=new.severity,
                action=new.action,
                status=IncidentStatus.OPEN.value,
                summary=new.summary,
                opened_at=new.opened_at,
                live_version=new.live_version,
                evidence=new.evidence,
                updated_at=new.opened_at,
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def open_incident_for_rule(self, rule_id: str) -> IncidentRecord | None:
        row = (
            self.connection.execute(
                select(t.incidents).where(
                    and_(t.incidents.c.rule_id == rule_id, t.incidents.c.resolved_at.is_(None))
                )
            )
            .mappings()
            .first()
        )
        return incident_from_row(row) if row else None

    def incident(self, incident_id: int) -> IncidentRecord | None:
        row = (
            self.connection.execute(select(t.incidents).where(t.incidents.c.id == incident_id))
            .mappings()
            .first()
        )
        return incident_from_row(row) if row else None

    def update_incident(
        self,
        incident_id: int,
        now: datetime,
        *,
        expect_status: Sequence[IncidentStatus] | None = None,
        **values: Any,
    ) -> bool:
        """Change an incident; with `expect_status`, only if it is still in one of those states."""
        for key, value in list(values.items()):
            if isinstance(value, IncidentStatus | RollbackStatus):
                values[key] = value.value
        statement = update(t.incidents).where(t.incidents.c.id == incident_id)
        if expect_status is not None:
            statement = statement.where(t.incidents.c.status.in_([s.value for s in expect_status]))
        return bool(self.connection.execute(statement.values(updated_at=now, **values)).rowcount)

    # --- known-good tracking -----------------------------------------------------------------
    def record_live_version(self, target: str, version: str, now: datetime) -> None:
        latest = (
            self.connection.execute(
                select(t.version_sightings)
                .where(t.version_sightings.c.target == target)
                .order_by(t.version_sightings.c.id.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        if latest is not None and latest["version"] == version:
            if latest["last_seen"] < now:
                self.connection.execute(
                    update(t.version_sightings)
                    .where(t.version_sightings.c.id == latest["id"])
                    .values(last_seen=now)
                )
            return
        self.connection.execute(
            insert(t.version_sightings).values(
                target=target, version=version, first_seen=now, last_seen=now, had_incident=False
            )
        )

    def mark_incident_on_live_version(self, target: str, version: str) -> None:
        latest_id = self.connection.execute(
            select(func.max(t.version_sightings.c.id)).where(
                and_(t.version_sightings.c.target == target, t.version_sightings.c.version == version)
            )
        ).scalar()
        if latest_id is not None:
            self.connection.execute(
                update(t.version_sightings)
                .where(t.version_sightings.c.id == latest_id)
                .values(had_incident=True)
            )

    # --- controls ----------------------------------------------------------------------------
    def set_pause(self, paused: bool, reason: str | None, by: str, now: datetime) -> None:
        value = {"paused": paused, "reason": reason}
        changed = self.connection.execute(
            update(t.controls)
            .where(t.controls.c.name == PAUSE_CONTROL)
            .values(value=value, updated_by=by, updated_at=now)
        ).rowcount
        if not changed:
            self.connection.execute(
                insert(t.controls).values(name=PAUSE_CONTROL, value=value, updated_by=by, updated_at=now)
            )


class Store:
    """Reads, and the door to write transactions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.engine.begin() as connection:
            yield Tx(connection)

    def ping(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(select(1))
            return True
        except Exception:  # any failure to reach the database means "not ready"
            return False

    def rule_states(self) -> dict[str, StoredRuleState]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(t.rule_states)).mappings().all()
        return {
            row["rule_id"]: StoredRuleState(_status_from_row(row), row["state_hash"], row["content_hash"])
            for row in rows
        }

    def incidents(self, *, open_only: bool = False, limit: int = 500) -> list[IncidentRecord]:
        statement = select(t.incidents).order_by(t.incidents.c.id.desc()).limit(limit)
        if open_only:
            statement = statement.where(t.incidents.c.resolved_at.is_(None))
        with self.engine.connect() as connection:
            return [incident_from_row(row) for row in connection.execute(statement).mappings()]

    def incident(self, incident_id: int) -> IncidentRecord | None:
        with self.engine.connect() as connection:
            return Tx(connection).incident(incident_id)

    def count_open_incidents(self) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    select(func.count()).select_from(t.incidents).where(t.incidents.c.resolved_at.is_(None))
                ).scalar_one()
            )

    def firing_facts(self, target: str | None, since: datetime) -> FiringFacts:
        """What a firing decision needs to know of the store, in one read (see store.firing)."""
        with self.engine.connect() as connection:
            return read_firing_facts(connection, target, since)

    def rules_in_open_incidents(self) -> set[str]:
        """Every rule that is a finding of an open incident."""
        f, i = t.incident_findings.c, t.incidents.c
        statement = (
            select(f.rule_id)
            .select_from(t.incident_findings.join(t.incidents, f.incident_id == i.id))
            .where(i.resolved_at.is_(None))
        )
        with self.engine.connect() as connection:
            return {row[0] for row in connection.execute(statement)}

    def findings(self, incident_ids: Sequence[int]) -> dict[int, list[FindingRecord]]:
        """The findings of each incident, the opening rule first."""
        with self.engine.connect() as connection:
            return incident_findings(connection, incident_ids)

    def timeline(self, incident_id: int) -> list[AuditEvent]:
        statement = (
            select(t.audit_events)
            .where(t.audit_events.c.incident_id == incident_id)
            .order_by(t.audit_events.c.id)
        )
        with self.engine.connect() as connection:
            return [audit_from_row(row) for row in connection.execute(statement).mappings()]

    def audit_events(self, *, limit: int = 1000) -> list[AuditEvent]:
        statement = select(t.audit_events).order_by(t.audit_events.c.id).limit(limit)
        with self.engine.connect() as connection:
            return [audit_from_row(row) for row in connection.execute(statement).mappings()]

    def sightings(self, target: str) -> list[VersionSighting]:
        statement = (
            select(t.version_sightings)
            .where(t.version_sightings.c.target == target)
            .order_by(t.version_sightings.c.id)
        )
        with self.engine.connect() as connection:
            return [
                VersionSighting(
                    version=row["version"],
                    first_seen=row["first_seen"],
                    last_seen=row["last_seen"],
                    had_incident=row["had_incident"],
                )
                for row in connection.execute(statement).mappings()
            ]

    def pause_state(self) -> PauseState:
        with self.engine.connect() as connection:
            row = (
                connection.execute(select(t.controls).where(t.controls.c.name == PAUSE_CONTROL))
                .mappings()
                .first()
            )
        if row is None:
            return PauseState(paused=False)
        value = row["value"] or {}
        return PauseState(
            paused=bool(value.get("paused")),
            reason=value.get("reason"),
            by=row["updated_by"],
            at=row["updated_at"],
        )
