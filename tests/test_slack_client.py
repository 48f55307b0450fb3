"""SlackClient through slack-sdk's base_url against the local Slack Web API in scenario.fake_slack."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta

import pytest

from scenario.fake_slack import BOT_TOKEN, TEAM_ID, FakeSlack
from tests.test_slack_blocks import NOW, STATES
from watcher.notify.outbound.message import TimelineEntry, build_message
from watcher.notify.outbound.slack_blocks import render_incident, render_thread_reply
from watcher.notify.outbound.slack_client import (
    BotIdentity,
    Delivered,
    Members,
    RateLimited,
    SendFailed,
    SlackClient,
)
from watcher.ruletest.prometheus import free_port

CHANNEL_ID = "C0MLALERTS"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(usergroups={"S0ONCALL": ["U0ALICE", "U0BOB"]}) as server:
        yield server


def client_for(fake: FakeSlack, token: str = BOT_TOKEN, seconds: float = 5) -> SlackClient:
    return SlackClient(token, api_url=fake.api_url, timeout=timedelta(seconds=seconds))


def test_message_is_posted_then_updated_in_place(fake: FakeSlack) -> None:
    client = client_for(fake)
    first = render_incident(build_message(STATES["awaiting_approval"], NOW))
    posted = client.post_message("#ml-alerts", first.text, first.blocks)
    assert isinstance(posted, Delivered)
    assert posted.channel == CHANNEL_ID  # the id, which chat.update needs, not the name

    later = render_incident(build_message(STATES["verifying"], NOW))
    updated = client.update_message(posted.channel, posted.ts, later.text, later.blocks)

    assert updated == Delivered(CHANNEL_ID, posted.ts)
    [message] = fake.channel_messages(CHANNEL_ID)
    assert (message.ts, message.text, message.blocks) == (posted.ts, later.text, later.blocks)
    assert [text for text, _ in message.updates] == [later.text]


def test_steps_go_into_the_message_thread(fake: FakeSlack) -> None:
    client = client_for(fake)
    parent = client.post_message("#ml-alerts", "incident", [])
    assert isinstance(parent, Delivered)
    steps = [TimelineEntry(NOW, "watcher", "rollback_started", f"step {n}") for n in range(2)]
    replies = [client.post_message(CHANNEL_ID, render_thread_reply(s), [], parent.ts) for s in steps]

    assert [m.text for m in fake.thread(CHANNEL_ID, parent.ts)] == [render_thread_reply(s) for s in steps]
    assert len(fake.channel_messages(CHANNEL_ID)) == 1
    stamps = [parent.ts, *(r.ts for r in replies if isinstance(r, Delivered))]
    assert len(set(stamps)) == 3 and stamps == sorted(stamps, key=float)


def test_every_golden_state_is_accepted_by_the_block_kit_checks(fake: FakeSlack) -> None:
    client = client_for(fake)
    for name, facts in STATES.items():
        payload = render_incident(build_message(facts, NOW))
        assert isinstance(client.post_message("#ml-alerts", payload.text, payload.blocks), Delivered), name


def test_server_error_is_retryable_and_tried_once(fake: FakeSlack) -> None:
    fake.fail_next(1, status=500)
    client = client_for(fake)

    result = client.post_message("#ml-alerts", "hello", [])

    assert isinstance(result, SendFailed) and result.retryable
    assert len(fake.calls("chat.postMessage")) == 1  # slack-sdk's own retries are off
    assert isinstance(client.post_message("#ml-alerts", "hello", []), Delivered)


def test_dropped_connection_is_retryable_and_tried_once(fake: FakeSlack) -> None:
    fake.drop_next(1)
    result = client_for(fake).post_message("#ml-alerts", "hello", [])
    assert isinstance(result, SendFailed) and result.retryable
    assert len(fake.calls("chat.postMessage")) == 1  # slack-sdk would have retried a reset on its own


def test_rate_limit_returns_slacks_retry_after(fake: FakeSlack) -> None:
    fake.rate_limit_next(1, retry_after=7)
    client = client_for(fake)

    assert client.post_message("#ml-alerts", "hello", []) == RateLimited(timedelta(seconds=7))
    assert len(fake.calls("chat.postMessage")) == 1


def test_bad_token_is_a_permanent_failure_that_never_shows_the_token(fake: FakeSlack) -> None:
    secret = "xoxb-1234-not-the-right-one"
    result = client_for(fake, token=secret).post_message("#ml-alerts", "hello", [])

    assert isinstance(result, SendFailed) and not result.retryable
    assert "invalid_auth" in result.message and secret not in result.message


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.post_message("#no-such-channel", "x", []), "channel_not_found"),
        (lambda c: c.update_message(CHANNEL_ID, "1700000000.999999", "x", []), "message_not_found"),
        (lambda c: c.post_message(CHANNEL_ID, "x", [], thread_ts="1.2"), "thread_not_found"),
        (lambda c: c.usergroup_members("S0NOBODY"), "no_such_subteam"),
    ],
)
def test_mistakes_are_permanent_failures(fake: FakeSlack, call: object, error: str) -> None:
    result = call(client_for(fake))  # type: ignore[operator]
    assert isinstance(result, SendFailed) and not result.retryable and error in result.message


def test_unreachable_slack_is_retryable() -> None:
    port = free_port()  # nobody listens there
    client = SlackClient(BOT_TOKEN, api_url=f"http://127.0.0.1:{port}/api/", timeout=timedelta(seconds=2))
    result = client.post_message("#ml-alerts", "hello", [])
    assert isinstance(result, SendFailed) and result.retryable and BOT_TOKEN not in result.message


def test_slow_slack_times_out_as_retryable(fake: FakeSlack) -> None:
    fake.delay = 3
    result = client_for(fake, seconds=1).auth_test()
    assert isinstance(result, SendFailed) and result.retryable


def test_ephemeral_usergroup_and_auth(fake: FakeSlack) -> None:
    client = client_for(fake)
    refusal = "You are not an approver"
    assert isinstance(client.post_ephemeral(CHANNEL_ID, "U0MALLORY", refusal), Delivered)
    assert fake.ephemerals == [{"channel": CHANNEL_ID, "user": "U0MALLORY", "text": refusal}]
    assert client.usergroup_members("S0ONCALL") == Members(frozenset({"U0ALICE", "U0BOB"}))
    assert client.auth_test() == BotIdentity(TEAM_ID, "U0WATCHER", "B0WATCHER")
    assert all("token" not in call.params for call in fake.calls())


def test_fake_slack_echoes_messages_updates_and_replies_readably() -> None:
    out = io.StringIO()
    with FakeSlack(echo=out) as fake:
        client = client_for(fake)
        first = render_incident(build_message(STATES["awaiting_approval"], NOW))
        posted = client.post_message("#ml-alerts", first.text, first.blocks)
        assert isinstance(posted, Delivered)
        later = render_incident(build_message(STATES["verifying"], NOW))
        client.update_message(posted.channel, posted.ts, later.text, later.blocks)
        step = TimelineEntry(NOW, "U012ABCDEF", "approved", "Rollback approved (7 → 6)")
        client.post_message(posted.channel, render_thread_reply(step), [], posted.ts)
    shown = out.getvalue()
    assert f"┌─ #ml-alerts · new message {posted.ts}" in shown
    assert "312 ms > 250 ms" in shown and "[ Roll back ]  [ Acknowledge ]  [ Silence 1h ]" in shown
    assert f"┌─ #ml-alerts · updated {posted.ts}" in shown and "[ Undo rollback ]" in shown
    assert f"↳ thread {posted.ts}: 2024-05-01 12:10:00 UTC · @U012ABCDEF · Rollback approved (7 → 6)" in shown
