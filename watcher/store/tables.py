"""The database schema: the single source of truth the daemon restarts from.

Kept in SQLAlchemy Core so the Alembic migrations in ``migrations/`` can be checked against it
(autogenerate must find nothing). Times are stored as UTC and always read back timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Naive UTC in the database (SQLite keeps no zone), aware UTC in Python."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store: pass timezone-aware UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # pragma: no cover - SQLite returns datetime through the type
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


rule_states = Table(
    "rule_states",
    metadata,
    Column("rule_id", String(300), primary_key=True),
    Column("state_hash", String(64), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("active_since", UTCDateTime()),
    Column("fired_at", UTCDateTime()),
    Column("last_breach_at", UTCDateTime()),
    Column("last_evaluated_at", UTCDateTime()),
    Column("last_outcome", String(16)),
    Column("last_value", Float),
    Column("consecutive_errors", Integer, nullable=False, server_default=text("0")),
    Column("unhealthy", Boolean, nullable=False, server_default=text("false")),
    Column("fired_on_no_data", Boolean, nullable=False, server_default=text("false")),
    Column("updated_at", UTCDateTime(), nullable=False),
    # The version the current episode counts against: pending time never carries across versions.
    Column("version", String(200)),
    Column("settling", Boolean, nullable=False, server_default=text("false")),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule_id", String(300), nullable=False),
    Column("rule_hash", String(64), nullable=False),
    Column("model", String(200), nullable=False),
    Column("target", String(200)),
    Column("signal", String(32), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("action", String(16), nullable=False),
    Column("status", String(32), nullable=False),
    Column("summary", Text, nullable=False),
    Column("opened_at", UTCDateTime(), nullable=False),
    Column("resolved_at", UTCDateTime()),
    Column("live_version", String(200)),
    Column("evidence", JSON, nullable=False),
    Column("decision_reason", String(64)),
    Column("decision_detail", Text),
    Column("rollback_from", String(200)),
    Column("rollback_to", String(200)),
    Column("rollback_status", String(16)),
    Column("verify_due_at", UTCDateTime()),
    Column("verify_attempts", Integer, nullable=False, server_default=text("0")),
    Column("acknowledged_by", String(100)),
    Column("silenced_until", UTCDateTime()),
    Column("undone_by", String(100)),
    Column("slack_channel", String(100)),
    Column("slack_ts", String(40)),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_incidents_status", "status"),
    # An incident is one version of one target: the engine finds the open one by both.
    Index("ix_incidents_target_version", "target", "live_version"),
)

# The rules of an incident: the one that opened it, those that fired on the same target and
# version while it was open, and those whose settling windows still held its version. `active`
# is true while the rule's episode on this version goes on; the incident resolves when none is.
incident_findings = Table(
    "incident_findings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("incident_id", Integer, ForeignKey("incidents.id"), nullable=False),
    Column("rule_id", String(300), nullable=False),
    Column("rule_hash", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # opened | joined | settling
    Column("value", Float),
    Column("peak_value", Float),
    Column("threshold", Float, nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("last_at", UTCDateTime(), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("verify_outcome", String(16)),
    Column("evidence", JSON, nullable=False),
    Index("uq_incident_findings_rule", "incident_id", "rule_id", unique=True),
    Index("ix_incident_findings_rule_active", "rule_id", "active"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("incident_id", Integer, ForeignKey("incidents.id")),
    Column("rule_id", String(300)),
    Column("rule_hash", String(64)),
    Column("target", String(200)),
    Column("from_version", String(200)),
    Column("to_version", String(200)),
    Column("detail", JSON, nullable=False),
    Index("ix_audit_events_incident_id", "incident_id"),
)

rollback_intents = Table(
    "rollback_intents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("incident_id", Integer, ForeignKey("incidents.id")),
    Column("target", String(200), nullable=False),
    Column("purpose", String(16), nullable=False),  # rollback | undo | manual
    Column("from_version", String(200), nullable=False),
    Column("to_version", String(200), nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("claimed_by", String(100)),
    Column("claimed_until", UTCDateTime()),
    # The fencing token of the current claim: raised by every new claim, checked by every write.
    Column("fence", Integer, nullable=False, server_default=text("0")),
    Column("result_detail", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Index("ix_rollback_intents_status", "status"),
)

outbox_messages = Table(
    "outbox_messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("incident_id", Integer, ForeignKey("incidents.id")),
    Column("kind", String(32), nullable=False),  # incident | thread | ephemeral | notice
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # pending | sent | failed
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("claimed_by", String(100)),
    Column("claimed_until", UTCDateTime()),
    Column("fence", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime()),
    Index("ix_outbox_messages_status", "status"),
)

version_sightings = Table(
    "version_sightings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("target", String(200), nullable=False),
    Column("version", String(200), nullable=False),
    Column("first_seen", UTCDateTime(), nullable=False),
    Column("last_seen", UTCDateTime(), nullable=False),
    Column("had_incident", Boolean, nullable=False, server_default=text("false")),
    Index("ix_version_sightings_target", "target"),
)

controls = Table(
    "controls",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_by", String(200), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

slack_presses = Table(
    "slack_presses",
    metadata,
    Column("dedup_key", String(128), primary_key=True),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("incident_id", Integer),
    Column("action", String(32), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("result", String(64), nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("fence", Integer, nullable=False, server_default=text("0")),
)

# One lease per evaluation group: the replicas share the groups through these rows, each claimed
# with SELECT ... FOR UPDATE SKIP LOCKED; `fence` grows with each new holder.
group_leases = Table(
    "group_leases",
    metadata,
    Column("key", String(1000), primary_key=True),
    Column("holder", String(200)),
    Column("fence", Integer, nullable=False, server_default=text("0")),
    Column("expires_at", UTCDateTime(), nullable=False),
)

# Live replicas, each renewing its row: how many there are sets every replica's fair share.
replicas = Table(
    "replicas",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)
