"""`watcher run`: the scheduler, the workers, the HTTP server and the signals, put together.

One APScheduler 3 job per evaluation group, as Prometheus runs rule groups: the Prometheus rules
of one interval, whatever their files, in shards of one request each (ruleset.evaluation_groups);
SQL and drift rules have a job each (coalesce, max_instances=1: a late run is counted as missed
for each of its rules and logged, never replayed in a burst). Replicas on one PostgreSQL database
share the groups, a lease each (watcher.engine.replicas): a replica schedules the jobs of the
groups it holds, and evaluates each under the group's fencing token. The replica holding the
`leader` lease runs the rollback sweep, the outbox and the watching of the targets.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from watcher.engine import systemd
from watcher.engine.reload_report import ReloadReport
from watcher.engine.replicas import GroupIndex, LeaseTiming, ReplicaCoordinator, shortest_interval
from watcher.engine.ruleset import RuleBook
from watcher.engine.scheduling import GroupJobs
from watcher.engine.tick import Engine, utc_now
from watcher.incidents.dispatch import RollbackDispatcher
from watcher.metrics import Metrics
from watcher.rules.config import WatcherConfig
from watcher.store import migrate
from watcher.store.database import is_sqlite, open_engine
from watcher.store.fencing import ClaimKind, FencedStore, Refusal, fenced_by, record_refusal
from watcher.store.group_leases import GroupClaim, reclaim_intents_of_dead_replicas
from watcher.store.queue import WorkQueue
from watcher.store.repository import Store
from watcher.targets import TargetRegistry

if TYPE_CHECKING:
    from watcher.notify.inbound.actions import SlackActions
    from watcher.notify.outbound.outbox import OutboxWorker

log = logging.getLogger(__name__)

LEADER_LEASE = "leader"
SHUTDOWN_GRACE = 20.0  # seconds from SIGTERM to exit, under systemd's TimeoutStopSec
# Freeing the rollbacks claimed by dead replicas and the gauges of open incidents and pending
# messages: at most this often (dispatching due rollbacks stays every second).
CHORES_EVERY = timedelta(seconds=5)
STOP_RESERVE = 3.0  # of the grace, kept for closing HTTP, Socket Mode, the lease and the database


class SingleReplicaError(RuntimeError):
    pass


def replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_is_dead_local_process(holder: str) -> bool:
    """A lease left by a process of this host that no longer exists (kill -9, crash)."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return int(pid_text) == os.getpid()


