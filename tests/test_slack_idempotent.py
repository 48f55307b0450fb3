"""Slack slower than the client's timeout: every post lands although its answer is lost. The
outbox looks for its earlier post (by the key in the message's metadata, in the channel's
history) before posting again: one top-level message per incident, updated in place."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scenario.fake_slack import BOT_TOKEN, FakeSlack
from tests.support.harness import Harness
from tests.support.workspace import DEFAULT_RULES, make_workspace
from watcher.notify.outbound.outbox import OutboxWorker, build_outbox_worker
from watcher.notify.outbound.slack_client import Delivered, Found, SlackClient

pytestmark = pytest.mark.integration

CHANNEL = "C0MLALERTS"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@pytest.fixture
def harness(
    tmp_path: Path, registry_template: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s3cr3t")
    ws = make_workspace(
        tmp_path / "ws",
        registry_template,
        f"sqlite:///{tmp_path / 'w.db'}",
        rules=DEFAULT_RULES,
        timeout="1s",  # the Slack client's timeout too
        extra_config=(
            "slack:\n  token: ${SLACK_BOT_TOKEN}\n  signing_secret: ${SLACK_SIGNING_SECRET}\n"
            f'  channel: "#ml-alerts"\n  api_url: {slack.api_url}\n'
        ),
    )
    h = Harness(ws)
    yield h
    h.close()


def _deliver_all(outbox: OutboxWorker, deadline: float = 60) -> None:
    """Deliver on the real clock until the queue is empty, as the daemon's worker does."""
    end = time.monotonic() + deadline
    while outbox.queue.pending_message_count() and time.monotonic() < end:
        outbox.deliver_due(datetime.now(UTC))
        time.sleep(0.2)
    assert outbox.queue.pending_message_count() == 0


def test_slack_slower_than_the_timeout_gives_one_message_per_incident(
    harness: Harness, slack: FakeSlack
) -> None:
    outbox = build_outbox_worker(harness.config, harness.store, "test-replica")
    assert outbox is not None and outbox.client.timeout == timedelta(seconds=1)
    harness.tick(T0, 0.2)
    harness.tick(T0 + timedelta(minutes=2))  # fires: an incident, its message and thread steps
    [incident] = harness.store.incidents()
    slack.slow_next(count=3, seconds=2.0)  # Slack answers in 2 s; the client gives up after 1 s
    _deliver_all(outbox)
    [message] = slack.channel_messages(CHANNEL)
    assert harness.store.incident(incident.id).slack_ts == message.ts  # type: ignore[union-attr]
    assert slack.calls("conversations.history")  # the lost post was looked for, then adopted

    harness.dispatcher.run_due(T0 + timedelta(minutes=2))  # the rollback: more steps to tell
    _deliver_all(outbox)
    assert [m.ts for m in slack.channel_messages(CHANNEL)] == [message.ts]
    assert message.updates  # updated in place as the incident moved on
    replies = [r.text for r in slack.thread(CHANNEL, message.ts)]
    assert len(replies) == len(set(replies))  # no step twice in the thread


def test_a_lost_thread_reply_is_found_in_the_thread(slack: FakeSlack) -> None:
    client = SlackClient(BOT_TOKEN, api_url=slack.api_url, timeout=timedelta(seconds=1))
    since = datetime.now(UTC) - timedelta(minutes=1)
    parent = client.post_message("#ml-alerts", "incident", [], key="1:1")
    assert isinstance(parent, Delivered)
    slack.slow_next(count=1, seconds=2.0)
    assert not isinstance(client.post_message(CHANNEL, "step", [], thread_ts=parent.ts, key="2:1"), Delivered)
    time.sleep(1.5)  # Slack finishes the post the client gave up on
    found = client.find_posted(CHANNEL, "2:1", since, thread_ts=parent.ts)
    assert isinstance(found, Found) and [r.ts for r in slack.thread(CHANNEL, parent.ts)] == [found.ts]
    assert client.find_posted("#ml-alerts", "1:1", since) == Found(CHANNEL, parent.ts)
    assert client.find_posted("#ml-alerts", "9:9", since) is None


def test_without_an_answer_from_slack_nothing_is_posted_blind(harness: Harness, slack: FakeSlack) -> None:
    outbox = build_outbox_worker(harness.config, harness.store, "test-replica")
    assert outbox is not None
    harness.tick(T0, 0.2)
    harness.tick(T0 + timedelta(minutes=2))
    slack.slow_next(count=1, seconds=2.0)
    outbox.deliver_due(datetime.now(UTC))  # the post lands, its answer is lost
    time.sleep(2.5)
    slack.fail_next(count=5)  # Slack cannot answer whether it has it: the outbox waits
    for step in range(1, 6):
        outbox.deliver_due(datetime.now(UTC) + timedelta(minutes=10 * step))
    assert len(slack.calls("chat.postMessage")) == 1
    assert len(slack.channel_messages(CHANNEL)) == 1
