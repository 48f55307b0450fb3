"""The incident as JSON: one shape for `watcher incidents --json`, `watcher incident ID --json` and /api.

Times are ISO 8601 UTC ending in Z (null while not set); numbers that JSON cannot hold (NaN,
infinities) become null; every string, evidence included, has its secrets masked, because a
rule's evidence can quote a SQL URL with its password in it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from watcher.decisions.known_good import VersionSighting
from watcher.logs import redact
from watcher.store.findings import FindingRecord
from watcher.store.queue import WorkQueue
from watcher.store.records import AuditEvent, IncidentRecord, RollbackIntent
from watcher.store.repository import Store


def iso_utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def json_safe(value: Any) -> Any:
    """`value` made of JSON types only, with every string's secrets masked."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Enum):
        return json_safe(value.value)
    if isinstance(value, datetime):
        return iso_utc(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, Mapping):
        return {redact(str(key)): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item) for item in value]
    return redact(str(value))


def _rollback(incident: IncidentRecord, intents: Sequence[RollbackIntent]) -> dict[str, Any] | None:
    """The rollback proposed or made for the incident; null when none was."""
    if incident.rollback_to is not None:
        from_version, to_version = incident.rollback_from, incident.rollback_to
    else:
        rollbacks = [intent for intent in intents if intent.incident_id == incident.id]
        if not rollbacks:
            return None
        from_version, to_version = rollbacks[-1].from_version, rollbacks[-1].to_version
    return {
        "from": from_version,
        "to": to_version,
        # No status yet: proposed and waiting (for a press, or a safety said no).
        "status": incident.rollback_status.value if incident.rollback_status else None,
    }


def _intent_json(intent: RollbackIntent) -> dict[str, Any]:
    return {
        "id": intent.id,
        "purpose": intent.purpose.value,
        "from": intent.from_version,
        "to": intent.to_version,
        "status": intent.status.value,
        "requested_by": intent.requested_by,
        "reason": intent.reason,
        "attempts": intent.attempts,
        "created_at": iso_utc(intent.created_at),
        "result": intent.result_detail,
    }


def audit_event_json(event: AuditEvent) -> dict[str, Any]:
    return {
        "at": iso_utc(event.at),
        "actor": event.actor,
        "kind": event.kind,
        "target": event.target,
        "from_version": event.from_version,
        "to_version": event.to_version,
        "rule": event.rule_id,
        "rule_hash": event.rule_hash,
        "detail": event.detail,
    }


def finding_json(finding: FindingRecord) -> dict[str, Any]:
    return {
        "rule": finding.rule_id,
        "rule_hash": finding.rule_hash,
        "kind": finding.kind.value,
        "value": finding.value,
        "peak": finding.peak_value,
        "threshold": finding.threshold,
        "at": iso_utc(finding.at),
        "last_at": iso_utc(finding.last_at),
        "active": finding.active,
        "verified": finding.verify_outcome,
        "evidence": finding.evidence,
    }


def version_history_json(history: Sequence[VersionSighting]) -> list[dict[str, Any]]:
    """The target's live periods, oldest first: which version was live when."""
    return [
        {
            "version": period.version,
            "live_from": iso_utc(period.first_seen) if index else None,
            "first_seen": iso_utc(period.first_seen),
            "last_seen": iso_utc(period.last_seen),
            "had_incident": period.had_incident,
        }
        for index, period in enumerate(history)
    ]


def incident_to_json(
    incident: IncidentRecord,
    intents: Sequence[RollbackIntent],
    timeline: Sequence[AuditEvent] | None = None,
    findings: Sequence[FindingRecord] = (),
    versions: Sequence[VersionSighting] | None = None,
) -> dict[str, Any]:
    """The incident's JSON object; `timeline` (audit events in order) and the target's version
    history are added when given."""
    document: dict[str, Any] = {
        "id": incident.id,
        "rule": incident.rule_id,
        "rule_hash": incident.rule_hash,
        "model": incident.model,
        "target": incident.target,
        "signal": incident.signal,
        "status": incident.status.value,
        "severity": incident.severity,
        "action": incident.action,
        "summary": incident.summary,
        "opened_at": iso_utc(incident.opened_at),
        "resolved_at": iso_utc(incident.resolved_at),
        "version": incident.live_version,
        "evidence": incident.evidence,
        "rollback": _rollback(incident, intents),
        "rollbacks": [_intent_json(intent) for intent in intents if intent.incident_id == incident.id],
        "decision": {"reason": incident.decision_reason, "detail": incident.decision_detail},
        "verify_due_at": iso_utc(incident.verify_due_at),
        "acknowledged_by": incident.acknowledged_by,
        "silenced_until": iso_utc(incident.silenced_until),
        "undone_by": incident.undone_by,
        # The opening rule first, then the rules that joined and the settling evidence.
        "findings": [finding_json(finding) for finding in findings],
    }
    if timeline is not None:
        document["timeline"] = [audit_event_json(event) for event in timeline]
    if versions is not None:
        document["versions"] = version_history_json(versions)
    safe: dict[str, Any] = json_safe(document)
    return safe


def incidents_json(store: Store, open_only: bool = False) -> list[dict[str, Any]]:
    """Incidents newest first, as `watcher incidents --json` and GET /api/incidents give them."""
    incidents = store.incidents(open_only=open_only)
    if not incidents:
        return []
    # One query for the intents of every listed incident instead of one per incident: rollbacks
    # are rare (max_rollbacks per target and day), so the whole table stays small.
    by_incident: dict[int, list[RollbackIntent]] = {}
    for intent in WorkQueue(store).intents():
        if intent.incident_id is not None:
            by_incident.setdefault(intent.incident_id, []).append(intent)
    findings = store.findings([incident.id for incident in incidents])
    return [
        incident_to_json(incident, by_incident.get(incident.id, []), findings=findings.get(incident.id, []))
        for incident in incidents
    ]


def incident_detail_json(store: Store, incident_id: int) -> dict[str, Any] | None:
    """One incident with its timeline, or None when there is no such incident."""
    incident = store.incident(incident_id)
    if incident is None:
        return None
    intents = WorkQueue(store).intents(incident_id=incident_id)
    findings = store.findings([incident_id]).get(incident_id, [])
    versions = store.sightings(incident.target) if incident.target else None
    return incident_to_json(incident, intents, store.timeline(incident_id), findings, versions)
