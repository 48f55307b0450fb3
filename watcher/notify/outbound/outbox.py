"""Delivers queued messages to Slack, in order, and never in the way of a rollback.

Messages are written to the outbox in the same transaction as the change they report. This
worker sends the oldest one; Slack down, slow or rate-limiting only delays the queue (Retry-After
honoured, retries on the one policy, never given up while Slack may come back).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from watcher.notify.outbound.chart_post import CHART_KEY, ChartPoster, build_chart_poster
from watcher.notify.outbound.facts import build_facts
from watcher.notify.outbound.message import build_message
from watcher.notify.outbound.slack_blocks import render_incident
from watcher.notify.outbound.slack_client import (
    Delivered,
    Found,
    RateLimited,
    SendFailed,
    SendResult,
    SlackClient,
)
from watcher.retry import RetryPolicy
from watcher.store.fencing import ClaimKind, Refusal, record_refusal
from watcher.store.queue import WorkQueue
from watcher.store.records import MessageKind, MessageStatus, OutboxMessage
from watcher.store.repository import Store

if TYPE_CHECKING:
    from watcher.metrics import Metrics
    from watcher.rules.config import WatcherConfig

log = logging.getLogger(__name__)

# Slack may be down for hours: keep trying, backing off to once a minute.
MESSAGE_RETRY = RetryPolicy(
    attempts=None, base_delay=timedelta(seconds=1), max_delay=timedelta(minutes=1), multiplier=2.0
)
CLAIM = timedelta(minutes=2)
# How far before a message was queued its earlier post is looked for (clocks differ a little).
LOOK_BACK = timedelta(minutes=5)


class OutboxWorker:
    def __init__(
        self,
        store: Store,
        client: SlackClient,
        channel: str,
        holder: str,
        *,
        prometheus_url: str | None,
        http_base_url: str | None,
        charts: ChartPoster | None = None,
    ) -> None:
        self.store = store
        self.queue = WorkQueue(store)
        self.client = client
        self.channel = channel
        self.holder = holder
        self.prometheus_url = prometheus_url
        self.http_base_url = http_base_url
        self.charts = charts  # the chart PNG in the incident's thread
        self.metrics: Metrics | None = None  # set by the daemon: fenced writes refused are counted
        self._db_notice_sent = False
        # After an unknown outcome (a timeout), wait this long before looking for the post: a
        # request Slack is still working on lands first.
        self.settle = 2 * client.timeout

    def deliver_due(self, now: datetime, limit: int = 50) -> int:
        delivered = 0
        for _ in range(limit):
            message = self.queue.claim_message(self.holder, now, CLAIM)
            if message is None:
                break
            if not self._deliver(message, now):
                break  # the head of the queue waits: later messages must not overtake it
            delivered += 1
            if self.charts is not None:
                self.charts.after_sent(message, now)
        return delivered

    def _deliver(self, message: OutboxMessage, now: datetime) -> bool:
        # Slack has no conditional write: re-check the claim right before sending, so a worker
        # that stalled after claiming does not post what its successor already posted.
        with self.store.transaction() as tx:
            current = self.queue.confirm_message(tx.connection, message)
        if not current:
            self._refused(message, "send", now)
            return False
        result = self._send(message, now)
        if result is None or isinstance(result, Delivered):
            self._mark(message, MessageStatus.SENT, now)
            return True
        if isinstance(result, RateLimited):
            self._retry_later(message, now + result.retry_after, "rate limited")
            return False
        if result.retryable:
            delay = MESSAGE_RETRY.next_attempt_at(message.attempts, now) or now + MESSAGE_RETRY.max_delay
            delay = max(delay, now + self.settle)
            self._retry_later(message, delay, result.message)
            log.warning(
                "slack delivery failed, will retry: %s", result.message, extra={"event": "slack_retry"}
            )
            return False
        self._mark(message, MessageStatus.FAILED, now, result.message)
        log.error("slack message dropped: %s", result.message, extra={"event": "slack_failed"})
        return True

    def _send(self, message: OutboxMessage, now: datetime) -> SendResult | None:
        if message.kind is MessageKind.NOTICE:
            return self._post(message, self.channel, str(message.payload.get("text", "")), [])
        if message.kind is MessageKind.EPHEMERAL:
            target = message.payload
            return self.client.post_ephemeral(
                str(target["channel"]), str(target["user"]), str(target["text"])
            )
        incident = self.store.incident(message.incident_id) if message.incident_id is not None else None
        if incident is None:
            return None  # nothing to say about an incident that does not exist
        if self.charts is not None and message.kind is MessageKind.THREAD and CHART_KEY in message.payload:
            return self.charts.send(message, incident, now)
        if message.kind is MessageKind.THREAD:
            facts_silenced = incident.silenced_until is not None and incident.silenced_until > now
            if facts_silenced:
                return None
            text = str(message.payload.get("text", ""))
            if incident.slack_ts is None:
                return self._post(message, self.channel, f"#{incident.id}: {text}", [])
            return self._post(message, incident.slack_channel or self.channel, text, [], incident.slack_ts)
        facts = build_facts(
            incident,
            self.store.timeline(incident.id),
            prometheus_url=self.prometheus_url,
            http_base_url=self.http_base_url,
            findings=self.store.findings([incident.id]).get(incident.id, []),
        )
        payload = render_incident(build_message(facts, now))
        if incident.slack_ts is None or incident.slack_channel is None:
            result = self._post(message, self.channel, payload.text, payload.blocks)
            if isinstance(result, Found):  # posted by an attempt whose answer was lost: bring it up to date
                result = self.client.update_message(result.channel, result.ts, payload.text, payload.blocks)
            if isinstance(result, Delivered):
                with self.store.transaction() as tx:
                    if self.queue.confirm_message(tx.connection, message):
                        tx.update_incident(incident.id, now, slack_channel=result.channel, slack_ts=result.ts)
            return result
        return self.client.update_message(
            incident.slack_channel, incident.slack_ts, payload.text, payload.blocks
        )

    def _post(
        self,
        message: OutboxMessage,
        channel: str,
        text: str,
        blocks: Sequence[Mapping[str, Any]],
        thread_ts: str | None = None,
    ) -> SendResult:
        """Post at most once per outbox message. A retried message may have landed although its
        answer was lost (Slack slower than the timeout): it is looked up by the key in its
        metadata and adopted. When Slack cannot say, nothing is posted; the message waits."""
        key = f"{message.id}:{message.incident_id or '-'}"
        if message.attempts > 1:
            since = message.created_at - LOOK_BACK
            found = self.client.find_posted(channel, key, since, thread_ts=thread_ts)
            if found is not None:
                return found
        return self.client.post_message(channel, text, blocks, thread_ts=thread_ts, key=key)

    def _mark(
        self, message: OutboxMessage, status: MessageStatus, now: datetime, error: str | None = None
    ) -> None:
        if not self.queue.mark_message(message, status, now, error):
            self._refused(message, f"mark_{status.value}", now)

    def _retry_later(self, message: OutboxMessage, at: datetime, error: str) -> None:
        if not self.queue.retry_message_later(message, at, error):
            self._refused(message, "retry_later", at)

    def _refused(self, message: OutboxMessage, write: str, now: datetime) -> None:
        """Another replica claimed the message since: this one's record of it is dropped."""
        refusal = Refusal(ClaimKind.MESSAGE, str(message.id), self.holder, message.fence, write)
        record_refusal(self.store, refusal, now, incident_id=message.incident_id)
        if self.metrics is not None:
            self.metrics.fenced_write_refused(ClaimKind.MESSAGE.value)
        log.warning("refused %s of outbox message %d: its claim is stale", write, message.id)

    def database_unreachable(self, detail: str) -> None:
        """Told once, straight to Slack: the outbox lives in the database that cannot be reached."""
        if self._db_notice_sent:
            return
        result = self.client.post_message(
            self.channel, f":rotating_light: watcher cannot reach its database: {detail}", []
        )
        self._db_notice_sent = isinstance(result, Delivered)

    def database_reachable(self) -> None:
        self._db_notice_sent = False


def build_outbox_worker(config: WatcherConfig, store: Store, holder: str) -> OutboxWorker | None:
    if config.slack is None:
        return None
    client = SlackClient(
        config.slack.token.get_secret_value(), api_url=config.slack.api_url, timeout=config.evaluation.timeout
    )
    return OutboxWorker(
        store,
        client,
        config.slack.channel,
        holder,
        prometheus_url=_prom_url(config),
        http_base_url=config.http.base_url,
        charts=build_chart_poster(config, store),
    )


def _prom_url(config: WatcherConfig) -> str | None:
    return config.prometheus.url.rstrip("/") if config.prometheus is not None else None


__all__ = ["OutboxWorker", "SendFailed", "build_outbox_worker"]
