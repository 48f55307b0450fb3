"""Slack inbound and outbound apart: the daemon builds the press handler itself and hands it to
the HTTP endpoint and to Socket Mode; the outbound OutboxWorker only sends."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from scenario.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack, block_actions_payload, sign
from watcher.engine.daemon import Daemon
from watcher.notify.inbound.actions import SlackActions
from watcher.notify.outbound.outbox import OutboxWorker
from watcher.rules.config import load_config
from watcher.ruletest.prometheus import free_port

SECRET = "inbound-signing-secret"
ENV = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_APP_TOKEN": APP_TOKEN}


@pytest.fixture
def daemon(tmp_path: Path, slack: FakeSlack) -> Iterator[Daemon]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "watcher.yaml").write_text(
        f"database: sqlite:///{tmp_path / 'w.db'}\nrules: rules/\n"
        f"http:\n  listen: 127.0.0.1:{free_port()}\n"
        "slack:\n  token: ${SLACK_BOT_TOKEN}\n  signing_secret: ${SLACK_SIGNING_SECRET}\n"
        "  app_token: ${SLACK_APP_TOKEN}\n  approvers: [U0APPROVER]\n"
        f'  channel: "#ml-alerts"\n  api_url: {slack.api_url}\n'
    )
    loaded = load_config(tmp_path / "watcher.yaml", ENV)
    assert loaded.config is not None, loaded.findings
    running = Daemon(loaded.config, env=ENV)
    running.prepare()
    yield running
    if running.http is not None:
        running.http.stop()
    if running.socket_mode is not None:
        running.socket_mode.stop()
    running.db.dispose()


def _wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def _refusals(daemon: Daemon) -> list[str]:
    return [str(e.detail.get("reason")) for e in daemon.store.audit_events() if e.kind == "press_refused"]


def test_the_outbox_worker_only_sends() -> None:
    assert not hasattr(OutboxWorker, "slack_actions")
    assert "actions" not in OutboxWorker.__init__.__code__.co_varnames


def test_the_daemon_builds_the_press_handler_for_the_http_endpoint(daemon: Daemon) -> None:
    assert isinstance(daemon.slack_inbound, SlackActions)
    daemon._start_http()
    value = json.dumps({"incident": 41, "action": "ack"})
    payload = block_actions_payload(value, "ack", user="U0APPROVER", action_ts=f"{time.time():.6f}")
    body = urlencode({"payload": json.dumps(payload)}).encode()
    request = urllib.request.Request(
        f"http://{daemon.config.http.listen}/slack/actions",
        data=body,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", **sign(SECRET, int(time.time()), body)},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert json.loads(response.read()) == {"ok": False, "refused": "unknown_incident"}
    assert _refusals(daemon) == ["unknown_incident"]  # the handler acted on the store


def test_the_daemon_hands_the_same_handler_to_socket_mode(daemon: Daemon, slack: FakeSlack) -> None:
    daemon._start_socket_mode()
    assert daemon.socket_mode is not None
    _wait_for(lambda: slack.socket_clients() == 1)
    value = json.dumps({"incident": 42, "action": "ack"})
    slack.send_interactive(block_actions_payload(value, "ack", user="U0APPROVER"))
    _wait_for(lambda: _refusals(daemon) == ["unknown_incident"])
