"""The Slack Web API calls watcher makes, each answering with a typed result instead of raising.

slack-sdk's own retry handlers are switched off: the one retry policy lives in the dispatcher,
which needs to know at once whether a failure is worth retrying and how long Slack asked to wait.
The bot token is never part of a result, an error message or a log line written here.
"""

from __future__ import annotations

import functools
import http.client
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web import SlackResponse

DEFAULT_API_URL = "https://slack.com/api/"
# Slack's Tier 1 wait; used only when a 429 comes without a usable Retry-After.
_DEFAULT_RETRY_AFTER = timedelta(seconds=30)
# Slack's own trouble: worth another try later. Every other `error` is a mistake that will repeat.
_RETRYABLE_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "team_added_to_org"}
)


@dataclass(frozen=True)
class Delivered:
    channel: str  # the channel id Slack answered with (chat.update needs the id, not the name)
    ts: str


@dataclass(frozen=True)
class Found(Delivered):
    """A message an earlier attempt posted although its answer never came back: adopted."""


@dataclass(frozen=True)
class RateLimited:
    retry_after: timedelta


@dataclass(frozen=True)
class SendFailed:
    message: str
    retryable: bool


@dataclass(frozen=True)
class Members:
    user_ids: frozenset[str]


@dataclass(frozen=True)
class BotIdentity:
    team_id: str
    user_id: str
    bot_id: str | None


SendResult = Delivered | RateLimited | SendFailed
Failure = RateLimited | SendFailed

# Message metadata that marks what watcher posted with the outbox message it came from, so a post
# whose answer was lost (Slack slower than the timeout) is found in the channel instead of repeated.
OUTBOX_EVENT = "watcher_outbox"
_HISTORY_PAGES = 5  # of 200 messages each: far more than a channel gets while a post is retried
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")


