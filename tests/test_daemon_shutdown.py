"""SIGTERM is bounded by the grace period even while an adapter call is blocked on its target.

systemd sends SIGKILL once TimeoutStopSec has passed; the daemon must be gone before that. The
blocked rollback is not lost: its intent is reconciled against the target after the restart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, wait_for
from tests.test_daemon import COMMAND_TARGET, FAST_RULES, SLOW_SWITCH, Db, _finished, _workspace
from watcher.engine.daemon import SHUTDOWN_GRACE
from watcher.model import RollbackStatus
from watcher.store import migrate
from watcher.store.records import RollbackIntent

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sigterm_exits_within_the_grace_while_an_adapter_call_blocks(
    tmp_path: Path, registry_template: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'watcher.db'}"
    switch = tmp_path / "switch"
    switch.mkdir()
    (switch / "switch.py").write_text(SLOW_SWITCH)
    (switch / "live").write_text("7")
    (switch / "delay").write_text("600")  # the target hangs: the command would wait 10 minutes
    target = COMMAND_TARGET.format(python=sys.executable, script=switch / "switch.py", live=switch / "live")
    target = target.replace("timeout: 30s", "timeout: 5m")
    rules = FAST_RULES.replace("target: fraud-prod", "target: slow-prod").replace("for: 6s", "for: 1s")
    ws = _workspace(tmp_path, registry_template, url, rules=rules)
    ws.config_path.write_text(ws.config_path.read_text().replace("targets:\n", "targets:\n" + target))
    db = Db(url)
    migrate.upgrade(db.engine)
    now = datetime.now(UTC)
    with db.store.transaction() as tx:  # version 6 was live for two hours without incident
        tx.record_live_version("slow-prod", "6", now - timedelta(hours=3))
        tx.record_live_version("slow-prod", "6", now - timedelta(hours=1))
    ws.set_value(0.2)
    daemon = DaemonProcess(ws.config_path, tmp_path / "daemon.log")
    pid = None
    try:
        pid = int(wait_for(lambda: (switch / "started.pid").read_text(), what="the command to start"))
        # Bounded: a generous margin over the grace, far below the command's own 5 minutes.
        assert daemon.terminate(timeout=SHUTDOWN_GRACE + 15) == 0
        assert "stop_forced" in daemon.output()
        os.kill(pid, signal.SIGKILL)  # the target's call dies with the host, say
        (switch / "delay").write_text("0")
        daemon = DaemonProcess(ws.config_path, tmp_path / "daemon.log")
        done = wait_for(lambda: _finished(db), what="the intent to finish after restart", timeout=90)
        assert isinstance(done, RollbackIntent) and done.status is RollbackStatus.SUCCEEDED
        assert (switch / "switches.log").read_text().split() == ["6"]
        assert daemon.terminate() == 0
    except subprocess.TimeoutExpired:
        pytest.fail(f"watcher did not exit within {SHUTDOWN_GRACE + 15:.0f}s of SIGTERM")
    finally:
        if daemon.alive():
            daemon.kill9()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        db.close()
