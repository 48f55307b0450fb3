"""Typed rows the repository hands out: nothing outside the store sees a SQLAlchemy Row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from watcher.model import IncidentStatus, RollbackStatus


class IntentPurpose(StrEnum):
    ROLLBACK = "rollback"  # decided by watcher (or approved by a press) for an incident
    UNDO = "undo"  # back to the version a rollback moved away from
    MANUAL = "manual"  # `watcher rollback` from the command line


class MessageStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class MessageKind(StrEnum):
    INCIDENT = "incident"  # post or update the incident's one message (rendered at delivery)
    THREAD = "thread"  # a reply in the incident message's thread
    EPHEMERAL = "ephemeral"  # a short answer to one user
    NOTICE = "notice"  # a channel message not tied to an incident


@dataclass(frozen=True)
class AuditEvent:
    at: datetime
    actor: str
    kind: str
    incident_id: int | None = None
    rule_id: str | None = None
    rule_hash: str | None = None
    target: str | None = None
    from_version: str | None = None
    to_version: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True)
class IncidentRecord:
    id: int
    rule_id: str
    rule_hash: str
    model: str
    target: str | None
    signal: str
    severity: str
    action: str
    status: IncidentStatus
    summary: str
    opened_at: datetime
    resolved_at: datetime | None
    live_version: str | None
    evidence: dict[str, Any]
    decision_reason: str | None
    decision_detail: str | None
    rollback_from: str | None
    rollback_to: str | None
    rollback_status: RollbackStatus | None
    verify_due_at: datetime | None
    verify_attempts: int
    acknowledged_by: str | None
    silenced_until: datetime | None
    undone_by: str | None
    slack_channel: str | None
    slack_ts: str | None


@dataclass(frozen=True)
class RollbackIntent:
    id: int
    key: str
    incident_id: int | None
    target: str
    purpose: IntentPurpose
    from_version: str
    to_version: str
    requested_by: str
    reason: str
    status: RollbackStatus
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    result_detail: str | None
    fence: int = 0  # the fencing token of the claim this copy was read under
    finished_at: datetime | None = None


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    incident_id: int | None
    kind: MessageKind
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    fence: int = 0  # the fencing token of the claim this copy was read under


@dataclass(frozen=True)
class PauseState:
    paused: bool
    reason: str | None = None
    by: str | None = None
    at: datetime | None = None
