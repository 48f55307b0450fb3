"""SIGTERM is bounded by the grace period even while an adapter call is blocked on its target.

systemd sends SIGKILL once TimeoutStopSec has passed; the daemon must be gone before that. The
blocked rollback is not lost: its intent is reconciled against the target after the restart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, wait_for
from tests.support.slow_switch import finished_intent, slow_switch_stand
from watcher.engine.daemon import SHUTDOWN_GRACE
from watcher.model import RollbackStatus
from watcher.store.records import RollbackIntent

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sigterm_exits_within_the_grace_while_an_adapter_call_blocks(
    tmp_path: Path, registry_template: Path
) -> None:
    # The target hangs: the command would wait 10 minutes, and may take 5.
    stand = slow_switch_stand(tmp_path, registry_template, delay=600, command_timeout="5m")
    ws, switch, db = stand.workspace, stand.switch, stand.db
    daemon = DaemonProcess(ws.config_path, tmp_path / "daemon.log")
    pid = None
    try:
        pid = int(wait_for(switch.started_pid, what="the command to start"))
        # Bounded: a generous margin over the grace, far below the command's own 5 minutes.
        assert daemon.terminate(timeout=SHUTDOWN_GRACE + 15) == 0
        assert "stop_forced" in daemon.output()
        os.kill(pid, signal.SIGKILL)  # the target's call dies with the host, say
        switch.set_delay(0)
        daemon = DaemonProcess(ws.config_path, tmp_path / "daemon.log")
        done = wait_for(lambda: finished_intent(db), what="the intent to finish after restart", timeout=90)
        assert isinstance(done, RollbackIntent) and done.status is RollbackStatus.SUCCEEDED
        assert switch.switches() == ["6"]
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
