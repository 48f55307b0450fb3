"""The webhook adapter against a local receiver that checks signatures (tests/support/webhook_server.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.support.slow_server import CannedHttpServer
from tests.support.webhook_server import WebhookReceiver, signature
from watcher.remediations.base import AdapterFailure, LiveVersion, RemediationAdapter, RollbackResult
from watcher.remediations.webhook import WebhookAdapter, WebhookSettings, factory
from watcher.ruletest.prometheus import free_port

SECRET = "whsec-9d1f0c7e"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=SECRET, live="3") as server:
        yield server


def make_adapter(receiver: WebhookReceiver, **overrides: Any) -> RemediationAdapter:
    settings = {
        "url": f"{receiver.url}/rollback",
        "secret": SECRET,
        "target": "fraud-prod",
        "poll_interval": "50ms",
        **overrides,
    }
    return factory.create(factory.settings_model.model_validate(settings), base_dir=Path("."))


def test_rollback_posts_a_signed_idempotent_request(receiver: WebhookReceiver) -> None:
    outcome = make_adapter(receiver).rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.DONE, outcome
    assert receiver.live == "2"
    request = receiver.received[-1]
    headers, body = request["headers"], request["body"].encode()
    assert headers["idempotency-key"] == "intent-1"
    assert headers["x-watcher-signature"] == signature(SECRET, headers["x-watcher-timestamp"], body)
    payload = json.loads(body)
    assert {k: payload[k] for k in ("intent", "target", "from_version", "to_version")} == {
        "intent": "intent-1",
        "target": "fraud-prod",
        "from_version": "3",
        "to_version": "2",
    }
    sent_at = datetime.fromisoformat(payload["timestamp"])
    assert int(sent_at.timestamp()) == int(headers["x-watcher-timestamp"])
    assert outcome.record["http_status"] == "200"


def test_the_signature_is_hmac_sha256_of_version_timestamp_and_body(receiver: WebhookReceiver) -> None:
    fixed = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    settings = WebhookSettings.model_validate({"url": f"{receiver.url}/rollback", "secret": "k"})
    adapter = WebhookAdapter(settings, secret_file=None, clock=lambda: fixed)
    adapter.rollback(intent_key="intent-1", from_version="3", to_version="2")
    request = receiver.received[-1]
    assert request["headers"]["x-watcher-timestamp"] == "1772366400"
    message = b"v1:1772366400:" + request["body"].encode()
    expected = "sha256=" + hmac.new(b"k", message, hashlib.sha256).hexdigest()
    assert request["headers"]["x-watcher-signature"] == expected
    assert json.loads(request["body"])["timestamp"] == "2026-03-01T12:00:00Z"


def test_wrong_secret_is_a_permanent_failure(receiver: WebhookReceiver) -> None:
    outcome = make_adapter(receiver, secret="not-the-secret").rollback(
        intent_key="intent-1", from_version="3", to_version="2"
    )
    assert outcome.result is RollbackResult.FAILED
    assert outcome.failure is not None and not outcome.failure.retryable
    assert "401" in outcome.failure.message and "not-the-secret" not in repr(outcome)
    assert receiver.live == "3"


def test_same_intent_twice_is_carried_out_once(receiver: WebhookReceiver) -> None:
    adapter = make_adapter(receiver)
    assert (
        adapter.rollback(intent_key="intent-1", from_version="3", to_version="2").result
        is RollbackResult.DONE
    )
    again = adapter.rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert again.result is RollbackResult.ALREADY_DONE
    assert receiver.applied == [{"intent": "intent-1", "to_version": "2"}]


def test_receiver_refusing_a_changed_version(receiver: WebhookReceiver) -> None:
    receiver.set_live("4")
    outcome = make_adapter(receiver).rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.VERSION_CHANGED
    assert "live: 4" in outcome.detail
    assert receiver.live == "4"


def test_server_errors_are_retryable_and_a_retry_succeeds(receiver: WebhookReceiver) -> None:
    receiver.fail_next(503)
    adapter = make_adapter(receiver, headers={"Authorization": "Bearer hdr-tok-31"})
    first = adapter.rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert first.result is RollbackResult.FAILED
    assert first.failure is not None and first.failure.retryable
    assert "hdr-tok-31" not in repr(first)
    assert (
        adapter.rollback(intent_key="intent-1", from_version="3", to_version="2").result
        is RollbackResult.DONE
    )


def test_other_client_errors_are_permanent(receiver: WebhookReceiver) -> None:
    outcome = make_adapter(receiver, url=f"{receiver.url}/nowhere").rollback(
        intent_key="intent-1", from_version="3", to_version="2"
    )
    assert outcome.failure is not None and not outcome.failure.retryable and "404" in outcome.failure.message


def test_unreachable_and_slow_receivers_are_retryable(canned_http_server: CannedHttpServer) -> None:
    closed = free_port()  # nothing listens there
    settings = {"url": f"http://127.0.0.1:{closed}/rollback", "secret": SECRET}
    adapter = factory.create(factory.settings_model.model_validate(settings), base_dir=Path("."))
    outcome = adapter.rollback(intent_key="i", from_version="3", to_version="2")
    assert outcome.failure is not None and outcome.failure.retryable
    canned_http_server.answer(200, b"{}", delay=5)
    settings = {"url": f"{canned_http_server.url}/rollback", "secret": SECRET, "timeout": "200ms"}
    adapter = factory.create(factory.settings_model.model_validate(settings), base_dir=Path("."))
    outcome = adapter.rollback(intent_key="i", from_version="3", to_version="2")
    assert outcome.failure is not None and outcome.failure.retryable


def test_status_polling_until_done(receiver: WebhookReceiver) -> None:
    receiver.asynchronous, receiver.polls_until_done = True, 3
    adapter = make_adapter(receiver, status_url=receiver.url + "/status/{{ intent }}")
    outcome = adapter.rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.DONE, outcome
    assert outcome.record["polls"] == "3"
    assert receiver.live == "2"
    polls = [r for r in receiver.received if r["path"] == "/status/intent-1"]
    assert len(polls) == 3
    assert all(
        p["headers"]["x-watcher-signature"] == signature(SECRET, p["headers"]["x-watcher-timestamp"], b"")
        for p in polls
    )


def test_status_polling_reports_failure(receiver: WebhookReceiver) -> None:
    receiver.asynchronous, receiver.final_status = True, "failed"
    adapter = make_adapter(receiver, status_url=receiver.url + "/status/{{ intent }}")
    outcome = adapter.rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.FAILED
    assert outcome.failure is not None and not outcome.failure.retryable


def test_status_polling_gives_up_retryably(receiver: WebhookReceiver) -> None:
    receiver.asynchronous, receiver.polls_until_done = True, 10_000
    adapter = make_adapter(receiver, status_url=receiver.url + "/status/{{ intent }}", poll_timeout="300ms")
    outcome = adapter.rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.FAILED
    assert outcome.failure is not None and outcome.failure.retryable


def test_live_url_reads_and_guards_the_live_version(receiver: WebhookReceiver) -> None:
    adapter = make_adapter(receiver, live_url=receiver.url + "/live")
    assert adapter.live_version() == LiveVersion("3")
    receiver.set_live("7")
    posts_before = sum(1 for r in receiver.received if r["method"] == "POST")
    outcome = adapter.rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.VERSION_CHANGED
    assert sum(1 for r in receiver.received if r["method"] == "POST") == posts_before
    receiver.set_live("2")
    assert adapter.verify("2").ok and not adapter.verify("3").ok


def test_without_live_url_the_live_version_is_a_permanent_failure(receiver: WebhookReceiver) -> None:
    answer = make_adapter(receiver).live_version()
    assert isinstance(answer, AdapterFailure) and not answer.retryable
    assert "live_url is not configured" in answer.message


def test_secret_file_relative_to_the_config(receiver: WebhookReceiver, tmp_path: Path) -> None:
    (tmp_path / "webhook.secret").write_text(SECRET + "\n")
    settings = factory.settings_model.model_validate(
        {"url": f"{receiver.url}/rollback", "secret_file": "webhook.secret"}
    )
    adapter = factory.create(settings, base_dir=tmp_path)
    assert adapter.preflight("2").ok
    assert adapter.rollback(intent_key="i", from_version="3", to_version="2").result is RollbackResult.DONE
    (tmp_path / "webhook.secret").unlink()
    assert not adapter.preflight("2").ok


@pytest.mark.parametrize(
    "settings",
    [
        {"url": "http://x/r"},
        {"url": "http://x/r", "secret": "a", "secret_file": "b"},
        {"url": "ftp://x/r", "secret": "a"},
        {"url": "http://x/r", "secret": "a", "headers": {"Idempotency-Key": "mine"}},
        {"url": "http://x/r", "secret": "a", "status_url": "http://x/{{ nope }}"},
        {"url": "http://x/r", "secret": "a", "timeout": "10"},
    ],
)
def test_bad_settings_are_rejected(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        factory.settings_model.model_validate(settings)
