"""The Slack inbound side, built on its own: button presses over the HTTP endpoint or Socket
Mode go to SlackActions, never through the outbound OutboxWorker (which only sends)."""

from __future__ import annotations

from watcher.notify.inbound.actions import SlackActions
from watcher.notify.outbound.slack_client import SlackClient
from watcher.rules.config import WatcherConfig
from watcher.store.repository import Store


def build_slack_inbound(config: WatcherConfig, store: Store) -> SlackActions | None:
    """What answers presses, when Slack is configured. It has a Slack client of its own (for
    auth.test and user groups), so a slow outbound delivery never holds up a press."""
    if config.slack is None:
        return None
    client = SlackClient(
        config.slack.token.get_secret_value(), api_url=config.slack.api_url, timeout=config.evaluation.timeout
    )
    prometheus_url = config.prometheus.url.rstrip("/") if config.prometheus is not None else None
    return SlackActions(
        store,
        client,
        config.slack.signing_secret.get_secret_value(),
        list(config.slack.approvers),
        prometheus_url=prometheus_url,
        http_base_url=config.http.base_url,
    )
