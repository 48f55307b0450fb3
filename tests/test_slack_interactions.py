"""Button presses: signatures, payload parsing, who may press, group lookups, Socket Mode."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from scenario.fake_slack import APP_TOKEN, BOT_TOKEN, TEAM_ID, FakeSlack, block_actions_payload, sign
from watcher.notify.inbound.approvers import GroupMembersCache, fetch_with
from watcher.notify.inbound.interactions import (
    Authorized,
    ButtonPress,
    InvalidPayload,
    PayloadProblem,
    RefusalReason,
    Refused,
    Rejected,
    RejectReason,
    Verified,
    authorize,
    parse_action,
    start_socket_mode,
    verify_request,
)
from watcher.notify.outbound.message import ButtonAction
from watcher.notify.outbound.slack_client import SendFailed, SlackClient

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
VALUE = json.dumps({"incident": 42, "action": "rollback"})


def form(payload: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


BODY = form(block_actions_payload(VALUE, "rollback", user="U0ALICE"))
MISSING = Rejected(RejectReason.MISSING_HEADER)
BAD_TIMESTAMP = Rejected(RejectReason.BAD_TIMESTAMP)


# -- signatures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        (sign(SECRET, T, BODY), BODY, Verified(T)),
        (sign(SECRET, T - 300, BODY), BODY, Verified(T - 300)),  # exactly five minutes old
        (sign(SECRET, T + 300, BODY), BODY, Verified(T + 300)),
        ({}, BODY, MISSING),
        ({"X-Slack-Request-Timestamp": str(T)}, BODY, MISSING),
        ({"X-Slack-Signature": sign(SECRET, T, BODY)["X-Slack-Signature"]}, BODY, MISSING),
        (sign("another-secret", T, BODY), BODY, Rejected(RejectReason.BAD_SIGNATURE)),
        (sign(SECRET, T - 301, BODY), BODY, Rejected(RejectReason.STALE)),
        (sign(SECRET, T + 301, BODY), BODY, Rejected(RejectReason.STALE)),
        (sign(SECRET, T, BODY), BODY.replace(b"U0ALICE", b"U0MALLO"), Rejected(RejectReason.BAD_SIGNATURE)),
        (sign(SECRET, T, BODY), BODY + b"&x=1", Rejected(RejectReason.BAD_SIGNATURE)),
        (sign(SECRET, T, b"\xff\xfe"), b"\xff\xfe", Rejected(RejectReason.BAD_SIGNATURE)),
        ({**sign(SECRET, T, BODY), "X-Slack-Request-Timestamp": "17e8"}, BODY, BAD_TIMESTAMP),
        ({**sign(SECRET, T, BODY), "X-Slack-Request-Timestamp": " 1"}, BODY, BAD_TIMESTAMP),
        ({**sign(SECRET, T, BODY), "X-Slack-Request-Timestamp": "9" * 5000}, BODY, BAD_TIMESTAMP),
    ],
)
def test_verify_request(headers: dict[str, str], body: bytes, expected: Verified | Rejected) -> None:
    assert verify_request(headers, body, SECRET, NOW) == expected


def test_verify_request_headers_are_case_insensitive_and_secret_required() -> None:
    lowered = {k.lower(): v for k, v in sign(SECRET, T, BODY).items()}
    assert verify_request(lowered, BODY, SECRET, NOW) == Verified(T)
    assert verify_request(lowered, BODY, "", NOW) == Rejected(RejectReason.NO_SECRET)


# -- parsing ------------------------------------------------------------------------------------


def test_parse_action_reads_the_press() -> None:
    press = parse_action(BODY)
    assert press == ButtonPress(
        incident_id=42,
        action=ButtonAction.ROLLBACK,
        user_id="U0ALICE",
        user_name="u0alice",
        team_id=TEAM_ID,
        channel_id="C0MLALERTS",
        message_ts="1700000000.000100",
        action_ts="1700000100.123456",
        trigger_id="1111.2222.abcd",
        response_url=f"https://hooks.slack.test/actions/{TEAM_ID}/1/abc",
        value=VALUE,
    )


def _edit(change: Callable[[dict[str, Any]], object]) -> bytes:
    payload = block_actions_payload(VALUE, "rollback", user="U0ALICE")
    change(payload)
    return form(payload)


def _value(value: object) -> Callable[[dict[str, Any]], None]:
    def change(payload: dict[str, Any]) -> None:
        payload["actions"][0]["value"] = value if isinstance(value, str) else json.dumps(value)

    return change


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"\xff", PayloadProblem.NOT_FORM),
        (b"payload", PayloadProblem.NOT_FORM),
        (b"", PayloadProblem.NO_PAYLOAD),
        (b"other=1", PayloadProblem.NO_PAYLOAD),
        (BODY + b"&" + BODY, PayloadProblem.NO_PAYLOAD),
        (b"payload=%7Bnot-json", PayloadProblem.NOT_JSON),
        (b"payload=%5B1%5D", PayloadProblem.NOT_JSON),
        (_edit(lambda p: p.update(type="view_submission")), PayloadProblem.NOT_BLOCK_ACTIONS),
        (_edit(lambda p: p.update(actions=[])), PayloadProblem.BAD_ACTION),
        (_edit(lambda p: p["actions"].append(p["actions"][0])), PayloadProblem.BAD_ACTION),
        (_edit(lambda p: p["actions"][0].update(action_id="deploy")), PayloadProblem.BAD_ACTION),
        (_edit(lambda p: p["actions"][0].update(type="static_select")), PayloadProblem.BAD_ACTION),
        (_edit(lambda p: p["actions"][0].pop("value")), PayloadProblem.BAD_VALUE),
        (_edit(_value("42")), PayloadProblem.BAD_VALUE),
        (_edit(_value("{oops")), PayloadProblem.BAD_VALUE),
        (_edit(_value({"incident": 42})), PayloadProblem.BAD_VALUE),
        (_edit(_value({"incident": 42, "action": "rollback", "to": "v1"})), PayloadProblem.BAD_VALUE),
        (_edit(_value({"incident": "42", "action": "rollback"})), PayloadProblem.BAD_VALUE),
        (_edit(_value({"incident": True, "action": "rollback"})), PayloadProblem.BAD_VALUE),
        (_edit(_value({"incident": 0, "action": "rollback"})), PayloadProblem.BAD_VALUE),
        (_edit(_value({"incident": -3, "action": "rollback"})), PayloadProblem.BAD_VALUE),
        (_edit(_value({"incident": 4.2, "action": "rollback"})), PayloadProblem.BAD_VALUE),
        (_edit(_value({"incident": 2**64, "action": "rollback"})), PayloadProblem.BAD_VALUE),
        (_edit(_value({"incident": 2**31, "action": "rollback"})), PayloadProblem.BAD_VALUE),  # > the column
        (_edit(_value({"incident": 42, "action": "undo"})), PayloadProblem.BAD_VALUE),  # names another action
        (_edit(_value("x" * 2001)), PayloadProblem.BAD_VALUE),
        (_edit(lambda p: p.pop("user")), PayloadProblem.BAD_FIELD),
        (_edit(lambda p: p["user"].update(id="alice")), PayloadProblem.BAD_FIELD),
        (_edit(lambda p: (p.pop("team"), p["user"].pop("team_id"))), PayloadProblem.BAD_FIELD),
        (_edit(lambda p: (p.pop("channel"), p["container"].pop("channel_id"))), PayloadProblem.BAD_FIELD),
        (_edit(lambda p: p["actions"][0].pop("action_ts")), PayloadProblem.BAD_FIELD),
        (_edit(lambda p: p["actions"][0].update(action_ts="soon")), PayloadProblem.BAD_FIELD),
        (_edit(lambda p: (p.pop("message"), p["container"].pop("message_ts"))), PayloadProblem.BAD_FIELD),
    ],
)
def test_parse_action_rejects_malformed_payloads(body: bytes, problem: PayloadProblem) -> None:
    result = parse_action(body)
    assert isinstance(result, InvalidPayload)
    assert result.reason is problem


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_a_payload_nested_deeper_than_any_slack_payload_is_not_json_and_not_a_recursion_error() -> None:
    body = urlencode({"payload": '{"type": "block_actions", "actions": ' + deep(100_000) + "}"}).encode()
    result = parse_action(body)
    assert isinstance(result, InvalidPayload) and result.reason is PayloadProblem.NOT_JSON
    result = parse_action(_edit(_value(deep(900))))  # under Slack's 2,000-character button value
    assert isinstance(result, InvalidPayload) and result.reason is PayloadProblem.BAD_VALUE


@pytest.mark.parametrize("response_url", ["http://hooks.slack.test/x", 42, None, "javascript:alert(1)"])
def test_a_response_url_that_is_not_https_is_ignored_not_refused(response_url: object) -> None:
    press = parse_action(_edit(lambda p: p.update(response_url=response_url)))
    assert isinstance(press, ButtonPress)
    assert press.response_url is None and press.incident_id == 42


def test_enterprise_payload_takes_team_from_the_user() -> None:
    press = parse_action(_edit(lambda p: p.update(team=None)))
    assert isinstance(press, ButtonPress) and press.team_id == TEAM_ID


def test_dedup_key_is_stable_across_redeliveries_only() -> None:
    first, again = parse_action(BODY), parse_action(BODY)
    other = parse_action(_edit(lambda p: p["actions"][0].update(action_ts="1700000200.000001")))
    assert isinstance(first, ButtonPress) and isinstance(again, ButtonPress)
    assert isinstance(other, ButtonPress)
    assert first.dedup_key == again.dedup_key != other.dedup_key


# -- who may press ------------------------------------------------------------------------------


def press_by(user: str, team: str = TEAM_ID) -> ButtonPress:
    press = parse_action(form(block_actions_payload(VALUE, "rollback", user=user, team=team)))
    assert isinstance(press, ButtonPress)
    return press


GROUPS = {"S0ONCALL": frozenset({"U0BOB"}), "S0BROKEN": None}


@pytest.mark.parametrize(
    ("press", "approvers", "expected"),
    [
        (press_by("U0ALICE"), ["U0ALICE"], Authorized("U0ALICE", via="U0ALICE")),
        (press_by("U0BOB"), ["U0ALICE", "S0ONCALL"], Authorized("U0BOB", via="S0ONCALL")),
        (press_by("U0MALLORY"), ["U0ALICE", "S0ONCALL"], Refused(RefusalReason.NOT_AN_APPROVER)),
        (press_by("U0ALICE", team="T0ELSEWHERE"), ["U0ALICE"], Refused(RefusalReason.OTHER_TEAM)),
        (press_by("U0BOB", team="T0ELSEWHERE"), ["S0ONCALL"], Refused(RefusalReason.OTHER_TEAM)),
        (press_by("U0ALICE"), [], Refused(RefusalReason.NO_APPROVERS)),
        (press_by("U0MALLORY"), ["S0BROKEN"], Refused(RefusalReason.APPROVERS_UNAVAILABLE)),
        (press_by("U0BOB"), ["S0BROKEN", "S0ONCALL"], Authorized("U0BOB", via="S0ONCALL")),
    ],
)
def test_authorize(press: ButtonPress, approvers: list[str], expected: Authorized | Refused) -> None:
    assert authorize(press, approvers, TEAM_ID, GROUPS.__getitem__) == expected


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(usergroups={"S0ONCALL": ["U0BOB"]}) as server:
        yield server


def test_group_members_are_cached_for_the_ttl_and_kept_through_an_outage(fake: FakeSlack) -> None:
    client = SlackClient(BOT_TOKEN, api_url=fake.api_url, timeout=timedelta(seconds=5))
    cache = GroupMembersCache(fetch_with(client), ttl=timedelta(minutes=5), stale_grace=timedelta(hours=1))

    def lookups() -> int:
        return len(fake.calls("usergroups.users.list"))

    assert cache.members_of("S0ONCALL", NOW) == frozenset({"U0BOB"})
    assert cache.members_of("S0ONCALL", NOW + timedelta(minutes=4)) == frozenset({"U0BOB"})
    assert lookups() == 1

    fake.usergroups["S0ONCALL"] = ["U0BOB", "U0CAROL"]
    assert cache.members_of("S0ONCALL", NOW + timedelta(minutes=6)) == frozenset({"U0BOB", "U0CAROL"})
    assert lookups() == 2

    fake.fail_next(2, status=503)
    # Slack fails: the last answer is kept for the grace period, then no longer trusted
    assert cache.members_of("S0ONCALL", NOW + timedelta(minutes=12)) == frozenset({"U0BOB", "U0CAROL"})
    assert cache.members_of("S0ONCALL", NOW + timedelta(hours=2)) is None
    assert cache.members_of("S0NOSUCH", NOW) is None

    press = press_by("U0CAROL")
    at = NOW + timedelta(hours=2, minutes=1)
    decision = authorize(press, ["S0ONCALL"], TEAM_ID, cache.lookup_at(at))
    assert decision == Authorized("U0CAROL", via="S0ONCALL")


# -- Socket Mode --------------------------------------------------------------------------------


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.02)


def test_socket_mode_acknowledges_every_envelope_and_acts_once_per_press(fake: FakeSlack) -> None:
    presses: list[ButtonPress] = []
    receiver = start_socket_mode(APP_TOKEN, presses.append, api_url=fake.api_url)
    assert receiver is not None and not isinstance(receiver, SendFailed)
    try:
        _wait_for(lambda: fake.socket_clients() == 1)
        payload = block_actions_payload(VALUE, "rollback", user="U0ALICE")
        first = fake.send_interactive(payload)
        fake.send_interactive(payload, envelope_id=first)  # the same envelope redelivered
        fake.send_interactive(payload)  # the same press in a new envelope
        fake.send_interactive({"type": "block_actions", "actions": []})  # malformed: dropped
        other = block_actions_payload(json.dumps({"incident": 7, "action": "ack"}), "ack", user="U0BOB")
        fake.send_interactive(other)
        _wait_for(lambda: len(fake.acks) == 5)
        _wait_for(lambda: len(presses) == 2)
    finally:
        receiver.stop()
    assert sorted((p.incident_id, p.action.value, p.user_id) for p in presses) == [
        (7, "ack", "U0BOB"),
        (42, "rollback", "U0ALICE"),
    ]


def test_socket_mode_starts_only_with_an_app_token_that_slack_accepts(fake: FakeSlack) -> None:
    assert start_socket_mode(None, lambda press: None, api_url=fake.api_url) is None
    assert start_socket_mode("", lambda press: None, api_url=fake.api_url) is None
    refused = start_socket_mode("xapp-wrong", lambda press: None, api_url=fake.api_url)
    assert isinstance(refused, SendFailed) and not refused.retryable and "xapp-wrong" not in refused.message
