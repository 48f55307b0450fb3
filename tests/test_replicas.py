"""Several replicas on one PostgreSQL database: one evaluates and rolls back, a dead one is
taken over within two evaluation intervals, nothing happens twice, and a replica paused past its
leases writes nothing when it resumes."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.daemon import DaemonProcess, evaluations, wait_for
from tests.support.prometheus import PrometheusServer, binaries_missing
from tests.support.services import fresh_postgres_schema, require
from tests.support.workspace import DEFAULT_RULES, make_workspace
from watcher.engine.daemon import LEADER_LEASE
from watcher.engine.tick import utc_now
from watcher.model import RollbackStatus
from watcher.ruletest.prometheus import free_port
from watcher.store import tables as t
from watcher.store.database import open_engine
from watcher.store.fencing import STALE_WRITE_REFUSED
from watcher.store.group_leases import GroupLeases
from watcher.store.queue import WorkQueue
from watcher.store.repository import Store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RULES = DEFAULT_RULES.replace("for: 2m", "for: 4s").replace("every: 30s", "every: 2s")


def test_one_leader_takeover_and_a_single_rollback(tmp_path: Path, registry_template: Path) -> None:
    with fresh_postgres_schema() as schema:
        ws = make_workspace(
            tmp_path / "ws",
            registry_template,
            schema.url,
            rules=RULES,
            every="5s",
            timeout="1s",
            verify_after="3s",
        )
        engine = open_engine(schema.url)
        store, queue = Store(engine), WorkQueue(Store(engine))
        first = DaemonProcess(ws.config_path, tmp_path / "first.log")
        wait_for(lambda: queue.lease_holder(LEADER_LEASE, utc_now()), what="a leader")
        second = DaemonProcess(ws.replica_config("second"), tmp_path / "second.log")
        try:
            wait_for(lambda: "watcher is running" in second.output(), what="the second replica to start")
            wait_for(lambda: evaluations(first) + evaluations(second), what="evaluations")
            leader, follower = (first, second) if evaluations(first) else (second, first)
            wait_for(lambda: evaluations(leader) >= 3, what="evaluations")
            assert evaluations(follower) == 0
            ws.set_value(0.2)
            wait_for(lambda: ws.champion() == "2", what="the rollback", timeout=60)
            leader.kill9()
            wait_for(lambda: evaluations(follower) > 0, what="the takeover", timeout=10 + 5)
            ws.set_value(0.01)
            wait_for(
                lambda: store.incidents()[0].resolved_at, what="resolution by the new leader", timeout=60
            )
            assert len(store.incidents()) == 1
            assert len(queue.intents()) == 1
            assert follower.terminate() == 0
        finally:
            for daemon in (first, second):
                if daemon.alive():
                    daemon.kill9()
            engine.dispose()


def _stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP): state T in /proc."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("T")


def _promote(registry: Path, version: str) -> None:
    """An operator registers a new version and points the alias at it."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{registry}")
    client.create_model_version("fraud-detector", source=str(registry.parent))
    client.set_registered_model_alias("fraud-detector", "champion", version)


def _thread_texts(engine: sa.Engine) -> list[str]:
    """Every Slack thread reply queued (whether delivered or not)."""
    c = t.outbox_messages.c
    with engine.connect() as connection:
        rows = connection.execute(sa.select(c.payload).where(c.kind == "thread").order_by(c.id)).all()
    return [str((row[0] or {}).get("text", "")) for row in rows]


def _assert_none_of_its_writes_landed(
    champion: str, store: Store, engine: sa.Engine, incident_before: Any, threads_before: list[str]
) -> None:
    assert champion == "4"  # the operator's promotion stands: the alias was not moved back
    kinds = [event.kind for event in store.audit_events()]
    assert kinds.count("rollback_succeeded") == 1
    assert "rollback_refused" not in kinds and "rollback_failed" not in kinds
    [intent] = WorkQueue(store).intents()
    assert intent.status is RollbackStatus.SUCCEEDED
    incident = store.incidents()[0]
    assert incident.status is incident_before.status  # not reopened, not escalated
    assert incident.resolved_at == incident_before.resolved_at
    threads = _thread_texts(engine)
    assert threads[: len(threads_before)] == threads_before
    assert not [text for text in threads[len(threads_before) :] if "olled back" in text]
    assert sum("Rolled back" in text for text in threads) == 1  # no duplicate Slack reply


