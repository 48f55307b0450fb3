"""Evaluation groups as APScheduler 3 jobs: one job per group, placed in its interval, its slots.

A group (see ruleset.evaluation_groups) is a shard of the Prometheus rules of one interval, from
whatever files (at most one batched request's worth of queries), or one SQL or drift rule. Its job
runs with coalesce and max_instances=1: a late run is counted as missed for each of its rules and
logged, never replayed in a burst. Jobs are kept in step with the loaded rules on every reload: a
group whose key stays keeps its job and its place in the interval.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.base import BaseScheduler

from watcher.engine.bind import RuntimeRule
from watcher.engine.ruleset import evaluation_groups
from watcher.metrics import Metrics

log = logging.getLogger(__name__)

GROUP_JOB = "eval:"  # scheduler job id prefix of an evaluation group


def scheduled_time(anchor: datetime, interval: timedelta, now: datetime) -> datetime:
    """The slot a tick belongs to, as Prometheus evaluates a group at its own aligned timestamps.

    Threads start a few milliseconds late; measuring at wall time would make a `for: 1m` seen
    at 59.99 s fire one whole interval late. A tick more than half an interval late uses `now`.
    """
    if now < anchor or interval <= timedelta(0):
        return now
    slot = anchor + interval * ((now - anchor) // interval)
    return slot if now - slot <= interval / 2 else now


def spread_offset(key: str, interval: timedelta) -> timedelta:
    """Where in its interval a group runs: a stable spread, as Prometheus offsets its groups, so
    that many groups with one interval do not all fire in the same instant."""
    slots = max(1, int(interval.total_seconds() * 1000))
    return timedelta(milliseconds=zlib.crc32(key.encode()) % slots)


def groups_of(runtime: Mapping[str, RuntimeRule]) -> dict[str, tuple[str, ...]]:
    """The evaluation groups by their stable key: what replicas share, one lease each."""
    return evaluation_groups(runtime)


def _present(
    groups: Mapping[str, tuple[str, ...]], runtime: Mapping[str, RuntimeRule]
) -> dict[str, tuple[str, ...]]:
    """The groups restricted to the rules of `runtime`, empty ones left out."""
    present = {
        key: tuple(rule_id for rule_id in members if rule_id in runtime) for key, members in groups.items()
    }
    return {key: members for key, members in present.items() if members}


class GroupJobs:
    """The scheduler's evaluation-group jobs; `run_group(key)` is what each job calls."""

    def __init__(self, scheduler: BaseScheduler, run_group: Callable[[str], None], metrics: Metrics) -> None:
        self.scheduler = scheduler
        self.run_group = run_group
        self.metrics = metrics
        self._lock = threading.Lock()
        self._anchors: dict[str, tuple[datetime, timedelta]] = {}
        self._groups: dict[str, tuple[str, ...]] = {}
        self._rules: set[str] = set()
        scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)

    def sync(
        self,
        runtime: Mapping[str, RuntimeRule],
        now: datetime,
        groups: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        """Add, keep or remove jobs so that every group has one: `groups` (the groups this replica
        holds, as computed over every loaded rule) or else the groups of `runtime`. A replica
        holding some groups passes them: grouping only its rules would shard them differently."""
        with self._lock:
            source = evaluation_groups(runtime) if groups is None else groups
            wanted = _present(source, runtime)
            for job in self.scheduler.get_jobs():
                key = job.id[len(GROUP_JOB) :]
                if job.id.startswith(GROUP_JOB) and not self._keeps(key, wanted, runtime):
                    job.remove()
                    self._anchors.pop(key, None)
            for rule_id in self._rules - runtime.keys():
                self.metrics.forget_rule(rule_id)
            self._groups = wanted
            self._rules = set(runtime)
            for key, members in wanted.items():
                if self.scheduler.get_job(GROUP_JOB + key) is not None:
                    continue  # same key, same interval: an existing job keeps its place
                interval = runtime[members[0]].rule.interval
                anchor = now + spread_offset(key, interval)
                self._anchors[key] = (anchor, interval)
                seconds = interval.total_seconds()
                self.scheduler.add_job(
                    self.run_group,
                    "interval",
                    seconds=seconds,
                    args=[key],
                    id=GROUP_JOB + key,
                    misfire_grace_time=max(1, int(seconds / 2)),
                    next_run_time=anchor,
                )

    def _keeps(
        self, key: str, wanted: Mapping[str, tuple[str, ...]], runtime: Mapping[str, RuntimeRule]
    ) -> bool:
        """Whether a group's job stays: the group is still wanted at the interval it was placed in
        (a Prometheus shard's key names its interval; a SQL or drift rule may change its own)."""
        if key not in wanted:
            return False
        placed = self._anchors.get(key)
        return placed is None or placed[1] == runtime[wanted[key][0]].rule.interval

    def members(self, key: str) -> tuple[str, ...]:
        return self._groups.get(key, ())

    def slot(self, key: str, interval: timedelta, now: datetime) -> datetime:
        """The evaluation time of the group's tick running at `now`."""
        anchor, every = self._anchors.get(key, (now, interval))
        return scheduled_time(anchor, every, now)

    def _on_missed(self, event: JobExecutionEvent) -> None:
        if not event.job_id.startswith(GROUP_JOB):
            return
        for rule_id in self.members(event.job_id[len(GROUP_JOB) :]):
            self.metrics.missed_run(rule_id)
            log.warning(
                "missed a scheduled evaluation of %s", rule_id, extra={"event": "missed_run", "rule": rule_id}
            )
