"""The store's side of incidents per target and version: findings, and finding the incident.

`FindingWrites` is mixed into the transaction (`Tx`), so these are methods of the store's one door;
they live here to keep the repository module small. Every method runs inside the caller's
transaction and makes no network call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection, RowMapping

from watcher.model import RollbackStatus
from watcher.store import tables as t


class FindingKind(StrEnum):
    OPENED = "opened"  # the rule that opened the incident
    JOINED = "joined"  # fired on the same target and version while the incident was open
    SETTLING = "settling"  # breached on a window that still held the incident's version


@dataclass(frozen=True)
class FindingRecord:
    incident_id: int
    rule_id: str
    rule_hash: str
    kind: FindingKind
    value: float | None
    peak_value: float | None
    threshold: float
    at: datetime
    last_at: datetime
    active: bool
    verify_outcome: str | None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewFinding:
    incident_id: int
    rule_id: str
    rule_hash: str
    kind: FindingKind
    value: float | None
    threshold: float
    at: datetime
    active: bool
    evidence: dict[str, Any]


def finding_from_row(row: RowMapping) -> FindingRecord:
    return FindingRecord(
        incident_id=row["incident_id"],
        rule_id=row["rule_id"],
        rule_hash=row["rule_hash"],
        kind=FindingKind(row["kind"]),
        value=row["value"],
        peak_value=row["peak_value"],
        threshold=row["threshold"],
        at=row["at"],
        last_at=row["last_at"],
        active=row["active"],
        verify_outcome=row["verify_outcome"],
        evidence=dict(row["evidence"] or {}),
    )


def _peak(old: float | None, new: float | None, above: bool) -> float | None:
    if old is None or new is None:
        return new if old is None else old
    return max(old, new) if above else min(old, new)


class FindingWrites:
    """Findings and the incident lookups that grouping needs (a mixin of Tx)."""

    connection: Connection

    def add_finding(self, new: NewFinding, *, above: bool) -> bool:
        """Record a rule's finding; True when it is new to the incident. An existing one is brought
        up to date (last time, value, peak, active) instead: one row per rule and incident."""
        existing = self.finding(new.incident_id, new.rule_id)
        if existing is None:
            self.connection.execute(
                insert(t.incident_findings).values(
                    incident_id=new.incident_id,
                    rule_id=new.rule_id,
                    rule_hash=new.rule_hash,
                    kind=new.kind.value,
                    value=new.value,
                    peak_value=new.value,
                    threshold=new.threshold,
                    at=new.at,
                    last_at=new.at,
                    active=new.active,
                    evidence=new.evidence,
                )
            )
            return True
        self.connection.execute(
            update(t.incident_findings)
            .where(self._finding_key(new.incident_id, new.rule_id))
            .values(
                last_at=new.at,
                value=new.value,
                peak_value=_peak(existing.peak_value, new.value, above),
                active=existing.active or new.active,
            )
        )
        return False

    def finding(self, incident_id: int, rule_id: str) -> FindingRecord | None:
        row = (
            self.connection.execute(
                select(t.incident_findings).where(self._finding_key(incident_id, rule_id))
            )
            .mappings()
            .first()
        )
        return finding_from_row(row) if row else None

    def findings(self, incident_id: int) -> list[FindingRecord]:
        rows = self.connection.execute(
            select(t.incident_findings)
            .where(t.incident_findings.c.incident_id == incident_id)
            .order_by(t.incident_findings.c.id)
        ).mappings()
        return [finding_from_row(row) for row in rows]

    def set_finding_active(self, incident_id: int, rule_id: str, active: bool, now: datetime) -> None:
        self.connection.execute(
            update(t.incident_findings)
            .where(self._finding_key(incident_id, rule_id))
            .values(active=active, last_at=now)
        )

    def set_finding_verdict(self, incident_id: int, rule_id: str, outcome: str | None) -> None:
        self.connection.execute(
            update(t.incident_findings)
            .where(self._finding_key(incident_id, rule_id))
            .values(verify_outcome=outcome)
        )

    def reset_finding_verdicts(self, incident_id: int) -> None:
        self.connection.execute(
            update(t.incident_findings)
            .where(t.incident_findings.c.incident_id == incident_id)
            .values(verify_outcome=None)
        )

    def open_incident_for_version(self, target: str | None, model: str, version: str | None) -> int | None:
        """The open incident of this target and version (rules with no target: of this model)."""
        c = t.incidents.c
        where: list[Any] = [c.resolved_at.is_(None)]
        if target is None:
            where += [c.target.is_(None), c.model == model]
        else:
            where += [c.target == target]
            where.append(c.live_version.is_(None) if version is None else c.live_version == version)
        return self._newest_incident(where)

    def open_incident_that_went_to(self, target: str, version: str) -> int | None:
        """The open incident whose rollback (or undo) put `version` live: the one a settling rule's
        breaches belong to, since its window still holds the version rolled away from."""
        c = t.incidents.c
        rolled = and_(
            c.rollback_to == version,
            c.rollback_status == RollbackStatus.SUCCEEDED.value,
            c.undone_by.is_(None),
        )
        undone = and_(c.rollback_from == version, c.undone_by.is_not(None))
        return self._newest_incident([c.resolved_at.is_(None), c.target == target, rolled | undone])

    def open_incidents_of_rule(self, rule_id: str) -> list[int]:
        """Open incidents in which the rule is a finding, oldest first."""
        f, i = t.incident_findings.c, t.incidents.c
        rows = self.connection.execute(
            select(i.id)
            .select_from(t.incident_findings.join(t.incidents, f.incident_id == i.id))
            .where(and_(f.rule_id == rule_id, i.resolved_at.is_(None)))
            .order_by(i.id)
        )
        return [int(row[0]) for row in rows]

    def _newest_incident(self, where: Sequence[Any]) -> int | None:
        found = self.connection.execute(
            select(t.incidents.c.id).where(and_(*where)).order_by(t.incidents.c.id.desc()).limit(1)
        ).scalar()
        return int(found) if found is not None else None

    @staticmethod
    def _finding_key(incident_id: int, rule_id: str) -> Any:
        c = t.incident_findings.c
        return and_(c.incident_id == incident_id, c.rule_id == rule_id)


def incident_findings(connection: Connection, incident_ids: Sequence[int]) -> dict[int, list[FindingRecord]]:
    """The findings of several incidents in one read (for listings)."""
    if not incident_ids:
        return {}
    rows = connection.execute(
        select(t.incident_findings)
        .where(t.incident_findings.c.incident_id.in_(list(incident_ids)))
        .order_by(t.incident_findings.c.id)
    ).mappings()
    grouped: dict[int, list[FindingRecord]] = {incident_id: [] for incident_id in incident_ids}
    for row in rows:
        grouped[row["incident_id"]].append(finding_from_row(row))
    return grouped