def test_a_replica_stopped_inside_the_adapter_call_writes_nothing_when_it_resumes(
    tmp_path: Path, registry_template: Path
) -> None:
    """The issue's reproduction: A stops inside the rollback's adapter call, B takes over, rolls
    back 3 -> 2 and verifies, an operator promotes 4, A resumes: none of A's writes lands."""
    with fresh_postgres_schema() as schema:
        ws = make_workspace(
            tmp_path / "ws",
            registry_template,
            schema.url,
            rules=RULES,
            every="2s",
            timeout="1s",
            verify_after="3s",
        )
        # The registry is a SQLite file both replicas open (no `mlflow server` here): in WAL mode a
        # reader that is stopped mid-read (A's other threads) does not lock B's writes out, as a
        # registry behind a server would not be locked by a stopped client.
        with sqlite3.connect(ws.registry) as registry:
            registry.execute("PRAGMA journal_mode=WAL")
        engine = open_engine(schema.url)
        store = Store(engine)
        stall = {"WATCHER_FAILPOINTS": "stop:mlflow_before_alias_write"}
        a = DaemonProcess(ws.config_path, tmp_path / "a.log", env=stall)
        wait_for(lambda: evaluations(a) >= 2, what="A evaluating")
        b = DaemonProcess(ws.replica_config("b"), tmp_path / "b.log")
        try:
            wait_for(lambda: "watcher is running" in b.output(), what="B to start")
            ws.set_value(0.2)
            wait_for(lambda: _stopped(a.process.pid), what="A to stop inside the adapter", timeout=60)
            wait_for(lambda: ws.champion() == "2", what="B's rollback", timeout=60)
            ws.set_value(0.01)
            wait_for(lambda: store.incidents()[0].resolved_at, what="B's verification", timeout=60)
            _promote(ws.registry, "4")
            incident_before, threads_before = store.incidents()[0], _thread_texts(engine)
            os.kill(a.process.pid, signal.SIGCONT)
            wait_for(
                lambda: any(e.kind == STALE_WRITE_REFUSED for e in store.audit_events()),
                what="A's refused write",
                timeout=30,
            )
            wait_for(lambda: 'claim="intent"} 1.0' in _scrape(a), what="A to count its refused write")
            _assert_none_of_its_writes_landed(ws.champion(), store, engine, incident_before, threads_before)
            assert a.terminate() == 0 and b.terminate() == 0
        finally:
            for daemon in (a, b):
                if daemon.alive():
                    os.kill(daemon.process.pid, signal.SIGCONT)
                    daemon.kill9()
            engine.dispose()


# --- many groups over several replicas ---------------------------------------------------------

MODELS = 300
INTERVAL = 2.0  # seconds


def _scrape(daemon: DaemonProcess) -> str:
    port = re.search(r"listen: 127\.0\.0\.1:(\d+)", daemon.config.read_text())
    assert port is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=5) as answer:
            return str(answer.read().decode())
    except OSError:
        return ""


