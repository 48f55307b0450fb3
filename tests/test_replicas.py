"""Several replicas on one PostgreSQL database: one evaluates and rolls back, a dead one is
taken over within two evaluation intervals, and nothing happens twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, evaluations, wait_for
from tests.support.mlflow_registry import build_registry
from tests.support.services import fresh_postgres_schema
from tests.support.workspace import DEFAULT_RULES, make_workspace
from watcher.engine.daemon import LEADER_LEASE
from watcher.engine.tick import utc_now
from watcher.store.database import open_engine
from watcher.store.queue import WorkQueue
from watcher.store.repository import Store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RULES = DEFAULT_RULES.replace("for: 2m", "for: 4s").replace("every: 30s", "every: 2s")


def test_one_leader_takeover_and_a_single_rollback(tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    template = build_registry(tmp_path / "tpl")
    with fresh_postgres_schema() as schema:
        ws = make_workspace(
            tmp_path / "ws", template, schema.url, rules=RULES, every="5s", timeout="1s", verify_after="3s"
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
