"""`watcher run` as a real process: restarts, kill -9 at several points, reloads, SIGTERM."""

from __future__ import annotations

import os
import signal
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.daemon import FAST_RULES, DaemonProcess, Db, evaluations, fast_workspace, wait_for
from tests.support.slow_switch import finished_intent, slow_switch_stand
from watcher.decisions.evaluation import RuleStatus
from watcher.model import RollbackStatus, RuleState
from watcher.store import migrate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RULE = "fraud-detector/error-rate"


def test_kill9_while_pending_keeps_state_and_fires_once(
    tmp_path: Path, registry_template: Path, database_url: str
) -> None:
    ws = fast_workspace(
        tmp_path, registry_template, database_url, rules=FAST_RULES.replace("for: 6s", "for: 8s")
    )
    ws.set_value(0.2)
    daemon = DaemonProcess(ws.config_path, tmp_path / "daemon.log")
    db = Db(database_url)
    try:
        pending = wait_for(lambda: _state_if(db, RuleState.PENDING), what="pending state")
        daemon.kill9()
        assert db.store.incidents() == []
        daemon = DaemonProcess(ws.config_path, tmp_path / "daemon.log")
        incident = wait_for(lambda: db.store.incidents(), what="the incident", timeout=90)[0]
        restored = db.store.rule_states()[RULE].status
        assert restored.active_since == pending.active_since  # the `for` clock survived the kill
        assert pending.active_since is not None
        assert incident.opened_at >= pending.active_since + timedelta(seconds=8)
        wait_for(lambda: ws.champion() == "2", what="the rollback")
        assert len(db.store.incidents()) == 1
        assert daemon.terminate() == 0
    finally:
        if daemon.alive():
            daemon.kill9()
        db.close()


def _state_if(db: Db, state: RuleState) -> RuleStatus | None:
    stored = db.store.rule_states().get(RULE)
    return stored.status if stored is not None and stored.status.state is state else None


@pytest.mark.parametrize("failpoint", ["before_adapter", "after_adapter"])
def test_crash_around_the_adapter_rolls_back_exactly_once(
    tmp_path: Path, registry_template: Path, failpoint: str
) -> None:
    url = f"sqlite:///{tmp_path / 'watcher.db'}"
    ws = fast_workspace(tmp_path, registry_template, url, rules=FAST_RULES.replace("for: 6s", "for: 1s"))
    ws.set_value(0.2)
    crashing = DaemonProcess(ws.config_path, tmp_path / "daemon.log", env={"WATCHER_FAILPOINTS": failpoint})
    assert crashing.wait_exit(timeout=90) == 137
    db = Db(url)
    try:
        [intent] = db.queue.intents()
        assert intent.status is RollbackStatus.RUNNING  # claimed, never finished
        assert ws.champion() == ("3" if failpoint == "before_adapter" else "2")
        daemon = DaemonProcess(ws.config_path, tmp_path / "daemon.log")
        try:
            done = wait_for(lambda: finished_intent(db), what="the intent to finish", timeout=90)
            assert done.status is RollbackStatus.SUCCEEDED
            assert ws.champion() == "2"
            assert len(db.queue.intents()) == 1
            kinds = [e.kind for e in db.store.audit_events()]
            assert kinds.count("rollback_requested") == 1
            assert kinds.count("rollback_succeeded") == 1
            assert kinds.count("rollback_attempt") == 2  # one before the crash, one after
            if failpoint == "after_adapter":
                assert "reconciled" in (done.result_detail or "")
            assert daemon.terminate() == 0
        finally:
            if daemon.alive():
                daemon.kill9()
    finally:
        db.close()


@pytest.mark.parametrize("orphan", ["finishes", "dies"])
def test_kill9_during_a_slow_adapter_call_rolls_back_once(
    tmp_path: Path, registry_template: Path, orphan: str
) -> None:
    """The daemon dies while the adapter's command runs. Either the command still completes (the
    restart finds the target switched and records it) or it dies too (the restart switches again):
    in both cases the switch happens exactly once and the audit trail is complete."""
    stand = slow_switch_stand(tmp_path, registry_template, delay=2 if orphan == "finishes" else 600)
    ws, switch, db = stand.workspace, stand.switch, stand.db
    daemon = DaemonProcess(ws.config_path, tmp_path / "daemon.log")
    try:
        pid = int(wait_for(switch.started_pid, what="the command to start"))
        daemon.kill9()
        if orphan == "finishes":
            wait_for(lambda: switch.live() == "6", what="the orphaned command to finish")
        else:
            os.kill(pid, signal.SIGKILL)
        switch.set_delay(0)
        daemon = DaemonProcess(ws.config_path, tmp_path / "daemon.log")
        done = wait_for(lambda: finished_intent(db), what="the intent to finish", timeout=90)
        assert done.status is RollbackStatus.SUCCEEDED
        assert switch.switches() == ["6"]
        kinds = [e.kind for e in db.store.audit_events()]
        assert kinds.count("rollback_requested") == 1 and kinds.count("rollback_succeeded") == 1
        assert daemon.terminate() == 0
    finally:
        if daemon.alive():
            daemon.kill9()
        db.close()