def _per_rule(text: str) -> dict[str, float]:
    """Evaluations per rule on one replica's /metrics."""
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("watcher_rule_evaluations_total{"):
            rule = line.split('rule="', 1)[1].split('"', 1)[0]
            counts[rule] = counts.get(rule, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def _gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return -1.0


def _many_models_workspace(root: Path, database_url: str, prometheus_url: str) -> Path:
    (root / "rules").mkdir(parents=True)
    for i in range(MODELS):
        (root / "rules" / f"model-{i:03d}.yaml").write_text(
            f"model: model-{i:03d}\nrules:\n  - name: cheap\n    signal: error_rate\n"
            f"    prometheus: vector({i})\n    above: 100000\n"
        )
    config = root / "watcher.yaml"
    config.write_text(
        f"database: {database_url}\nrules: rules/\nprometheus:\n  url: {prometheus_url}\n"
        f"evaluation:\n  every: {INTERVAL:g}s\n  timeout: 1s\nhttp:\n  listen: 127.0.0.1:{free_port()}\n"
    )
    return config


def _replica(config: Path, name: str) -> Path:
    path = config.parent / f"{name}.yaml"
    path.write_text(
        re.sub(r"listen: 127\.0\.0\.1:\d+", f"listen: 127.0.0.1:{free_port()}", config.read_text())
    )
    return path


def _evaluations_over(replicas: list[DaemonProcess], seconds: float) -> list[float]:
    """How many evaluations each replica made over a window of `seconds`."""
    before = [sum(_per_rule(_scrape(r)).values()) for r in replicas]
    time.sleep(seconds)
    after = [sum(_per_rule(_scrape(r)).values()) for r in replicas]
    return [b - a for a, b in zip(before, after, strict=True)]


def _kill_and_time_takeover(victim: DaemonProcess, survivors: list[DaemonProcess]) -> tuple[int, float]:
    """kill -9 `victim`; (its rules, seconds until every one was evaluated by a survivor)."""
    orphaned = set(_per_rule(_scrape(victim)))
    seen = [_per_rule(_scrape(r)) for r in survivors]
    victim.kill9()
    killed_at = time.monotonic()

    def taken_over() -> bool:
        now = [_per_rule(_scrape(r)) for r in survivors]
        return all(
            any(counts.get(rule, 0) > old.get(rule, 0) for counts, old in zip(now, seen, strict=True))
            for rule in orphaned
        )

    wait_for(taken_over, what="the killed replica's groups evaluated elsewhere", timeout=60)
    return len(orphaned), time.monotonic() - killed_at


def test_three_replicas_share_300_groups_and_take_over_those_of_one_killed(tmp_path: Path) -> None:
    if binaries_missing() is not None:
        require("prometheus", str(binaries_missing()))
    with fresh_postgres_schema() as schema, PrometheusServer(tmp_path / "prometheus") as prometheus:
        config = _many_models_workspace(tmp_path / "ws", schema.url, prometheus.url)
        first = DaemonProcess(config, tmp_path / "r1.log")
        replicas = [first]
        try:
            wait_for(lambda: "watcher is running" in first.output(), what="the first replica")
            replicas += [DaemonProcess(_replica(config, f"r{n}"), tmp_path / f"r{n}.log") for n in (2, 3)]
            leases = GroupLeases(Store(schema.engine), "observer")

            def balanced(group: list[DaemonProcess]) -> bool:
                """Every group held, each replica its fair share (groups / replicas, rounded)."""
                held = [_gauge(_scrape(r), "watcher_groups_held") for r in group]
                groups = len(leases.holders())
                return groups > 0 and sum(held) == groups and max(held) - min(held) <= 1

            wait_for(lambda: balanced(replicas), what="each replica holding its third", timeout=60)
            split = _evaluations_over(replicas, 5 * INTERVAL)
            print(f"evaluations over five intervals, per replica: {split}")
            for count in split:
                assert abs(count - sum(split) / 3) <= 0.2 * sum(split) / 3, split
            victim, survivors = replicas[2], replicas[:2]
            rules, takeover = _kill_and_time_takeover(victim, survivors)
            print(f"{rules} rules of the killed replica evaluated elsewhere after {takeover:.1f}s")
            joined_at = time.monotonic()
            newcomer = DaemonProcess(_replica(config, "r4"), tmp_path / "r4.log")
            replicas.append(newcomer)
            wait_for(lambda: balanced([*survivors, newcomer]), what="the newcomer's share", timeout=60)
            print(f"the new replica holds its share {time.monotonic() - joined_at:.1f}s after it was started")
            holders = leases.holders()
            print(f"{len(holders)} evaluation groups for {MODELS} rule files")
            assert None not in holders.values()
            for replica in [*survivors, newcomer]:
                assert replica.terminate() == 0
        finally:
            for replica in replicas:
                if replica.alive():
                    replica.kill9()
