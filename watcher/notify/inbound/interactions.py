"""Button presses from Slack: verify the request, parse the press, decide who may press.

Over HTTP every request is checked against the signing secret on its raw body before anything is
parsed; over Socket Mode the app token's connection vouches for the sender. Both paths parse the
same block_actions payload with `parse_action_payload`. What a press then does (audit event,
rollback intent) is for the caller; this module holds no database code.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from watcher.model import MAX_INCIDENT_ID
from watcher.notify.inbound.approvers import is_user_group
from watcher.notify.inbound.bounded_json import loads_bounded
from watcher.notify.outbound.message import ButtonAction
from watcher.notify.outbound.slack_client import DEFAULT_API_URL, SendFailed

log = logging.getLogger(__name__)

SIGNATURE_WINDOW = timedelta(minutes=5)
_MAX_VALUE_LENGTH = 2000  # Slack's limit for a button value

_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_TEAM_ID = re.compile(r"^[TE][A-Z0-9]{2,}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_SLACK_TS = re.compile(r"^[0-9]{1,12}\.[0-9]{1,9}$")


class RejectReason(StrEnum):
    NO_SECRET = "no_secret"  # no signing secret configured: nothing can be verified
    MISSING_HEADER = "missing_header"
    BAD_TIMESTAMP = "bad_timestamp"
    STALE = "stale"  # more than five minutes from now, in either direction
    BAD_SIGNATURE = "bad_signature"  # wrong secret or a body changed on the way


@dataclass(frozen=True)
class Verified:
    timestamp: int


@dataclass(frozen=True)
class Rejected:
    reason: RejectReason


class _FixedClock(Clock):
    """slack-sdk's verifier reads its own clock; here it reads the `now` it was given."""

    def __init__(self, now: datetime) -> None:
        self._now = now.timestamp()

    def now(self) -> float:
        return self._now


def verify_request(
    headers: Mapping[str, str], raw_body: bytes, signing_secret: str, now: datetime
) -> Verified | Rejected:
    """Check Slack's v0 signature of the raw body and the request's age against `now`."""
    if not signing_secret.strip():
        return Rejected(RejectReason.NO_SECRET)
    lowered = {key.lower(): value for key, value in headers.items()}
    timestamp = lowered.get("x-slack-request-timestamp")
    signature = lowered.get("x-slack-signature")
    if not timestamp or not signature:
        return Rejected(RejectReason.MISSING_HEADER)
    # Whole seconds, as Slack sends them; a length cap keeps int() away from huge inputs.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return Rejected(RejectReason.BAD_TIMESTAMP)
    if abs(now.timestamp() - int(timestamp)) > SIGNATURE_WINDOW.total_seconds():
        return Rejected(RejectReason.STALE)
    try:
        raw_body.decode("utf-8")  # the verifier decodes the body; Slack never sends anything else
    except UnicodeDecodeError:
        return Rejected(RejectReason.BAD_SIGNATURE)
    verifier = SignatureVerifier(signing_secret, clock=_FixedClock(now))
    if not verifier.is_valid(body=raw_body, timestamp=timestamp, signature=signature):
        return Rejected(RejectReason.BAD_SIGNATURE)
    return Verified(int(timestamp))


class PayloadProblem(StrEnum):
    NOT_FORM = "not_form"  # not application/x-www-form-urlencoded UTF-8
    NO_PAYLOAD = "no_payload"  # no single `payload` field
    NOT_JSON = "not_json"
    NOT_BLOCK_ACTIONS = "not_block_actions"
    BAD_ACTION = "bad_action"  # not exactly one known button
    BAD_VALUE = "bad_value"  # the button value does not name an incident and that same action
    BAD_FIELD = "bad_field"  # a user, team, channel or timestamp missing or malformed


@dataclass(frozen=True)
class InvalidPayload:
    reason: PayloadProblem
    detail: str


