"""This replica's claims: its share of the evaluation groups, and the leader lease.

The groups are spread over the live replicas through PostgreSQL (watcher.store.group_leases);
the leader lease is held by one replica, which runs what must run once: the rollback worker's
sweep, the Slack outbox, the watching of the targets' live versions. Every claim has a fencing
token, and this module tells the daemon which claims it holds, with their tokens.

Leases are sized from the evaluation intervals: a pass every fifth of the shortest interval, a
lease lasting three passes. A replica that dies leaves leases that run out within three passes;
the next pass of another replica takes them, and their groups run within one interval of that:
under two intervals in all. A replica that stalls past its lease finds, when it resumes, that
it holds nothing any more (it stops evaluating before asking the database: its claims are held
valid only for one lease after the pass that renewed them, on the monotonic clock).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from watcher.engine.bind import RuntimeRule
from watcher.engine.scheduling import groups_of
from watcher.metrics import Metrics
from watcher.store.group_leases import GroupClaim, GroupLeases, Rebalance
from watcher.store.queue import WorkQueue
from watcher.store.repository import Store

log = logging.getLogger(__name__)

SHORTEST_PASS = timedelta(milliseconds=250)
LONGEST_PASS = timedelta(seconds=10)
PASSES_PER_INTERVAL = 5
PASSES_PER_LEASE = 3


@dataclass(frozen=True)
class LeaseTiming:
    pass_every: timedelta
    ttl: timedelta

    @classmethod
    def for_interval(cls, shortest: timedelta) -> LeaseTiming:
        pass_every = min(LONGEST_PASS, max(SHORTEST_PASS, shortest / PASSES_PER_INTERVAL))
        return cls(pass_every, pass_every * PASSES_PER_LEASE)


class ReplicaCoordinator:
    """Thread-safe: the lease pass writes, evaluation threads read."""

    def __init__(self, store: Store, queue: WorkQueue, replica: str, metrics: Metrics | None) -> None:
        self.replica = replica
        self.queue = queue
        self.leases = GroupLeases(store, replica)
        self.metrics = metrics
        self.timing = LeaseTiming.for_interval(timedelta(seconds=30))
        self._held: dict[str, int] = {}
        self._valid_until = 0.0  # monotonic: past it, no claim is trusted until the next pass
        self._lock = threading.Lock()

    # --- groups -------------------------------------------------------------------------------
    def rebalance(self, keys: Collection[str], now: datetime) -> Rebalance:
        started = time.monotonic()
        with self._lock:
            held = dict(self._held)
        result = self.leases.rebalance(keys, held, now, self.timing.ttl)
        with self._lock:
            self._held = dict(result.held)
            self._valid_until = started + self.timing.ttl.total_seconds()
        self._count(result)
        return result

    def claim(self, key: str) -> GroupClaim | None:
        """The claim to evaluate `key` under, if this replica holds it and its lease can still
        be current; the conditional write in the evaluation's transaction has the last word."""
        with self._lock:
            fence = self._held.get(key)
            if fence is None or time.monotonic() >= self._valid_until:
                return None
        return GroupClaim(key, self.replica, fence)

    def drop(self, key: str) -> None:
        """Forget a group whose claim a write found stale (another replica holds it now)."""
        with self._lock:
            self._held.pop(key, None)

    def held(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._held)

    def release_all(self) -> None:
        with self._lock:
            self._held = {}
        self.leases.release_all()

    def _count(self, result: Rebalance) -> None:
        if result.lost:
            log.warning(
                "%d evaluation groups were taken over by another replica",
                len(result.lost),
                extra={"event": "groups_lost", "replica": self.replica},
            )
        if result.acquired or result.released:
            log.info(
                "now evaluating %d groups (+%d, -%d; %d live replicas, share %d)",
                len(result.held),
                len(result.acquired),
                len(result.released),
                result.live_replicas,
                result.share,
                extra={"event": "groups_rebalanced", "replica": self.replica},
            )
        if self.metrics is None:
            return
        self.metrics.set_groups_held(len(result.held))
        self.metrics.lease_changes("group", "acquired", len(result.acquired))
        self.metrics.lease_changes("group", "lost", len(result.lost))
        self.metrics.lease_changes("group", "released", len(result.released))


class GroupIndex:
    """The groups of the loaded rules, computed once per rule set (a pass runs several times a
    second; grouping thousands of rules each time would be waste)."""

    def __init__(self) -> None:
        self._runtime: Mapping[str, RuntimeRule] | None = None
        self._groups: dict[str, tuple[str, ...]] = {}

    def groups(self, runtime: Mapping[str, RuntimeRule]) -> dict[str, tuple[str, ...]]:
        if runtime is not self._runtime:
            self._groups = groups_of(runtime)
            self._runtime = runtime
        return self._groups

    def rules_of(self, runtime: Mapping[str, RuntimeRule], keys: Collection[str]) -> dict[str, RuntimeRule]:
        """The rules of the groups `keys`: what this replica evaluates."""
        groups = self.groups(runtime)
        return {rule_id: runtime[rule_id] for key in keys for rule_id in groups.get(key, ())}


def shortest_interval(runtime: Mapping[str, RuntimeRule], default: timedelta) -> timedelta:
    return min((runtime_rule.rule.interval for runtime_rule in runtime.values()), default=default)
