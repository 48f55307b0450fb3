"""The store reads of the web pages: one page of the board at a time, never the whole table.

The board costs a page of rows whatever the table's size: counts, then the open incidents and
the resolved ones, each newest first along an index (never a sort of the whole table); filters
on status and target use their indexes. Only the columns the board shows are read: an incident's
evidence can be large and stays in the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, and_, func, select
from sqlalchemy.sql.elements import ColumnElement

from watcher.decisions.known_good import VersionSighting
from watcher.model import IncidentStatus, RollbackStatus
from watcher.store import tables as t
from watcher.store.repository import Store

PER_PAGE = 50
MAX_TARGETS = 500  # the filter's choices; a deployment with more targets types the name


@dataclass(frozen=True)
class BoardQuery:
    status: IncidentStatus | None = None
    target: str | None = None
    page: int = 1
    per_page: int = PER_PAGE


@dataclass(frozen=True)
class BoardRow:
    id: int
    status: IncidentStatus
    model: str
    target: str | None
    version: str | None
    severity: str
    rules: tuple[str, ...]  # the rule that opened it first, then the rules that joined it
    opened_at: datetime
    resolved_at: datetime | None
    rollback_from: str | None
    rollback_to: str | None
    rollback_status: RollbackStatus | None


@dataclass(frozen=True)
class BoardPage:
    rows: tuple[BoardRow, ...]
    total: int
    open_count: int
    query: BoardQuery
    targets: tuple[str, ...]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.per_page))


def findings_table() -> Table | None:
    """The incident_findings table where the schema has one (incidents grouped per version)."""
    return t.metadata.tables.get("incident_findings")


def _count(*where: ColumnElement[bool]) -> Select[Any]:
    return select(func.count()).select_from(t.incidents).where(*where)


def _filters(query: BoardQuery) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if query.status is not None:
        filters.append(t.incidents.c.status == query.status.value)
    if query.target is not None:
        filters.append(t.incidents.c.target == query.target)
    return filters


_BOARD_COLUMNS = [
    t.incidents.c[name]
    for name in (
        "id",
        "status",
        "model",
        "target",
        "live_version",
        "severity",
        "rule_id",
        "opened_at",
        "resolved_at",
        "rollback_from",
        "rollback_to",
        "rollback_status",
    )
]


def read_board(store: Store, query: BoardQuery) -> BoardPage:
    filters = _filters(query)
    is_open, is_closed = t.incidents.c.resolved_at.is_(None), t.incidents.c.resolved_at.is_not(None)
    newest_first = select(*_BOARD_COLUMNS).order_by(t.incidents.c.id.desc())
    offset = (query.page - 1) * query.per_page
    with store.engine.connect() as connection:
        opened = int(connection.execute(_count(is_open, *filters)).scalar_one())
        total = opened + int(connection.execute(_count(is_closed, *filters)).scalar_one())
        # Open incidents first, then the resolved ones; each part newest first and read by
        # index in id order, so a page costs its own rows, not a sort of the whole table.
        rows = (
            list(
                connection.execute(newest_first.where(is_open, *filters).limit(query.per_page).offset(offset))
                .mappings()
                .all()
            )
            if offset < opened
            else []
        )
        if len(rows) < query.per_page:
            closed_offset = max(0, offset - opened)
            statement = newest_first.where(is_closed, *filters).limit(query.per_page - len(rows))
            rows += connection.execute(statement.offset(closed_offset)).mappings().all()
        targets = (
            connection.execute(
                select(t.incidents.c.target)
                .where(t.incidents.c.target.is_not(None))
                .distinct()
                .order_by(t.incidents.c.target)
                .limit(MAX_TARGETS)
            )
            .scalars()
            .all()
        )
        joined = _joined_rules(connection, [row["id"] for row in rows])
    board_rows = tuple(
        BoardRow(
            id=row["id"],
            status=IncidentStatus(row["status"]),
            model=row["model"],
            target=row["target"],
            version=row["live_version"],
            severity=row["severity"],
            rules=(row["rule_id"], *[r for r in joined.get(row["id"], []) if r != row["rule_id"]]),
            opened_at=row["opened_at"],
            resolved_at=row["resolved_at"],
            rollback_from=row["rollback_from"],
            rollback_to=row["rollback_to"],
            rollback_status=RollbackStatus(row["rollback_status"]) if row["rollback_status"] else None,
        )
        for row in rows
    )
    return BoardPage(board_rows, total, opened, query, tuple(str(target) for target in targets))


def _joined_rules(connection: object, incident_ids: Sequence[int]) -> dict[int, list[str]]:
    table = findings_table()
    if table is None or not incident_ids:
        return {}
    from sqlalchemy.engine import Connection

    assert isinstance(connection, Connection)
    statement = (
        select(table.c.incident_id, table.c.rule_id)
        .where(table.c.incident_id.in_(list(incident_ids)))
        .order_by(table.c.incident_id, table.c.at, table.c.id)
    )
    joined: dict[int, list[str]] = {}
    for incident_id, rule_id in connection.execute(statement):
        joined.setdefault(int(incident_id), []).append(str(rule_id))
    return joined


@dataclass(frozen=True)
class FindingView:
    rule_id: str
    kind: str
    value: float | None
    peak_value: float | None
    threshold: float | None
    at: datetime
    active: bool


def read_findings(store: Store, incident_id: int) -> list[FindingView]:
    table = findings_table()
    if table is None:
        return []
    statement = select(table).where(table.c.incident_id == incident_id).order_by(table.c.at, table.c.id)
    with store.engine.connect() as connection:
        return [
            FindingView(
                rule_id=row["rule_id"],
                kind=str(row["kind"]),
                value=row["value"],
                peak_value=row["peak_value"],
                threshold=row["threshold"],
                at=row["at"],
                active=bool(row["active"]),
            )
            for row in connection.execute(statement).mappings()
        ]


def read_sightings(store: Store, target: str, start: datetime, end: datetime) -> list[VersionSighting]:
    """The target's live versions over [start, end], with the one live at `start` first (so a
    change at the window's edge is seen as a change)."""
    vs = t.version_sightings
    window = and_(vs.c.target == target, vs.c.last_seen >= start, vs.c.first_seen <= end)
    statement = select(vs).where(window).order_by(vs.c.id).limit(200)
    with store.engine.connect() as connection:
        rows = connection.execute(statement).mappings().all()
    return [VersionSighting(r["version"], r["first_seen"], r["last_seen"], r["had_incident"]) for r in rows]
