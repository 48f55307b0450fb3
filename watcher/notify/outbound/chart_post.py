"""The chart in the incident's Slack thread: a PNG of the triggering rule around the breach, with
the threshold and the rollback marked, when the incident opens and again after verification,
linking to the incident's web page.

Charts travel through the outbox like every other message (a thread message whose payload names
the moment), so Slack being down delays them and never a rollback. They are queued after the
incident's message is delivered (the thread exists then), at most once per moment.
"""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import select

from watcher.notify.outbound.slack_client import Delivered, RateLimited, SendFailed, SendResult, SlackClient
from watcher.store import tables as t
from watcher.store.records import IncidentRecord, MessageKind, OutboxMessage
from watcher.store.repository import Store

if TYPE_CHECKING:
    from slack_sdk.web import SlackResponse

    from watcher.http.page_data import PageSources
    from watcher.rules.config import WatcherConfig

log = logging.getLogger(__name__)

CHART_KEY = "chart"  # a thread message with this payload key is a chart to upload
_VERIFIED_KINDS = frozenset({"rollback_verified", "escalated"})


class ChartMoment(StrEnum):
    OPENED = "opened"
    VERIFIED = "verified"


class SlackFiles(SlackClient):
    """Uploads through slack-sdk's files_upload_v2 (files.getUploadURLExternal, the upload URL,
    files.completeUploadExternal), with SlackClient's typed failures."""

    def upload_png(
        self, channel: str, thread_ts: str, filename: str, content: bytes, title: str, comment: str
    ) -> SendResult:
        def call() -> SlackResponse:
            return self._web.files_upload_v2(
                channel=channel, thread_ts=thread_ts, filename=filename, content=content,
                title=title, alt_txt=title, initial_comment=comment,
            )  # fmt: skip

        answer = self._call("files.upload_v2", call)
        if isinstance(answer, RateLimited | SendFailed):
            return answer
        return Delivered(channel, thread_ts)


class ChartPoster:
    def __init__(self, store: Store, files: SlackFiles, pages_url: str, sources: PageSources) -> None:
        self.store = store
        self.files = files
        self.pages_url = pages_url.rstrip("/")
        self.sources = sources

    def after_sent(self, message: OutboxMessage, now: datetime) -> None:
        """Queue the charts this delivery made due (once each)."""
        if message.incident_id is None or CHART_KEY in message.payload:
            return
        if message.kind not in (MessageKind.INCIDENT, MessageKind.THREAD):
            return
        incident = self.store.incident(message.incident_id)
        if incident is None or incident.slack_ts is None:
            return
        due = [ChartMoment.OPENED]
        if any(event.kind in _VERIFIED_KINDS for event in self.store.timeline(incident.id)):
            due.append(ChartMoment.VERIFIED)
        queued = self._queued(incident.id)
        missing = [moment for moment in due if moment.value not in queued]
        if missing:
            with self.store.transaction() as tx:
                for moment in missing:
                    tx.enqueue_message(incident_id=incident.id, kind=MessageKind.THREAD,
                                    payload={CHART_KEY: moment.value}, now=now)  # fmt: skip

    def _queued(self, incident_id: int) -> set[str]:
        statement = select(t.outbox_messages.c.payload).where(t.outbox_messages.c.incident_id == incident_id)
        with self.store.engine.connect() as connection:
            payloads = connection.execute(statement).scalars().all()
        return {str(p[CHART_KEY]) for p in payloads if isinstance(p, dict) and CHART_KEY in p}

    def send(self, message: OutboxMessage, incident: IncidentRecord, now: datetime) -> SendResult:
        if incident.slack_ts is None or incident.slack_channel is None:
            return SendFailed("the incident's message is not posted yet", retryable=True)
        moment = str(message.payload.get(CHART_KEY))
        png, title = self.render(incident, now)
        link = f"{self.pages_url}/incidents/{incident.id}"
        when = "after verification" if moment == ChartMoment.VERIFIED.value else "when it opened"
        comment = f"{title} {when}. <{link}|Incident page>"
        return self.files.upload_png(
            incident.slack_channel,
            incident.slack_ts,
            f"incident-{incident.id}-{moment}.png",
            png,
            title,
            comment,
        )

    def render(self, incident: IncidentRecord, now: datetime) -> tuple[bytes, str]:
        """The triggering rule's chart, as the incident page draws it, as a PNG."""
        from watcher.charts.layout import layout
        from watcher.charts.png import render_png
        from watcher.http.page_data import incident_rule_charts
        from watcher.incidents.json_view import incident_detail_json

        document = incident_detail_json(self.store, incident.id) or {}
        charts = incident_rule_charts(self.store, self.sources, incident, {**document, "findings": []}, now)
        return render_png(layout(charts[0], width=760, height=280)), f"{incident.rule_id} (#{incident.id})"


def build_chart_poster(
    config: WatcherConfig, store: Store, rules: PageSources | None = None
) -> ChartPoster | None:
    if config.slack is None:
        return None
    from watcher.charts.series import PrometheusRange
    from watcher.http.page_data import PageSources

    prometheus = (
        PrometheusRange(config.prometheus.url, config.prometheus.header_values(), config.evaluation.timeout)
        if config.prometheus is not None
        else None
    )
    files = SlackFiles(config.slack.token.get_secret_value(), api_url=config.slack.api_url,
                       timeout=config.evaluation.timeout)  # fmt: skip
    sources = rules or PageSources(rules=dict, prometheus=prometheus)
    return ChartPoster(store, files, config.http.base_url, sources)
