"""Slack end to end: incident messages through the outbox to a local server speaking the Slack Web
API, and signed button presses over HTTP that act on a real MLflow registry."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from scenario.fake_slack import BOT_TOKEN, TEAM_ID, FakeSlack, block_actions_payload, sign
from tests.support.harness import RULE, Harness
from tests.support.workspace import DEFAULT_RULES, make_workspace
from watcher.http.context import HttpContext
from watcher.http.serve import HttpServer
from watcher.metrics import Metrics
from watcher.model import IncidentStatus
from watcher.notify.inbound.build import build_slack_inbound
from watcher.notify.outbound.outbox import build_outbox_worker

pytestmark = pytest.mark.integration

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
APPROVER = "U0APPROVER"
GROUP_MEMBER = "U0ONCALL1"
# Ticks happen in the recent past: presses are signed with the real clock, as Slack signs them.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

SLACK_CONFIG = """\
slack:
  token: ${{SLACK_BOT_TOKEN}}
  signing_secret: ${{SLACK_SIGNING_SECRET}}
  channel: "#ml-alerts"
  api_url: {api_url}
  approvers: [{approver}, S0ONCALL]
"""


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(usergroups={"S0ONCALL": [GROUP_MEMBER]}) as fake:
        yield fake


class SlackRig:
    def __init__(self, harness: Harness, slack: FakeSlack) -> None:
        self.h = harness
        self.slack = slack
        worker = build_outbox_worker(harness.config, harness.store, "test-replica")
        inbound = build_slack_inbound(harness.config, harness.store)
        assert worker is not None and inbound is not None
        self.outbox = worker
        context = HttpContext(
            store=harness.store,
            metrics=Metrics(),
            loop_alive=lambda: True,
            ready=lambda: (True, "ok"),
            slack_handler=inbound.handle_http,
        )
        self.http = HttpServer("127.0.0.1", 0, context)
        self.http.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.bound_port}/slack/actions"

    def fire(self, value: float = 0.2) -> int:
        self.h.tick(T0, value)
        self.h.tick(T0 + timedelta(minutes=2))
        return self.h.store.incidents()[0].id

    def deliver(self) -> None:
        self.outbox.deliver_due(datetime.now(UTC))

    def press(
        self,
        incident: int,
        action: str,
        *,
        user: str = APPROVER,
        team: str = TEAM_ID,
        action_ts: str | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> tuple[int, dict[str, Any]]:
        value = json.dumps({"incident": incident, "action": action})
        payload = block_actions_payload(
            value, action, user=user, team=team, action_ts=action_ts or f"{time.time():.6f}"
        )
        raw = body if body is not None else urlencode({"payload": json.dumps(payload)}).encode()
        signed = headers if headers is not None else sign(SECRET, int(time.time()), raw)
        request = urllib.request.Request(
            self.url,
            data=raw,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", **signed},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def close(self) -> None:
        self.http.stop()
        self.h.close()


def _rig(
    tmp_path: Path,
    template: Path,
    slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
    action: str = "rollback",
) -> SlackRig:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    extra = SLACK_CONFIG.format(api_url=slack.api_url, approver=APPROVER)
    ws = make_workspace(
        tmp_path / "ws",
        template,
        f"sqlite:///{tmp_path / 'w.db'}",
        rules=DEFAULT_RULES.replace("action: rollback", f"action: {action}"),
        extra_config=extra,
    )
    return SlackRig(Harness(ws), slack)


@pytest.fixture
def rig(
    tmp_path: Path, registry_template: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SlackRig]:
    r = _rig(tmp_path, registry_template, slack, monkeypatch)
    yield r
    r.close()


@pytest.fixture
def approve_rig(
    tmp_path: Path, registry_template: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SlackRig]:
    r = _rig(tmp_path, registry_template, slack, monkeypatch, action="approve")
    yield r
    r.close()


def _buttons(blocks: list[dict[str, Any]]) -> list[str]:
    return [e["action_id"] for b in blocks if b.get("type") == "actions" for e in b["elements"]]


def _latest_blocks(slack: FakeSlack) -> tuple[str, list[dict[str, Any]]]:
    [message] = slack.channel_messages("C0MLALERTS")
    return message.ts, (message.updates[-1][1] if message.updates else message.blocks)


def test_roll_back_press_on_an_approval_request_rolls_back(approve_rig: SlackRig) -> None:
    rig = approve_rig
    incident = rig.fire()
    assert rig.h.store.incident(incident).status is IncidentStatus.AWAITING_APPROVAL  # type: ignore[union-attr]
    rig.deliver()
    ts, blocks = _latest_blocks(rig.slack)
    assert _buttons(blocks) == ["rollback", "ack", "silence"]
    status, answer = rig.press(incident, "rollback")
    assert (status, answer.get("ok")) == (200, True)
    [outcome] = rig.h.dispatcher.run_due(datetime.now(UTC))
    assert outcome.status is not None
    assert rig.h.workspace.champion() == "2"
    rig.deliver()
    ts_after, blocks = _latest_blocks(rig.slack)
    assert ts_after == ts  # updated in place, never a second message
    assert "undo" in _buttons(blocks) and "rollback" not in _buttons(blocks)
    replies = " ".join(
        rig.slack.thread("C0MLALERTS", ts_after)[i].text
        for i in range(len(rig.slack.thread("C0MLALERTS", ts_after)))
    )
    assert APPROVER in replies and "Rolled back" in replies
    actors = [e.actor for e in rig.h.store.timeline(incident)]
    assert f"slack:{APPROVER}" in actors


def test_undo_press_rolls_forward(rig: SlackRig) -> None:
    incident = rig.fire()
    rig.h.dispatcher.run_due(T0 + timedelta(minutes=2))
    assert rig.h.workspace.champion() == "2"
    status, _ = rig.press(incident, "undo")
    assert status == 200
    rig.h.dispatcher.run_due(datetime.now(UTC))
    assert rig.h.workspace.champion() == "3"
    record = rig.h.store.incident(incident)
    assert record is not None and record.undone_by == f"slack:{APPROVER}"
    rig.deliver()
    _, blocks = _latest_blocks(rig.slack)
    assert "undo" not in _buttons(blocks)


def test_acknowledge_and_silence_are_recorded_and_shown(approve_rig: SlackRig) -> None:
    rig = approve_rig
    incident = rig.fire()
    rig.deliver()
    assert rig.press(incident, "ack", user=GROUP_MEMBER)[0] == 200  # allowed through the user group
    assert rig.press(incident, "silence")[0] == 200
    record = rig.h.store.incident(incident)
    assert record is not None and record.acknowledged_by == GROUP_MEMBER and record.silenced_until is not None
    rig.deliver()
    _, blocks = _latest_blocks(rig.slack)
    assert _buttons(blocks) == ["rollback"]
    assert GROUP_MEMBER in json.dumps(blocks)


def _snapshot(rig: SlackRig) -> tuple[int, int, str]:
    return len(rig.h.store.audit_events()), len(rig.h.dispatcher.queue.intents()), rig.h.workspace.champion()


def _rollback_press_body(incident: int) -> bytes:
    value = json.dumps({"incident": incident, "action": "rollback"})
    payload = block_actions_payload(value, "rollback", user=APPROVER)
    return urlencode({"payload": json.dumps(payload)}).encode()


def test_refused_requests_change_nothing(approve_rig: SlackRig) -> None:
    rig = approve_rig
    incident = rig.fire()
    body = _rollback_press_body(incident)
    now = int(time.time())
    unsigned_cases = {
        "no signature": {},
        "wrong signature": sign("not-the-secret", now, body),
        "non-numeric timestamp": {**sign(SECRET, now, body), "X-Slack-Request-Timestamp": "soon"},
        "tampered body": sign(SECRET, now, body.replace(b"rollback", b"rollbacK", 1)),
    }
    before = _snapshot(rig)
    for name, headers in unsigned_cases.items():
        status, _ = rig.press(incident, "rollback", headers=headers, body=body)
        assert status == 401, name
    assert _snapshot(rig) == before
    audit_before = len(rig.h.store.audit_events())
    assert rig.press(incident, "rollback", user="U0STRANGER")[1]["refused"] == "not_an_approver"
    assert rig.press(incident, "rollback", team="T0OTHERTEAM")[1]["refused"] == "other_team"
    assert len(rig.h.store.audit_events()) == audit_before + 2  # refused presses are audited
    assert [e.kind for e in rig.h.store.audit_events()[-2:]] == ["press_refused", "press_refused"]
    assert rig.h.workspace.champion() == "3" and rig.h.dispatcher.queue.intents() == []
    rig.deliver()
    assert [e["user"] for e in rig.slack.ephemerals] == ["U0STRANGER", APPROVER]  # each told, briefly


def test_a_press_signed_more_than_five_minutes_before_it_arrives_is_refused(approve_rig: SlackRig) -> None:
    """The server judges a signature's age on its own clock: one signed 5 min 5 s before it arrives
    is refused and changes nothing; one signed 4 min 55 s before is taken. (The signature is dated
    back rather than the server's clock moved: freezegun's clock, moved in this process, stays in
    whatever the process imports meanwhile.)"""
    rig = approve_rig
    incident = rig.fire()
    body = _rollback_press_body(incident)
    before = _snapshot(rig)
    stale = sign(SECRET, int(time.time() - 305), body)
    status, _ = rig.press(incident, "rollback", headers=stale, body=body)
    assert status == 401 and _snapshot(rig) == before
    fresh = sign(SECRET, int(time.time() - 295), body)
    status, answer = rig.press(incident, "rollback", headers=fresh, body=body)
    assert status == 200 and answer["ok"] is True
    assert len(rig.h.dispatcher.queue.intents()) == 1


def test_same_press_twice_acts_once_and_stale_buttons_refuse(approve_rig: SlackRig) -> None:
    rig = approve_rig
    incident = rig.fire()
    action_ts = f"{time.time():.6f}"
    assert rig.press(incident, "rollback", action_ts=action_ts)[1]["ok"] is True
    assert rig.press(incident, "rollback", action_ts=action_ts)[1].get("duplicate") is True
    assert len(rig.h.dispatcher.queue.intents()) == 1
    # A second, distinct press of a button whose moment has passed: the incident moved on.
    assert rig.press(incident, "rollback")[1]["refused"] == "not_available"
    assert len(rig.h.dispatcher.queue.intents()) == 1


def test_slack_errors_never_delay_the_rollback_and_nothing_is_lost(rig: SlackRig) -> None:
    rig.slack.fail_next(3, status=500)
    incident = rig.fire()
    rig.h.dispatcher.run_due(T0 + timedelta(minutes=2))
    assert rig.h.workspace.champion() == "2"  # rolled back while Slack was failing
    now = datetime.now(UTC)
    for step in range(4):
        rig.outbox.deliver_due(now + timedelta(minutes=step))
    rig.slack.rate_limit_next(1, retry_after=30)
    rig.h.tick(T0 + timedelta(minutes=3), 0.01)
    rig.h.tick(T0 + timedelta(minutes=4))
    rig.outbox.deliver_due(now + timedelta(minutes=5))
    assert rig.outbox.queue.pending_message_count() > 0  # waiting out Retry-After, in order
    rig.outbox.deliver_due(now + timedelta(minutes=6))
    assert rig.outbox.queue.pending_message_count() == 0
    [message] = rig.slack.channel_messages("C0MLALERTS")
    replies = [m.text for m in rig.slack.thread("C0MLALERTS", message.ts)]
    assert replies[0].startswith("Rolling back") and any("Verified" in r for r in replies)
    record = rig.h.store.incident(incident)
    assert record is not None and record.status is IncidentStatus.MITIGATED


def test_socket_mode_press_acts_once_across_redeliveries(
    tmp_path: Path, registry_template: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scenario.fake_slack import APP_TOKEN
    from tests.support.daemon import wait_for
    from watcher.engine.daemon import Daemon

    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    rig = _rig(tmp_path, registry_template, slack, monkeypatch, action="approve")
    rig.http.stop()
    text = rig.h.workspace.config_path.read_text().replace(
        "  approvers:", "  app_token: ${SLACK_APP_TOKEN}\n  approvers:"
    )
    rig.h.workspace.config_path.write_text(text)
    daemon = Daemon(rig.h.workspace.config())
    daemon.prepare()
    daemon._start_socket_mode()
    try:
        assert daemon.socket_mode is not None
        wait_for(lambda: slack.socket_clients(), what="the Socket Mode connection")
        incident = rig.fire()
        payload = block_actions_payload(
            json.dumps({"incident": incident, "action": "rollback"}),
            "rollback",
            user=APPROVER,
            action_ts=f"{time.time():.6f}",
        )
        first = slack.send_interactive(payload)
        slack.send_interactive(payload)  # Slack redelivers when it thinks the ack was lost
        wait_for(lambda: first in slack.acks, what="the acknowledgement")
        wait_for(lambda: rig.h.dispatcher.queue.intents(), what="the approved intent")
        time.sleep(0.5)
        assert len(rig.h.dispatcher.queue.intents()) == 1
    finally:
        daemon.stop(grace=1)
        rig.h.close()


def test_unhealthy_rule_and_unreachable_database_are_told_once(rig: SlackRig) -> None:
    rig.h.tick(T0, 0.01)
    rig.h.workspace.break_source()
    for step in range(1, 7):
        rig.h.tick(T0 + timedelta(seconds=30 * step))
    rig.deliver()
    notices = [m.text for m in rig.slack.channel_messages("C0MLALERTS")]
    assert len([n for n in notices if "unhealthy" in n]) == 1
    assert RULE in notices[0]
    rig.outbox.database_unreachable("OperationalError")
    rig.outbox.database_unreachable("OperationalError")
    texts = [m.text for m in rig.slack.channel_messages("C0MLALERTS")]
    assert len([t for t in texts if "cannot reach its database" in t]) == 1