@dataclass(frozen=True)
class ButtonPress:
    incident_id: int
    action: ButtonAction
    user_id: str
    user_name: str
    team_id: str
    channel_id: str
    message_ts: str
    action_ts: str
    trigger_id: str
    response_url: str | None
    value: str  # the button value exactly as received

    @property
    def dedup_key(self) -> str:
        """The same for every redelivery of one press, different for any other press."""
        parts = (self.team_id, self.user_id, self.action_ts, self.action.value, self.value)
        return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def parse_action(raw_body: bytes) -> ButtonPress | InvalidPayload:
    """A press from the body of POST /slack/actions (form field `payload`, JSON)."""
    try:
        form = parse_qs(raw_body.decode("utf-8"), strict_parsing=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return InvalidPayload(PayloadProblem.NOT_FORM, "body is not a URL-encoded form")
    payloads = form.get("payload", [])
    if len(payloads) != 1:
        return InvalidPayload(PayloadProblem.NO_PAYLOAD, "expected exactly one payload field")
    try:
        payload = loads_bounded(payloads[0])  # a signed payload may still be nested 100,000 deep
    except ValueError:
        return InvalidPayload(PayloadProblem.NOT_JSON, "payload is not JSON")
    if not isinstance(payload, dict):
        return InvalidPayload(PayloadProblem.NOT_JSON, "payload is not a JSON object")
    return parse_action_payload(payload)


def parse_action_payload(payload: Mapping[str, Any]) -> ButtonPress | InvalidPayload:
    """A press from a decoded block_actions payload (HTTP or Socket Mode)."""
    if payload.get("type") != "block_actions":
        return InvalidPayload(PayloadProblem.NOT_BLOCK_ACTIONS, f"type {str(payload.get('type'))[:40]!r}")
    actions = payload.get("actions")
    if not isinstance(actions, list) or len(actions) != 1 or not isinstance(actions[0], dict):
        return InvalidPayload(PayloadProblem.BAD_ACTION, "expected exactly one action")
    action = actions[0]
    button = _button_action(action)
    if isinstance(button, InvalidPayload):
        return button
    value = action["value"]
    incident_id = _incident_from_value(value, button)
    if isinstance(incident_id, InvalidPayload):
        return incident_id
    return _press(payload, action, button, incident_id, value)


def _button_action(action: Mapping[str, Any]) -> ButtonAction | InvalidPayload:
    if action.get("type") != "button":
        return InvalidPayload(PayloadProblem.BAD_ACTION, "action is not a button")
    action_id = action.get("action_id")
    if action_id not in {a.value for a in ButtonAction}:
        return InvalidPayload(PayloadProblem.BAD_ACTION, f"unknown action_id {str(action_id)[:40]!r}")
    value = action.get("value")
    if not isinstance(value, str) or len(value) > _MAX_VALUE_LENGTH:
        return InvalidPayload(PayloadProblem.BAD_VALUE, "button value missing or too long")
    return ButtonAction(action_id)


def _incident_from_value(value: str, button: ButtonAction) -> int | InvalidPayload:
    try:
        decoded = loads_bounded(value)
    except ValueError:
        return InvalidPayload(PayloadProblem.BAD_VALUE, "button value is not JSON")
    if not isinstance(decoded, dict) or set(decoded) != {"incident", "action"}:
        return InvalidPayload(PayloadProblem.BAD_VALUE, "button value must hold incident and action only")
    incident, action = decoded["incident"], decoded["action"]
    # bool is an int in Python; `true` is not an incident id.
    if type(incident) is not int or not 0 < incident <= MAX_INCIDENT_ID:
        return InvalidPayload(PayloadProblem.BAD_VALUE, "incident is not a positive integer")
    if action != button.value:
        return InvalidPayload(PayloadProblem.BAD_VALUE, "button value names another action")
    return incident


def _press(
    payload: Mapping[str, Any], action: Mapping[str, Any], button: ButtonAction, incident_id: int, value: str
) -> ButtonPress | InvalidPayload:
    user = _mapping(payload.get("user"))
    container = _mapping(payload.get("container"))
    # Enterprise Grid payloads may carry the team on the user only, the channel on the container.
    team = _mapping(payload.get("team")).get("id") or user.get("team_id")
    channel = _mapping(payload.get("channel")).get("id") or container.get("channel_id")
    message_ts = container.get("message_ts") or _mapping(payload.get("message")).get("ts")
    fields = {
        "user.id": (user.get("id"), _USER_ID),
        "team.id": (team, _TEAM_ID),
        "channel.id": (channel, _CHANNEL_ID),
        "message.ts": (message_ts, _SLACK_TS),
        "action_ts": (action.get("action_ts"), _SLACK_TS),
    }
    checked: dict[str, str] = {}
    for name, (found, pattern) in fields.items():
        if not isinstance(found, str) or not pattern.match(found):
            return InvalidPayload(PayloadProblem.BAD_FIELD, f"{name} missing or malformed")
        checked[name] = found
    # Not used to answer (answers go through the Web API); kept only when it is an https URL, and
    # anything else is ignored rather than refusing a validly signed press over a field not used.
    response_url = payload.get("response_url")
    if not (isinstance(response_url, str) and response_url.startswith("https://")):
        response_url = None
    name = user.get("username") or user.get("name") or ""
    trigger_id = payload.get("trigger_id") or ""
    return ButtonPress(
        incident_id=incident_id,
        action=button,
        user_id=checked["user.id"],
        user_name=name if isinstance(name, str) else "",
        team_id=checked["team.id"],
        channel_id=checked["channel.id"],
        message_ts=checked["message.ts"],
        action_ts=checked["action_ts"],
        trigger_id=trigger_id if isinstance(trigger_id, str) else "",
        response_url=response_url,
        value=value,
    )


def _mapping(found: object) -> Mapping[str, Any]:
    return found if isinstance(found, dict) else {}


class RefusalReason(StrEnum):
    NO_APPROVERS = "no_approvers"  # slack.approvers is empty: nobody may press
    OTHER_TEAM = "other_team"
    NOT_AN_APPROVER = "not_an_approver"
    APPROVERS_UNAVAILABLE = "approvers_unavailable"  # a user group could not be looked up


@dataclass(frozen=True)
class Authorized:
    user_id: str
    via: str  # the approvers entry that allowed it: the user's own id or a group id


@dataclass(frozen=True)
class Refused:
    reason: RefusalReason


def authorize(
    press: ButtonPress,
    approvers: Sequence[str],
    bot_team_id: str,
    members_of: Callable[[str], frozenset[str] | None],
) -> Authorized | Refused:
    """May this press act? Pure apart from `members_of`, which answers from a cache."""
    if press.team_id != bot_team_id:
        return Refused(RefusalReason.OTHER_TEAM)
    if not approvers:
        return Refused(RefusalReason.NO_APPROVERS)
    if press.user_id in approvers:
        return Authorized(press.user_id, via=press.user_id)
    unavailable = False
    for group in (entry for entry in approvers if is_user_group(entry)):
        members = members_of(group)
        if members is None:
            unavailable = True
        elif press.user_id in members:
            return Authorized(press.user_id, via=group)
    return Refused(RefusalReason.APPROVERS_UNAVAILABLE if unavailable else RefusalReason.NOT_AN_APPROVER)


REFUSAL_TEXTS = {
    RefusalReason.NO_APPROVERS: "Nobody may act on incidents from Slack: no approvers are configured.",
    RefusalReason.OTHER_TEAM: "This button only works in the workspace that owns it.",
    RefusalReason.NOT_AN_APPROVER: "You are not an approver for model-watcher; nothing was changed.",
    RefusalReason.APPROVERS_UNAVAILABLE: "Approvers could not be checked with Slack right now; try again.",
}


PressHandler = Callable[[ButtonPress], None]


class SocketModeReceiver:
    """Receives presses over Socket Mode: acknowledges each envelope at once, then hands each
    distinct press to `on_press`. Redeliveries (same envelope, or the same press in a new one) are
    dropped here; the caller's audit trail remains the lasting guard across restarts and replicas.
    """

    def __init__(
        self,
        app_token: str,
        on_press: PressHandler,
        *,
        api_url: str = DEFAULT_API_URL,
        remember: int = 10_000,
    ) -> None:
        self._app_token = app_token
        self._on_press = on_press
        self._api_url = api_url
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()
        self._client: SocketModeClient | None = None

    def start(self) -> SendFailed | None:
        """Connect; a refused app token or an unreachable Slack is returned, not raised."""
        web = WebClient(base_url=self._api_url, retry_handlers=[])
        client = SocketModeClient(app_token=self._app_token, web_client=web, logger=log)
        client.socket_mode_request_listeners.append(self._on_request)
        try:
            client.connect()
        except SlackApiError as error:
            client.close()
            code = error.response.get("error") if isinstance(error.response.data, dict) else None
            return SendFailed(f"apps.connections.open: {code or error.response.status_code}", retryable=False)
        except OSError as error:
            client.close()
            return SendFailed(f"apps.connections.open: {type(error).__name__}", retryable=True)
        self._client = client
        return None

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _on_request(self, client: BaseSocketModeClient, request: SocketModeRequest) -> None:
        # Acknowledge first: Slack redelivers an envelope that is not acknowledged within 3 s.
        try:
            client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        except Exception:  # the press still counts; Slack may redeliver it and dedup catches that
            log.warning("could not acknowledge Socket Mode envelope %s", request.envelope_id)
        if request.type != "interactive" or not self._first_time(f"envelope:{request.envelope_id}"):
            return
        press = parse_action_payload(request.payload)
        if isinstance(press, InvalidPayload):
            log.info("ignored Socket Mode payload: %s (%s)", press.reason, press.detail)
            return
        if not self._first_time(press.dedup_key):
            return
        try:
            self._on_press(press)
        except Exception:  # one failing press must not stop the receiver
            log.exception("handling a button press failed")

    def _first_time(self, key: str) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)
            return True


def start_socket_mode(
    app_token: str | None, on_press: PressHandler, *, api_url: str = DEFAULT_API_URL
) -> SocketModeReceiver | SendFailed | None:
    """A started receiver when `slack.app_token` is set; None when it is not (HTTP only)."""
    if not app_token:
        return None
    receiver = SocketModeReceiver(app_token, on_press, api_url=api_url)
    failure = receiver.start()
    return failure if failure is not None else receiver