class Daemon:
    def __init__(
        self, config: WatcherConfig, *, env: Mapping[str, str] | None = None, dry_run: bool = False
    ) -> None:
        self.config = config
        self.dry_run = dry_run
        self.replica = replica_id()
        self.metrics = Metrics()
        self.db = open_engine(config.database)
        self.store = Store(self.db)
        self.queue = WorkQueue(self.store)
        self.targets = TargetRegistry(config.targets, config.base_dir)
        self.rules = RuleBook(config, env)
        self.reload_report = ReloadReport(self.metrics, self.store, config.base_dir)
        # The engine's writes are made under the claim of the group being evaluated (fenced).
        self.engine = Engine(FencedStore(self.db), self.targets, config.safety, self.metrics, dry_run=dry_run)
        self.coordinator = ReplicaCoordinator(self.store, self.queue, self.replica, self.metrics)
        self.groups = GroupIndex()
        self._held_rules: frozenset[str] = frozenset()  # the rules of the groups scheduled here
        self.leader_fence: int | None = None
        self.dispatcher = RollbackDispatcher(
            self.store, self.targets, self.replica, config.safety.verify_after, self.metrics
        )
        self.outbox: OutboxWorker | None = None
        self.slack_inbound: SlackActions | None = None
        if config.slack is not None:  # the Slack client is imported only when Slack is configured
            from watcher.notify.inbound.build import build_slack_inbound
            from watcher.notify.outbound.outbox import build_outbox_worker

            self.outbox = build_outbox_worker(config, self.store, self.replica)
            # Presses come in apart from what goes out: the inbound side is built here.
            self.slack_inbound = build_slack_inbound(config, self.store)
            if self.outbox is not None:
                self.outbox.metrics = self.metrics
        self.scheduler = BackgroundScheduler(
            executors={
                "default": ThreadPoolExecutor(max_workers=8),
                "workers": ThreadPoolExecutor(max_workers=3),
                # Leases have a thread of their own: a slow adapter call must not let them lapse.
                "leases": ThreadPoolExecutor(max_workers=1),
            },
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone="UTC",
        )
        self.is_leader = False
        self.last_beat = time.monotonic()
        self._chores_at = datetime.min.replace(tzinfo=UTC)  # see _work
        self.ready = False
        self.stopping = threading.Event()
        self.http: Any = None
        self.socket_mode: Any = None
        self.jobs = GroupJobs(self.scheduler, self._tick, self.metrics)

    # --- start-up ----------------------------------------------------------------------------
    def prepare(self) -> None:
        migrate.upgrade(self.db)
        self.rules.load()
        self._size_leases()
        if not self._take_leadership(utc_now()) and is_sqlite(self.config.database):
            raise SingleReplicaError(
                "another watcher holds this SQLite database; SQLite means one replica "
                "(use PostgreSQL for several)"
            )
        self.engine.load_states(self.rules.current.runtime)
        self._rules_loaded()

    def _size_leases(self) -> None:
        """Leases sized from the shortest evaluation interval: takeover within two intervals.
        After a reload that changed it, the lease pass runs at the new pace."""
        interval = shortest_interval(self.rules.current.runtime, self.config.evaluation.every)
        timing = LeaseTiming.for_interval(interval)
        changed = timing != self.coordinator.timing
        self.coordinator.timing = timing
        if changed and self.scheduler.get_job("lease") is not None:
            self.scheduler.reschedule_job(
                "lease", trigger="interval", seconds=timing.pass_every.total_seconds()
            )

    def _take_leadership(self, now: datetime) -> bool:
        """Take or keep the leader lease (the rollback sweep, the outbox, target watching)."""
        ttl = self.coordinator.timing.ttl
        fence = self.queue.claim_lease(LEADER_LEASE, self.replica, now, ttl)
        if fence is None:
            holder = self.queue.lease_holder(LEADER_LEASE, now)
            if holder is None or not _holder_is_dead_local_process(holder):
                if self.is_leader:
                    log.warning("lost the leader lease to %s", holder)
                    self.metrics.lease_changes("leader", "lost")
                self.is_leader, self.leader_fence = False, None
                return False
            self.queue.release_lease(LEADER_LEASE, holder)
            fence = self.queue.claim_lease(LEADER_LEASE, self.replica, now, ttl)
            if fence is None:
                return False
        if fence != self.leader_fence:
            log.info("this replica leads", extra={"event": "leader", "replica": self.replica})
            self.metrics.lease_changes("leader", "acquired")
            # Intents claimed by replicas that are gone are taken over now; those of live
            # replicas stay theirs (any replica dispatches the rollbacks it decides). On SQLite
            # there is one replica: whoever claimed before is gone.
            if is_sqlite(self.config.database):
                self.queue.reclaim_orphans(self.replica, now)
            else:
                reclaim_intents_of_dead_replicas(self.store, now)
        self.is_leader, self.leader_fence = True, fence
        return True

    def start(self) -> None:
        self.prepare()
        self._lease_pass()
        every = self.config.evaluation.every.total_seconds()
        self.scheduler.add_job(
            self._lease_pass,
            "interval",
            seconds=self.coordinator.timing.pass_every.total_seconds(),
            id="lease",
            executor="leases",
        )
        self.scheduler.add_job(self._work, "interval", seconds=1, id="work", executor="workers")
        self.scheduler.add_job(
            self._watch_targets,
            "interval",
            seconds=every,
            id="targets",
            executor="workers",
            next_run_time=datetime.now().astimezone(),
        )
        self.scheduler.add_job(self._check_reload, "interval", seconds=2, id="reload", executor="workers")
        self.scheduler.add_job(self._heartbeat, "interval", seconds=1, id="heartbeat", executor="workers")
        self._start_http()
        self.scheduler.start()
        self._start_socket_mode()
        self.ready = True
        systemd.notify("READY=1")
        log.info(
            "watcher is running",
            extra={
                "event": "ready",
                "rules": len(self.rules.current.runtime),
                "replica": self.replica,
                "dry_run": self.dry_run,
            },
        )

    def _start_http(self) -> None:
        from watcher.http.context import HttpContext
        from watcher.http.serve import HttpServer

        slack_handler = self.slack_inbound.handle_http if self.slack_inbound is not None else None
        context = HttpContext(
            store=self.store,
            metrics=self.metrics,
            loop_alive=self.loop_alive,
            ready=self.readiness,
            slack_handler=slack_handler,
            report_for=self.drift_report,
        )
        from watcher.http.pages import daemon_page_routes

        pages = daemon_page_routes(self.config, lambda: self.rules.current.runtime)
        self.http = HttpServer(self.config.http.host, self.config.http.port, context, extra=[pages])
        self.http.start()

    def _start_socket_mode(self) -> None:
        """Button presses over Socket Mode when slack.app_token is set (no public endpoint needed)."""
        slack = self.config.slack
        if slack is None or slack.app_token is None or self.slack_inbound is None:
            return
        from watcher.notify.inbound.interactions import ButtonPress, SocketModeReceiver, start_socket_mode
        from watcher.notify.outbound.slack_client import SendFailed

        actions = self.slack_inbound

        def on_press(press: ButtonPress) -> None:
            actions.handle_press(press, utc_now())

        started = start_socket_mode(slack.app_token.get_secret_value(), on_press, api_url=slack.api_url)
        if isinstance(started, SendFailed):
            log.error("Socket Mode unavailable: %s", started.message, extra={"event": "socket_mode_failed"})
        elif isinstance(started, SocketModeReceiver):
            self.socket_mode = started
            log.info("receiving Slack presses over Socket Mode", extra={"event": "socket_mode"})

    # --- jobs -----------------------------------------------------------------------------------
    def _schedule_rules(self, *, reload_states: bool = False) -> None:
        """Jobs for the groups this replica holds; with `reload_states`, their rule states read
        again from the database first (another replica evaluated them until now)."""
        runtime, keys = self.rules.current.runtime, self.coordinator.held()
        held = self.groups.rules_of(runtime, keys)
        # A reload can move a rule into a shard this replica holds: its state is the database's.
        if reload_states or held.keys() - self._held_rules:
            self.engine.load_states(held)
        self._held_rules = frozenset(held)
        groups = self.groups.groups(runtime)  # over every rule: the shards the leases name
        self.jobs.sync(held, utc_now(), {key: groups[key] for key in keys if key in groups})

    def _tick(self, key: str) -> None:
        claim = self.coordinator.claim(key)
        if claim is None or self.stopping.is_set():
            return
        current = self.rules.current.runtime
        runtimes = [current[rule_id] for rule_id in self.jobs.members(key) if rule_id in current]
        if not runtimes:
            return
        with fenced_by(claim) as fence:
            results = self.engine.tick_group(
                runtimes, self.jobs.slot(key, runtimes[0].rule.interval, utc_now())
            )
        if fence.refused:
            self._group_refused(claim)
            return
        opened = any(result.incident_opened is not None for result in results)
        if opened and not self.dry_run:
            # Act now rather than on the worker's next pass: the rollback is what matters.
            try:
                self.dispatcher.run_due(utc_now())
            except Exception:
                log.exception("dispatch after an incident failed", extra={"event": "dispatch_failed"})
        self.last_beat = time.monotonic()

    def _group_refused(self, claim: GroupClaim) -> None:
        """Another replica holds the group now: this one's evaluation wrote nothing; say so."""
        self.coordinator.drop(claim.key)
        self.metrics.fenced_write_refused(ClaimKind.GROUP.value)
        refusal = Refusal(ClaimKind.GROUP, claim.key, self.replica, claim.fence, "evaluation")
        try:
            record_refusal(self.store, refusal, utc_now())
        except Exception:
            log.exception("recording a refused write failed")
        log.warning("evaluation of %s refused: another replica holds it now", claim.key)

    def _lease_pass(self) -> None:
        """Renew, release and claim leases; start or stop the jobs of groups that moved."""
        if self.stopping.is_set():
            return
        now = utc_now()
        try:
            self._take_leadership(now)
            keys = self.groups.groups(self.rules.current.runtime)
            result = self.coordinator.rebalance(keys, now)
            if result.acquired or result.lost or result.released:
                self._schedule_rules(reload_states=bool(result.acquired))
        except Exception:
            log.exception("lease pass failed", extra={"event": "lease_failed"})
            self.is_leader = False

    def _work(self) -> None:
        if not self.is_leader or self.stopping.is_set():
            return
        # Every unit of work re-checks the claim in the database, not a flag in memory.
        fence = self.leader_fence
        if fence is None or not self.queue.confirm_lease(LEADER_LEASE, self.replica, fence):
            self.is_leader = False
            return
        now = utc_now()
        try:
            # The chores that need not run every second: each is a query, and an idle daemon's
            # CPU is mostly its queries.
            chores = not now - CHORES_EVERY < self._chores_at <= now
            if chores:
                self._chores_at = now
                reclaim_intents_of_dead_replicas(self.store, now)
            if not self.dry_run:
                self.dispatcher.run_due(now)
            if self.outbox is not None:
                self.outbox.deliver_due(now)
            if chores:
                self.metrics.set_open_incidents(self.store.count_open_incidents())
                self.metrics.set_outbox_pending(self.queue.pending_message_count())
            if self.outbox is not None:
                self.outbox.database_reachable()
        except Exception as error:
            log.exception("worker pass failed", extra={"event": "worker_failed"})
            if self.outbox is not None and not self.store.ping():
                self.outbox.database_unreachable(type(error).__name__)
        self.last_beat = time.monotonic()

    def _watch_targets(self) -> None:
        """Record the live version of every target: the history known-good choices come from."""
        fence = self.leader_fence
        if not self.is_leader or fence is None:
            return
        now = utc_now()
        for name in self.targets.names:
            version = self.targets.live_version(name)
            if version is not None:
                with self.store.transaction() as tx:
                    # Written under the leader lease: not by a leader that lost it meanwhile.
                    if not self.queue.confirm_lease(LEADER_LEASE, self.replica, fence, tx.connection):
                        self.is_leader = False
                        return
                    tx.record_live_version(name, version, now)

    def _check_reload(self) -> None:
        if self.rules.changed_on_disk():
            self.reload()

    def reload(self) -> None:
        previous = self.rules.current.runtime
        try:
            loaded = self.rules.load()
        except Exception:
            log.exception("reload failed; the previous rules keep running")
            return
        self.engine.carry_states(loaded.runtime, previous)
        self._size_leases()
        self._schedule_rules()
        self._rules_loaded()
        log.info(
            "rules reloaded",
            extra={"event": "reload", "rules": len(loaded.runtime), "findings": len(loaded.findings)},
        )

    def _rules_loaded(self) -> None:
        """Every load's outcome in /metrics; a bad one told in Slack once, by the leader."""
        announce = self.is_leader and self.config.slack is not None
        try:
            self.reload_report.loaded(self.rules.current.findings, utc_now(), announce=announce)
        except Exception:  # the database may be down: the notice is tried at the next load
            log.exception("reporting the rule load failed", extra={"event": "reload_report_failed"})

    def _heartbeat(self) -> None:
        self.last_beat = max(self.last_beat, time.monotonic()) if self.scheduler.running else self.last_beat
        interval = systemd.watchdog_interval()
        if interval is not None and self.loop_alive():
            systemd.notify("WATCHDOG=1")

    def drift_report(self, incident_id: int) -> str | None:
        """Evidently's HTML report for a drift incident, for the data of its evaluation."""
        incident = self.store.incident(incident_id)
        if incident is None or incident.signal != "drift":
            return None
        runtime = self.rules.current.runtime.get(incident.rule_id)
        evaluated = incident.evidence.get("evaluated_at")
        render = getattr(runtime.source, "render_report", None) if runtime is not None else None
        if render is None or not isinstance(evaluated, str):
            return None
        html = render(datetime.fromisoformat(evaluated))
        return html if isinstance(html, str) else None

    # --- health ---------------------------------------------------------------------------------
    def loop_alive(self) -> bool:
        return self.scheduler.running and time.monotonic() - self.last_beat < 30

    def readiness(self) -> tuple[bool, str]:
        if not self.ready:
            return False, "starting"
        if not self.store.ping():
            return False, "database unreachable"
        return True, f"{len(self.rules.current.runtime)} rules loaded"

    # --- stop -----------------------------------------------------------------------------------
    def stop(self, grace: float = SHUTDOWN_GRACE - STOP_RESERVE) -> bool:
        """Stop taking work, let running jobs finish for up to `grace` seconds, close the rest.
        False when a job (an adapter call blocked on its target, say) is still running."""
        self.stopping.set()
        systemd.notify("STOPPING=1")
        finished = True
        if self.scheduler.running:
            self.scheduler.pause()
            done = threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True}, daemon=True)
            done.start()
            done.join(grace)
            finished = not done.is_alive()
        if self.http is not None:
            self.http.stop()
        if self.socket_mode is not None:
            self.socket_mode.stop()
        self.coordinator.release_all()
        if self.is_leader:
            self.queue.release_lease(LEADER_LEASE, self.replica)
        self.db.dispose()
        return finished


