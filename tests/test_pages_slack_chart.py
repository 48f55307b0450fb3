"""The chart PNG in the incident's Slack thread, through slack-sdk's files_upload_v2 against the
local Slack (files.getUploadURLExternal, the upload URL, files.completeUploadExternal)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scenario.fake_slack import BOT_TOKEN, FakeSlack
from tests.conftest import StartPrometheus
from tests.support.pages_seed import latency_series, seed_story
from tests.test_incident_json import migrated_sqlite_store
from watcher.charts.series import PrometheusRange
from watcher.http.page_data import PageSources
from watcher.notify.outbound.chart_post import ChartPoster, SlackFiles
from watcher.notify.outbound.outbox import OutboxWorker
from watcher.notify.outbound.slack_client import SlackClient
from watcher.store.queue import enqueue_message
from watcher.store.records import MessageKind

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "pages"


def test_the_thread_gets_the_chart_when_opened_and_after_verification_once_each(
    tmp_path: Path, start_prometheus: StartPrometheus
) -> None:
    at = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
    prometheus = start_prometheus(series=latency_series(at))
    store = migrated_sqlite_store(tmp_path)
    story = seed_story(store, at)
    with FakeSlack() as slack:
        timeout = timedelta(seconds=5)
        sources = PageSources(rules=dict, prometheus=PrometheusRange(prometheus.url, {}, timeout))
        files = SlackFiles(BOT_TOKEN, api_url=slack.api_url, timeout=timeout)
        charts = ChartPoster(store, files, "https://watcher.example.com", sources)
        worker = OutboxWorker(
            store,
            SlackClient(BOT_TOKEN, api_url=slack.api_url, timeout=timeout),
            "#ml-alerts",
            "test",
            prometheus_url=None,
            http_base_url="https://watcher.example.com",
            charts=charts,
        )
        with store.transaction() as tx:
            enqueue_message(
                tx.connection, incident_id=story.incident_id, kind=MessageKind.INCIDENT, payload={}, now=at
            )
        now = datetime.now(UTC)
        worker.deliver_due(now)
        worker.deliver_due(now + timedelta(seconds=1))  # nothing new: each chart is posted once

        assert [f.filename for f in slack.files] == [
            f"incident-{story.incident_id}-opened.png",
            f"incident-{story.incident_id}-verified.png",
        ]
        incident = store.incident(story.incident_id)
        assert incident is not None and incident.slack_ts is not None
        for shared in slack.files:
            assert shared.data is not None and shared.data[:8] == b"\x89PNG\r\n\x1a\n"
            assert (shared.channel, shared.thread_ts) == (incident.slack_channel, incident.slack_ts)
            assert (
                f"<https://watcher.example.com/incidents/{story.incident_id}|Incident page>" in shared.comment
            )
        replies = slack.thread(incident.slack_channel or "", incident.slack_ts)
        assert len(replies) == 2
        assert len(slack.calls("files.getUploadURLExternal")) == 2
        assert len(slack.calls("files.completeUploadExternal")) == 2
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "slack-chart.png").write_bytes(slack.files[-1].data or b"")


def test_a_failed_upload_is_retried_later_by_the_outbox(tmp_path: Path) -> None:
    at = datetime.now(UTC) - timedelta(hours=1)
    store = migrated_sqlite_store(tmp_path)
    story = seed_story(store, at)
    with FakeSlack() as slack:
        timeout = timedelta(seconds=5)
        files = SlackFiles(BOT_TOKEN, api_url=slack.api_url, timeout=timeout)
        charts = ChartPoster(store, files, "http://127.0.0.1:9460", PageSources(rules=dict))
        worker = OutboxWorker(
            store,
            SlackClient(BOT_TOKEN, api_url=slack.api_url, timeout=timeout),
            "#ml-alerts",
            "test",
            prometheus_url=None,
            http_base_url=None,
            charts=charts,
        )
        with store.transaction() as tx:
            enqueue_message(
                tx.connection, incident_id=story.incident_id, kind=MessageKind.INCIDENT, payload={}, now=at
            )
        now = datetime.now(UTC)
        worker.deliver_due(now, limit=1)  # the incident's message only
        slack.fail_next(1, status=500)  # files.getUploadURLExternal fails once
        worker.deliver_due(now)
        assert slack.files == []
        worker.deliver_due(now + timedelta(minutes=2))
        assert len(slack.files) == 2
