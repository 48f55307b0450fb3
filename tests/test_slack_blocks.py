"""The incident message and its Slack rendering: buttons per state, units, evidence, golden blocks.

Golden files live in tests/golden/slack/; after a deliberate change, rewrite them with
UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import pytest

from scenario.fake_slack import block_actions_payload
from watcher.model import IncidentStatus, RollbackStatus, Severity, Signal
from watcher.notify.inbound.interactions import ButtonPress, parse_action
from watcher.notify.outbound.message import (
    ButtonAction,
    DriftColumn,
    IncidentFacts,
    TimelineEntry,
    available_actions,
    build_message,
    headline,
)
from watcher.notify.outbound.slack_blocks import render_incident, render_thread_reply

GOLDEN = Path(__file__).parent / "golden" / "slack"
OPENED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW = OPENED + timedelta(minutes=10)
QUERY = 'histogram_quantile(0.99, sum by (le) (rate(request_seconds_bucket{model="fraud-detector"}[5m])))'

BASE = IncidentFacts(
    id=42,
    rule_id="fraud-detector/p99-latency",
    model="fraud-detector",
    rule_name="p99-latency",
    target="fraud-prod",
    signal=Signal.LATENCY,
    severity=Severity.CRITICAL,
    status=IncidentStatus.OPEN,
    summary="p99 latency 0.312s is over 0.25s",
    value=0.3125,
    threshold=0.25,
    comparison="above",
    samples=1834,
    live_version="7",
    rollback_to="6",
    rolled_back_from=None,
    rollback_status=None,
    decision_reason=None,
    decision_detail=None,
    query=QUERY,
    prometheus_url="http://127.0.0.1:9090",
    drift_columns=(),
    report_url=None,
    opened_at=OPENED,
    resolved_at=None,
    acknowledged_by=None,
    silenced_until=None,
    undone_by=None,
    timeline=(),
)
ROLLED_BACK = replace(BASE, rolled_back_from="7", rollback_status=RollbackStatus.SUCCEEDED)

DRIFT_COLUMNS = (
    DriftColumn("amount", 0.0001, 0.05, "K-S p_value", drifted=True),
    DriftColumn("hour", 0.04, 0.05, "K-S p_value", drifted=True),
    DriftColumn("merchant_category", 0.42, 0.1, "PSI", drifted=True),
    DriftColumn("country", 0.15, 0.1, "Jensen-Shannon distance", drifted=True),
    DriftColumn("device", 0.31, 0.1, "Wasserstein distance (normed)", drifted=True),
    DriftColumn("channel", 0.11, 0.1, "PSI", drifted=True),
    DriftColumn("age", 0.6, 0.05, "K-S p_value", drifted=False),
    DriftColumn("score_bucket", 0.01, 0.1, "PSI", drifted=False),
)

STATES: dict[str, IncidentFacts] = {
    "open": replace(
        BASE,
        signal=Signal.ERROR_RATE,
        severity=Severity.WARNING,
        rule_name="error-rate",
        rule_id="fraud-detector/error-rate",
        summary="error rate 3.1% is over 2%",
        value=0.031,
        threshold=0.02,
        rollback_to=None,
        decision_reason="notify_only",
        query='sum(rate(requests_total{model="fraud-detector",status="error"}[5m]))',
    ),
    "awaiting_approval": replace(
        BASE,
        status=IncidentStatus.AWAITING_APPROVAL,
        decision_reason="cooldown",
        decision_detail="last rollback of fraud-prod 12m ago",
    ),
    "rolling_back": replace(BASE, status=IncidentStatus.ROLLING_BACK, rollback_status=RollbackStatus.RUNNING),
    "verifying": replace(ROLLED_BACK, status=IncidentStatus.VERIFYING),
    "mitigated": replace(ROLLED_BACK, status=IncidentStatus.MITIGATED),
    "escalated": replace(ROLLED_BACK, status=IncidentStatus.ESCALATED),
    "acknowledged": replace(ROLLED_BACK, status=IncidentStatus.ACKNOWLEDGED, acknowledged_by="U012ABCDEF"),
    "silenced": replace(
        BASE,
        status=IncidentStatus.SILENCED,
        decision_reason="paused",
        decision_detail="deploy freeze <ops> & co",
        silenced_until=NOW + timedelta(minutes=50),
    ),
    "resolved": replace(
        ROLLED_BACK,
        status=IncidentStatus.RESOLVED,
        acknowledged_by="U012ABCDEF",
        resolved_at=NOW + timedelta(minutes=20),
    ),
    "undone": replace(ROLLED_BACK, status=IncidentStatus.MITIGATED, undone_by="U0ONCALL1"),
    "drift": replace(
        BASE,
        rule_id="fraud-detector/input-drift",
        rule_name="input-drift",
        signal=Signal.DRIFT,
        severity=Severity.WARNING,
        summary="6 of 8 feature columns drifted",
        value=0.75,
        threshold=0.3,
        samples=None,
        query=None,
        prometheus_url=None,
        drift_columns=DRIFT_COLUMNS,
        report_url="http://127.0.0.1:9460/api/incidents/42/drift-report",
    ),
    "accuracy_sql": replace(
        BASE,
        rule_id="fraud-detector/accuracy-6h",
        rule_name="accuracy-6h",
        signal=Signal.ACCURACY,
        severity=Severity.INFO,
        status=IncidentStatus.AWAITING_APPROVAL,
        decision_reason="approval_required",
        summary="accuracy 0.9 is under 0.92",
        value=0.9,
        threshold=0.92,
        comparison="below",
        samples=812,
        query="SELECT avg(correct) AS value, count(*) AS samples\nFROM predictions WHERE ts >= :window_start",
        prometheus_url=None,
    ),
}


def _golden(name: str, payload: dict[str, Any]) -> None:
    path = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        return
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 and review the file"
    assert payload == json.loads(path.read_text())


@pytest.mark.parametrize("state", sorted(STATES))
def test_rendered_blocks_match_golden_file(state: str) -> None:
    payload = render_incident(build_message(STATES[state], NOW))
    _golden(state, {"text": payload.text, "blocks": payload.blocks})


def test_every_incident_status_has_a_golden_file() -> None:
    assert {s.value for s in IncidentStatus} <= {f.status.value for f in STATES.values()}


A, R, U, S = ButtonAction.ACK, ButtonAction.ROLLBACK, ButtonAction.UNDO, ButtonAction.SILENCE
IN_AN_HOUR = NOW + timedelta(hours=1)
PENDING = RollbackStatus.PENDING


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (BASE, (A, S)),
        (STATES["awaiting_approval"], (R, A, S)),
        (STATES["rolling_back"], (A, S)),
        (STATES["verifying"], (U, A, S)),
        (STATES["mitigated"], (U, A, S)),
        (STATES["escalated"], (U, A, S)),
        (STATES["acknowledged"], (U, S)),
        (STATES["resolved"], ()),
        (STATES["undone"], (A, S)),
        # a silence still running hides the button; one that ran out brings it back
        (STATES["silenced"], (A,)),
        (replace(STATES["silenced"], silenced_until=NOW), (A, S)),
        (replace(ROLLED_BACK, status=IncidentStatus.SILENCED, silenced_until=IN_AN_HOUR), (U, A)),
        # nothing to undo while the rollback has not succeeded
        (replace(BASE, status=IncidentStatus.ESCALATED, rollback_status=RollbackStatus.FAILED), (A, S)),
        (replace(ROLLED_BACK, status=IncidentStatus.ROLLING_BACK, rollback_status=PENDING), (A, S)),
        (replace(STATES["awaiting_approval"], acknowledged_by="U012ABCDEF"), (R, S)),
    ],
)
def test_available_actions(facts: IncidentFacts, expected: tuple[ButtonAction, ...]) -> None:
    assert available_actions(facts, NOW) == expected
    assert tuple(button.action for button in build_message(facts, NOW).actions) == expected


@pytest.mark.parametrize(
    ("signal", "value", "threshold", "comparison", "expected"),
    [
        (Signal.LATENCY, 0.3125, 0.25, "above", "312 ms > 250 ms"),
        (Signal.LATENCY, 1.5, 0.25, "above", "1.5 s > 250 ms"),
        (Signal.LATENCY, 0.2504, 0.25, "above", "250.4 ms > 250 ms"),  # never "250 ms > 250 ms"
        (Signal.ERROR_RATE, 0.0312, 0.02, "above", "3.12% > 2%"),
        (Signal.ACCURACY, 0.9, 0.92, "below", "90% < 92%"),
        (Signal.FEEDBACK, 0.0815, 0.08, "above", "8.15% > 8%"),
        (Signal.DRIFT, 0.4, 0.3, "above", "40% of columns drifted > 30%"),
        (Signal.CUSTOM, 1234.5, 1000.0, "above", "1,234 > 1,000"),
        (Signal.CUSTOM, 0.000123, 0.0001, "above", "0.000123 > 0.0001"),
        (Signal.LATENCY, None, 0.25, "above", "no value (> 250 ms breaches)"),
    ],
)
def test_headline_shows_value_against_threshold_in_the_signals_unit(
    signal: Signal,
    value: float | None,
    threshold: float,
    comparison: Literal["above", "below"],
    expected: str,
) -> None:
    facts = replace(BASE, signal=signal, value=value, threshold=threshold, comparison=comparison)
    assert headline(facts) == expected


def _blocks_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks)


def test_evidence_links_the_query_to_the_prometheus_graph() -> None:
    message = build_message(BASE, NOW)
    evidence = render_incident(message).blocks[3]["text"]["text"]
    url = evidence[evidence.index("<http") + 1 : evidence.index("|graph>")]
    parts = urlsplit(url.replace("&amp;", "&"))
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "http://127.0.0.1:9090/graph"
    assert parse_qs(parts.query) == {"g0.expr": [QUERY], "g0.tab": ["0"]}


def test_drift_evidence_lists_the_five_most_drifted_columns_and_the_report() -> None:
    evidence = render_incident(build_message(STATES["drift"], NOW)).blocks[3]["text"]["text"]
    named = [line.split("`")[1] for line in evidence.splitlines() if line.startswith("`")]
    # p-values drift downwards, distances upwards: ranked by how far past the threshold
    assert named == ["amount", "merchant_category", "device", "country", "hour"]
    assert "<http://127.0.0.1:9460/api/incidents/42/drift-report|Drift report>" in evidence
    fields = render_incident(build_message(STATES["drift"], NOW)).blocks[1]["fields"]
    assert {"type": "mrkdwn", "text": "*Drifted columns*\n6 of 8"} in fields


def test_buttons_carry_only_incident_and_action_and_parse_back() -> None:
    blocks = render_incident(build_message(STATES["awaiting_approval"], NOW)).blocks
    buttons = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert [b["action_id"] for b in buttons] == ["rollback", "ack", "silence"]
    for button in buttons:
        assert json.loads(button["value"]) == {"incident": 42, "action": button["action_id"]}
        payload = block_actions_payload(button["value"], button["action_id"], user="U012ABCDEF")
        press = parse_action(b"payload=" + json.dumps(payload).encode())
        assert isinstance(press, ButtonPress)
        assert (press.incident_id, press.action.value) == (42, button["action_id"])
    assert buttons[0]["style"] == "danger"
    assert "Roll fraud-prod back from 7 to 6?" in buttons[0]["confirm"]["text"]["text"]
    assert "confirm" not in buttons[1] and "style" not in buttons[1]


def test_undo_button_asks_for_confirmation() -> None:
    blocks = render_incident(build_message(STATES["verifying"], NOW)).blocks
    undo = next(b for b in blocks if b["type"] == "actions")["elements"][0]
    assert undo["action_id"] == "undo"
    assert undo["confirm"]["text"]["text"] == "Move fraud-prod back from 6 to 7?"


def test_user_text_is_escaped_and_long_queries_are_shortened() -> None:
    facts = replace(BASE, summary="p99 <b> & friends > 1s", query="x" * 5000 + "<")
    payload = render_incident(build_message(facts, NOW))
    overview = payload.blocks[1]["text"]["text"]
    assert "p99 &lt;b&gt; &amp; friends &gt; 1s" in overview
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in payload.blocks)
    assert "<b>" not in payload.text and "&lt;b&gt;" in payload.text


def test_thread_reply_names_time_actor_and_step() -> None:
    at = OPENED + timedelta(minutes=3)
    entry = TimelineEntry(at, "U012ABCDEF", "rollback_approved", "Approved <rollback>")
    assert render_thread_reply(entry) == (
        "<!date^1714564980^{date_short_pretty} {time_secs}|2024-05-01 12:03:00 UTC>"
        " · <@U012ABCDEF> · Approved &lt;rollback&gt;"
    )
    cli = TimelineEntry(OPENED, "alice", "manual_rollback", "Rolled back by hand")
    assert " · alice · " in render_thread_reply(cli)