def run_forever(daemon: Daemon) -> int:
    """Start, wait for SIGTERM/SIGINT (a second one exits at once), stop, exit 0."""
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop_requested.is_set():
            os._exit(1)
        stop_requested.set()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=daemon.reload, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    daemon.start()
    while not stop_requested.wait(0.5):
        pass
    log.info("stopping", extra={"event": "stopping"})
    if not daemon.stop():
        exit_past_blocked_work()
    return 0


def exit_past_blocked_work() -> None:
    """Exit now, although a worker thread is still inside a call (the interpreter would wait for
    it at exit, past systemd's stop timeout and into its SIGKILL). The rollback intent it works
    on is reconciled against the target after the restart, as after a crash."""
    log.warning(
        "exiting with work still running after the grace period; it is reconciled after restart",
        extra={"event": "stop_forced", "grace_seconds": SHUTDOWN_GRACE},
    )
    logging.shutdown()  # flush the log before leaving without the interpreter's own clean-up
    os._exit(0)


def run_once(daemon: Daemon) -> int:
    """Evaluate every rule once, carry out what that decided, deliver messages, exit."""
    daemon.prepare()
    daemon.engine.tick_group(list(daemon.rules.current.runtime.values()), utc_now())
    if not daemon.dry_run:
        daemon.dispatcher.run_due(utc_now())
    if daemon.outbox is not None:
        daemon.outbox.deliver_due(utc_now())
    daemon.queue.release_lease(LEADER_LEASE, daemon.replica)
    return 1 if daemon.rules.current.findings else 0
