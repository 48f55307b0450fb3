"""Button presses from Slack: verified, authorized, de-duplicated, checked against the incident's
current state, audited, and answered at once; the rollback itself is left to the dispatcher.

Nothing changes for a request whose signature fails (401). Every press from a verified Slack
user is audited, the refused ones too, and answered with a short ephemeral message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from watcher.engine.tick import utc_now
from watcher.incidents import lifecycle
from watcher.incidents.flow import view_of
from watcher.incidents.lifecycle import AuditKind, Event
from watcher.model import RollbackStatus
from watcher.notify.inbound.approvers import GroupMembersCache, fetch_with
from watcher.notify.inbound.interactions import (
    REFUSAL_TEXTS,
    Authorized,
    ButtonPress,
    InvalidPayload,
    Rejected,
    authorize,
    parse_action,
    verify_request,
)
from watcher.notify.outbound.facts import build_facts
from watcher.notify.outbound.message import ButtonAction, available_actions
from watcher.notify.outbound.slack_client import BotIdentity, SlackClient
from watcher.store.records import AuditEvent, IncidentRecord, IntentPurpose, MessageKind
from watcher.store.repository import Store, Tx

log = logging.getLogger(__name__)

SILENCE_FOR = timedelta(hours=1)
# What each button means to the incident's lifecycle (Undo is an intent, judged on its outcome).
_PRESS_EVENTS = {
    ButtonAction.ROLLBACK: Event.APPROVED,
    ButtonAction.ACK: Event.ACKNOWLEDGED,
    ButtonAction.SILENCE: Event.SILENCED,
}


class SlackActions:
    def __init__(
        self,
        store: Store,
        client: SlackClient,
        signing_secret: str,
        approvers: list[str],
        *,
        prometheus_url: str | None,
        http_base_url: str | None,
    ) -> None:
        self.store = store
        self.client = client
        self._secret = signing_secret
        self.approvers = approvers
        self.groups = GroupMembersCache(fetch_with(client))
        self.prometheus_url = prometheus_url
        self.http_base_url = http_base_url
        self._team_id: str | None = None
        self._lock = threading.Lock()

    def bot_team_id(self) -> str | None:
        with self._lock:
            if self._team_id is None:
                identity = self.client.auth_test()
                if isinstance(identity, BotIdentity):
                    self._team_id = identity.team_id
            return self._team_id

    def handle_http(self, headers: Mapping[str, str], raw_body: bytes) -> tuple[int, dict[str, Any] | bytes]:
        now = utc_now()
        verdict = verify_request(headers, raw_body, self._secret, now)
        if isinstance(verdict, Rejected):
            log.warning("slack request refused: %s", verdict.reason.value, extra={"event": "slack_rejected"})
            return 401, {"error": "unauthorized"}  # the reason is for the log only
        press = parse_action(raw_body)
        if isinstance(press, InvalidPayload):
            return 400, {"error": "invalid payload", "reason": press.reason.value}
        return 200, self.handle_press(press, now)

    def handle_press(self, press: ButtonPress, now: datetime) -> dict[str, Any]:
        team = self.bot_team_id()
        permission = authorize(press, self.approvers, team or "", self.groups.lookup_at(now))
        actor = f"slack:{press.user_id}"
        with self.store.transaction() as tx:
            if not tx.record_press(
                dedup_key=press.dedup_key,
                incident_id=press.incident_id,
                action=press.action.value,
                user_id=press.user_id,
                result="received",
                now=now,
            ):
                return {"ok": True, "duplicate": True}
            if not isinstance(permission, Authorized):
                reason = permission.reason.value if team else "bot_team_unknown"
                self._refuse(tx, press, actor, reason, REFUSAL_TEXTS.get(permission.reason, "Refused."), now)
                return {"ok": False, "refused": reason}
            incident = tx.incident(press.incident_id)
            if incident is None:
                self._refuse(tx, press, actor, "unknown_incident", "That incident does not exist.", now)
                return {"ok": False, "refused": "unknown_incident"}
            facts = build_facts(incident, [], prometheus_url=None, http_base_url=None)
            if press.action not in available_actions(facts, now):
                self._refuse(
                    tx,
                    press,
                    actor,
                    "not_available",
                    f"That button no longer applies: the incident is {incident.status.value}.",
                    now,
                )
                return {"ok": False, "refused": "not_available"}
            text = self._apply(tx, press, incident, actor, now)
            tx.enqueue_message(incident_id=incident.id, kind=MessageKind.INCIDENT, payload={}, now=now)
            tx.enqueue_message(
                incident_id=incident.id,
                kind=MessageKind.THREAD,
                payload={"text": text},
                now=now,
            )
        return {"ok": True, "action": press.action.value}

    def _apply(self, tx: Tx, press: ButtonPress, incident: IncidentRecord, actor: str, now: datetime) -> str:
        """Carry out a press the lifecycle allows; what it does to the incident is asked of it."""
        who = f"<@{press.user_id}>"
        if press.action is ButtonAction.UNDO:
            # The undo is an intent: the dispatcher makes it, and the lifecycle moves on its outcome.
            self._request(tx, press, incident, actor, now, IntentPurpose.UNDO, AuditKind.UNDO_REQUESTED)
            return f"{who} asked to undo the rollback: back to {incident.rollback_from}."
        step = lifecycle.advance(view_of(incident), _PRESS_EVENTS[press.action])
        if step.status is not None:
            # Only from the status the press was judged on: a concurrent change wins.
            tx.update_incident(incident.id, now, expect_status=[incident.status], status=step.status)
        if press.action is ButtonAction.ROLLBACK:
            self._request(tx, press, incident, actor, now, IntentPurpose.ROLLBACK, step.audit)
            tx.update_incident(incident.id, now, rollback_status=RollbackStatus.PENDING)
            return f"{who} approved the rollback to {incident.rollback_to}."
        if press.action is ButtonAction.ACK:
            tx.update_incident(incident.id, now, acknowledged_by=press.user_id)
            self._audit(tx, step.audit, incident, actor, now)
            return f"{who} acknowledged the incident."
        until = now + SILENCE_FOR
        tx.update_incident(incident.id, now, silenced_until=until)
        self._audit(tx, step.audit, incident, actor, now, until=until.isoformat())
        return f"{who} silenced the incident for 1h."

    def _request(
        self,
        tx: Tx,
        press: ButtonPress,
        incident: IncidentRecord,
        actor: str,
        now: datetime,
        purpose: IntentPurpose,
        kind: AuditKind,
    ) -> None:
        """Write the rollback (or undo) intent and its audit event; the dispatcher carries it out."""
        assert incident.target and incident.rollback_from and incident.rollback_to
        undo = purpose is IntentPurpose.UNDO
        from_version = incident.rollback_to if undo else incident.rollback_from
        to_version = incident.rollback_from if undo else incident.rollback_to
        intent = tx.create_intent(
            incident_id=incident.id,
            target=incident.target,
            purpose=purpose,
            from_version=from_version,
            to_version=to_version,
            requested_by=actor,
            reason=f"{'undo pressed' if undo else 'approved'} in Slack by {press.user_id}",
            now=now,
        )
        self._audit(
            tx,
            kind,
            incident,
            actor,
            now,
            from_version=from_version,
            to_version=to_version,
            intent=intent.key,
        )

    def _refuse(self, tx: Tx, press: ButtonPress, actor: str, reason: str, text: str, now: datetime) -> None:
        tx.append_audit(
            AuditEvent(
                at=now,
                actor=actor,
                kind="press_refused",
                # On the incident's timeline when it exists; a made-up id stays in the detail only.
                incident_id=press.incident_id if tx.incident(press.incident_id) is not None else None,
                detail={
                    "incident": press.incident_id,
                    "action": press.action.value,
                    "reason": reason,
                    "team": press.team_id,
                },
            )
        )
        tx.enqueue_message(
            incident_id=None,
            kind=MessageKind.EPHEMERAL,
            payload={"channel": press.channel_id, "user": press.user_id, "text": text},
            now=now,
        )

    @staticmethod
    def _audit(
        tx: Tx,
        kind: AuditKind | str,
        incident: IncidentRecord,
        actor: str,
        now: datetime,
        *,
        from_version: str | None = None,
        to_version: str | None = None,
        **detail: Any,
    ) -> None:
        tx.append_audit(
            AuditEvent(
                at=now,
                actor=actor,
                kind=str(kind),
                incident_id=incident.id,
                rule_id=incident.rule_id,
                rule_hash=incident.rule_hash,
                target=incident.target,
                from_version=from_version,
                to_version=to_version,
                detail=detail,
            )
        )