class SlackClient:
    def __init__(self, token: str, *, api_url: str = DEFAULT_API_URL, timeout: timedelta) -> None:
        self._token = token
        self.timeout = timedelta(seconds=max(1, math.ceil(timeout.total_seconds())))
        self._web = WebClient(
            token=token,
            base_url=api_url,
            timeout=int(self.timeout.total_seconds()),
            retry_handlers=[],
        )
        self._channel_ids: dict[str, str] = {}
        self._lock = threading.Lock()

    def post_message(
        self,
        channel: str,
        text: str,
        blocks: Sequence[Mapping[str, Any]],
        thread_ts: str | None = None,
        key: str | None = None,
    ) -> SendResult:
        """Post; `key` (the outbox message's) goes into the message's metadata for find_posted."""
        metadata = {"event_type": OUTBOX_EVENT, "event_payload": {"key": key}} if key else None

        def call() -> SlackResponse:
            return self._web.chat_postMessage(
                channel=channel,
                text=text,
                blocks=_plain_dicts(blocks) or None,  # no blocks: a plain text message
                thread_ts=thread_ts,
                unfurl_links=False,  # a Prometheus link preview is noise in an incident channel
                unfurl_media=False,
                metadata=metadata,
            )

        return self._deliver("chat.postMessage", call, "ts")

    def find_posted(
        self, channel: str, key: str, since: datetime, thread_ts: str | None = None
    ) -> Found | Failure | None:
        """The message posted with `key` since `since` (in the thread `thread_ts`, or at the top
        of the channel), if Slack has it; None when it does not; a failure when it cannot tell."""
        channel_id = self.channel_id(channel)
        if isinstance(channel_id, RateLimited | SendFailed):
            return channel_id
        cursor: str | None = None
        for _ in range(_HISTORY_PAGES):
            page = self._history_page(channel_id, since, thread_ts, cursor)
            if isinstance(page, RateLimited | SendFailed):
                return page
            messages, cursor = page
            for message in messages:
                if _carries_key(message, key) and isinstance(message.get("ts"), str):
                    return Found(channel_id, message["ts"])
            if not cursor:
                return None
        return None

    def _history_page(
        self, channel_id: str, since: datetime, thread_ts: str | None, cursor: str | None
    ) -> tuple[list[Mapping[str, Any]], str | None] | Failure:
        oldest = f"{since.timestamp():.6f}"
        method = "conversations.replies" if thread_ts else "conversations.history"

        def call() -> SlackResponse:
            if thread_ts is not None:
                return self._web.conversations_replies(
                    channel=channel_id,
                    ts=thread_ts,
                    oldest=oldest,
                    include_all_metadata=True,
                    limit=200,
                    cursor=cursor,
                )
            return self._web.conversations_history(
                channel=channel_id, oldest=oldest, include_all_metadata=True, limit=200, cursor=cursor
            )

        answer = self._call(method, call)
        if isinstance(answer, RateLimited | SendFailed):
            return answer
        messages = answer.get("messages")
        if not isinstance(messages, list):
            return SendFailed(f"{method}: answer without messages", retryable=True)
        meta = answer.get("response_metadata")
        following = meta.get("next_cursor") if isinstance(meta, dict) else None
        return [m for m in messages if isinstance(m, dict)], following if isinstance(following, str) else None

    def channel_id(self, channel: str) -> str | Failure:
        """The id of a channel given by id or by name (`#ml-alerts`); history wants the id."""
        if _CHANNEL_ID.match(channel):
            return channel
        name = channel.removeprefix("#")
        with self._lock:
            if name in self._channel_ids:
                return self._channel_ids[name]
        cursor: str | None = None
        for _ in range(_HISTORY_PAGES * 4):
            answer = self._call("conversations.list", functools.partial(self._channel_page, cursor))
            if isinstance(answer, RateLimited | SendFailed):
                return answer
            for listed in answer.get("channels") or []:
                if (
                    isinstance(listed, dict)
                    and listed.get("name") == name
                    and isinstance(listed.get("id"), str)
                ):
                    with self._lock:
                        self._channel_ids[name] = listed["id"]
                    return str(listed["id"])
            meta = answer.get("response_metadata")
            cursor = meta.get("next_cursor") if isinstance(meta, dict) else None
            if not cursor:
                break
        return SendFailed(f"conversations.list: no channel named {name[:80]}", retryable=True)

    def _channel_page(self, cursor: str | None) -> SlackResponse:
        return self._web.conversations_list(
            types="public_channel,private_channel", exclude_archived=True, limit=1000, cursor=cursor
        )

    def update_message(
        self, channel: str, ts: str, text: str, blocks: Sequence[Mapping[str, Any]]
    ) -> SendResult:
        def call() -> SlackResponse:
            return self._web.chat_update(channel=channel, ts=ts, text=text, blocks=_plain_dicts(blocks))

        return self._deliver("chat.update", call, "ts")

    def post_ephemeral(self, channel: str, user: str, text: str) -> SendResult:
        def call() -> SlackResponse:
            return self._web.chat_postEphemeral(channel=channel, user=user, text=text)

        return self._deliver("chat.postEphemeral", call, "message_ts", default_channel=channel)

    def usergroup_members(self, group_id: str) -> Members | Failure:
        def call() -> SlackResponse:
            return self._web.usergroups_users_list(usergroup=group_id)

        answer = self._call("usergroups.users.list", call)
        if isinstance(answer, RateLimited | SendFailed):
            return answer
        users = answer.get("users")
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            return SendFailed("usergroups.users.list: answer without a list of users", retryable=True)
        return Members(frozenset(users))

    def auth_test(self) -> BotIdentity | Failure:
        answer = self._call("auth.test", self._web.auth_test)
        if isinstance(answer, RateLimited | SendFailed):
            return answer
        team_id, user_id, bot_id = answer.get("team_id"), answer.get("user_id"), answer.get("bot_id")
        if not isinstance(team_id, str) or not isinstance(user_id, str):
            return SendFailed("auth.test: answer without team_id or user_id", retryable=True)
        return BotIdentity(team_id, user_id, bot_id if isinstance(bot_id, str) else None)

    def _deliver(
        self, method: str, call: Callable[[], SlackResponse], ts_key: str, default_channel: str | None = None
    ) -> SendResult:
        answer = self._call(method, call)
        if isinstance(answer, RateLimited | SendFailed):
            return answer
        channel, ts = answer.get("channel", default_channel), answer.get(ts_key)
        if not isinstance(channel, str) or not isinstance(ts, str):
            return SendFailed(f"{method}: answer without channel or {ts_key}", retryable=True)
        return Delivered(channel, ts)

    def _call(self, method: str, call: Callable[[], SlackResponse]) -> Mapping[str, Any] | Failure:
        try:
            response = call()
        except SlackApiError as error:
            return self._api_failure(method, error.response)
        except SlackRequestError as error:  # a client-side misuse, such as a malformed base URL
            return SendFailed(self._clean(f"{method}: {error}"), retryable=False)
        except (URLError, OSError, http.client.HTTPException) as error:  # timeouts are OSErrors
            return SendFailed(self._clean(f"{method}: {_describe_transport_error(error)}"), retryable=True)
        data = response.data
        if not isinstance(data, dict):
            return SendFailed(f"{method}: answer is not a JSON object", retryable=True)
        return data

    def _api_failure(self, method: str, response: SlackResponse) -> Failure:
        status = response.status_code
        data = response.data if isinstance(response.data, dict) else {}
        error = str(data.get("error", ""))
        if status == 429 or error == "ratelimited":
            return RateLimited(retry_after_from(response.headers))
        if status >= 500 or error in _RETRYABLE_ERRORS:
            return SendFailed(self._clean(f"{method}: HTTP {status} {error[:200]}".rstrip()), retryable=True)
        return SendFailed(self._clean(f"{method}: {error or f'HTTP {status}'}"), retryable=False)

    def _clean(self, message: str) -> str:
        # Belt and braces: nothing in an answer should echo the token, but an error text is
        # written to the database and the logs, so make sure of it.
        return message.replace(self._token, "[redacted]") if self._token else message


def _carries_key(message: Mapping[str, Any], key: str) -> bool:
    metadata = message.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("event_type") != OUTBOX_EVENT:
        return False
    payload = metadata.get("event_payload")
    return isinstance(payload, dict) and payload.get("key") == key


def retry_after_from(headers: Mapping[str, Any]) -> timedelta:
    """Slack's Retry-After, in whole seconds."""
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if isinstance(raw, list):  # slack-sdk keeps some headers as lists
        raw = raw[0] if raw else None
    text = str(raw).strip() if raw is not None else ""
    return timedelta(seconds=int(text)) if text.isdigit() else _DEFAULT_RETRY_AFTER


def _plain_dicts(blocks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(block) for block in blocks]


def _describe_transport_error(error: Exception) -> str:
    if isinstance(error, URLError) and not isinstance(error.reason, str):
        error = error.reason if isinstance(error.reason, Exception) else error
    if isinstance(error, TimeoutError):
        return "timed out"
    return f"{type(error).__name__}: {error}"[:300]
