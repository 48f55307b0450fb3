"""Who may press the buttons: approver entries, and a cache of Slack user-group members.

`slack.approvers` lists user ids (U…, W…) and user-group ids (S…). A group's members are asked of
Slack (usergroups.users.list) and kept for `ttl`, so a burst of presses costs one call. When a
refresh fails, the last answer is still used for `stale_grace`: an approval in the middle of an
incident should not fail because Slack rate-limited one lookup.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from watcher.notify.outbound.slack_client import Members, SlackClient

log = logging.getLogger(__name__)

# Returns the members of a group, or None when Slack could not tell (down, rate limited, no group).
FetchMembers = Callable[[str], frozenset[str] | None]
MembersOf = Callable[[str], frozenset[str] | None]

DEFAULT_TTL = timedelta(minutes=5)
DEFAULT_STALE_GRACE = timedelta(hours=1)


def is_user_group(entry: str) -> bool:
    """Slack user-group ids start with S; user ids with U (or W on Enterprise Grid)."""
    return entry.startswith("S")


@dataclass(frozen=True)
class _Entry:
    members: frozenset[str]
    fetched_at: datetime


class GroupMembersCache:
    """Thread-safe: HTTP handler threads and the Socket Mode workers share one cache."""

    def __init__(
        self,
        fetch: FetchMembers,
        *,
        ttl: timedelta = DEFAULT_TTL,
        stale_grace: timedelta = DEFAULT_STALE_GRACE,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._stale_grace = stale_grace
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def members_of(self, group_id: str, now: datetime) -> frozenset[str] | None:
        with self._lock:
            entry = self._entries.get(group_id)
        if entry is not None and now - entry.fetched_at < self._ttl:
            return entry.members
        # The network call happens outside the lock; two threads may both refresh, which is harmless.
        members = self._fetch(group_id)
        if members is not None:
            with self._lock:
                self._entries[group_id] = _Entry(members, now)
            return members
        if entry is not None and now - entry.fetched_at < self._ttl + self._stale_grace:
            return entry.members
        return None

    def lookup_at(self, now: datetime) -> MembersOf:
        """A `members_of` bound to one moment, in the shape `authorize` takes."""

        def members_of(group_id: str) -> frozenset[str] | None:
            return self.members_of(group_id, now)

        return members_of

    def forget(self, group_id: str) -> None:
        with self._lock:
            self._entries.pop(group_id, None)


def fetch_with(client: SlackClient) -> FetchMembers:
    """Group lookups through the Slack Web API; a failure is logged and answered with None."""

    def fetch(group_id: str) -> frozenset[str] | None:
        result = client.usergroup_members(group_id)
        if isinstance(result, Members):
            return result.user_ids
        log.warning("could not list the members of Slack user group %s: %s", group_id, result)
        return None

    return fetch