def test_bad_rule_file_dropped_in_keeps_good_rules_running(tmp_path: Path, registry_template: Path) -> None:
    url = f"sqlite:///{tmp_path / 'watcher.db'}"
    ws = fast_workspace(tmp_path, registry_template, url)
    db = Db(url)
    daemon = DaemonProcess(ws.config_path, tmp_path / "daemon.log")
    try:
        wait_for(lambda: db.store.rule_states().get(RULE), what="first evaluation")
        bad = ws.write_rules(
            textwrap.dedent("""\
            model: churn-model
            rules:
              - name: latency
                signal: latency
                prometheus: up
                abvoe: 0.3
            """),
            name="churn-model.yaml",
        )
        wait_for(lambda: f"{bad}:" in daemon.output(), what="the bad file's findings in the log")
        before = evaluations(daemon)
        wait_for(lambda: evaluations(daemon) > before + 2, what="the good rule to keep running")
        assert daemon.alive()
        assert daemon.terminate() == 0
    finally:
        if daemon.alive():
            daemon.kill9()
        db.close()


def test_ticks_measure_at_their_scheduled_slot() -> None:
    from watcher.engine.scheduling import scheduled_time

    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(seconds=15)
    assert scheduled_time(anchor, step, anchor + timedelta(seconds=60.004)) == anchor + timedelta(seconds=60)
    assert scheduled_time(anchor, step, anchor + timedelta(seconds=15.003)) == anchor + step
    late = anchor + timedelta(seconds=23)  # more than half an interval late: its own time
    assert scheduled_time(anchor, step, late) == late
    early = anchor - timedelta(seconds=1)  # a clock that went back
    assert scheduled_time(anchor, step, early) == early


def test_systemd_ready_and_watchdog_notifications(tmp_path: Path, registry_template: Path) -> None:
    import socket as sock

    url = f"sqlite:///{tmp_path / 'watcher.db'}"
    ws = fast_workspace(tmp_path, registry_template, url)
    address = str(tmp_path / "notify.sock")
    receiver = sock.socket(sock.AF_UNIX, sock.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(30)
    daemon = DaemonProcess(
        ws.config_path, tmp_path / "daemon.log", env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"}
    )
    try:
        seen: list[str] = []
        while "WATCHDOG=1" not in seen:
            seen.append(receiver.recv(256).decode())
        assert seen[0] == "READY=1"  # ready before the first watchdog ping
        assert daemon.terminate() == 0
        receiver.settimeout(5)
        while (message := receiver.recv(256).decode()) != "STOPPING=1":
            assert message == "WATCHDOG=1"
    finally:
        receiver.close()
        if daemon.alive():
            daemon.kill9()


def test_reload_keeps_state_unless_query_or_threshold_changed(
    tmp_path: Path, registry_template: Path
) -> None:
    from watcher.engine.ruleset import RuleBook
    from watcher.engine.tick import Engine
    from watcher.targets import TargetRegistry

    url = f"sqlite:///{tmp_path / 'watcher.db'}"
    ws = fast_workspace(tmp_path, registry_template, url)
    config = ws.config()
    db = Db(url)
    migrate.upgrade(db.engine)
    engine = Engine(db.store, TargetRegistry(config.targets, config.base_dir), config.safety)
    book = RuleBook(config)
    rules = book.load().runtime
    ws.set_value(0.2)
    engine.tick(rules[RULE], datetime.now(UTC))
    assert engine.status(RULE).state is RuleState.PENDING
    try:
        for change, kept in (("severity: critical", True), ("above: 0.05", False)):
            text = FAST_RULES.replace(
                change, {"severity: critical": "severity: warning", "above: 0.05": "above: 0.07"}[change]
            )
            ws.write_rules(text)
            previous = book.current.runtime
            engine.carry_states(book.load().runtime, previous)
            assert (engine.status(RULE).state is RuleState.PENDING) is kept, change
            engine.tick(book.current.runtime[RULE], datetime.now(UTC))
    finally:
        db.close()
