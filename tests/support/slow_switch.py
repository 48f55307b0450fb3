"""A rollback target behind a slow command, for crash and shutdown tests of the daemon.

`slow-prod` is switched by a Python script that takes as long as the test says (or hangs), so a
test can kill or stop the daemon while the adapter call runs. Version 7 is live and breaching;
version 6 was live for two hours without incident, so the daemon rolls back to 6.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support.daemon import FAST_RULES, Db, fast_workspace
from tests.support.workspace import Workspace
from watcher.model import RollbackStatus
from watcher.store import migrate
from watcher.store.records import RollbackIntent

COMMAND_TARGET = """\
  slow-prod:
    adapter: command
    argv: ["{python}", "{script}", "{{{{ to_version }}}}"]
    live_argv: ["{python}", "-c", "print(open('{live}').read().strip())"]
    timeout: {timeout}
"""

SLOW_SWITCH = """\
import os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
open(os.path.join(here, "started.pid"), "w").write(str(os.getpid()))
time.sleep(float(open(os.path.join(here, "delay")).read()))
with open(os.path.join(here, "switches.log"), "a") as log:
    log.write(sys.argv[1] + "\\n")
open(os.path.join(here, "live"), "w").write(sys.argv[1])
"""


@dataclass
class SlowSwitch:
    """The switch script's folder: its delay, the pid of a running switch, what it switched to."""

    directory: Path

    def set_delay(self, seconds: float) -> None:
        (self.directory / "delay").write_text(f"{seconds:g}")

    def started_pid(self) -> str:
        """The running switch's pid; raises OSError until one has started."""
        return (self.directory / "started.pid").read_text()

    def live(self) -> str:
        return (self.directory / "live").read_text()

    def switches(self) -> list[str]:
        return (self.directory / "switches.log").read_text().split()


@dataclass
class SlowSwitchStand:
    workspace: Workspace
    switch: SlowSwitch
    db: Db


def slow_switch_stand(
    tmp_path: Path, registry_template: Path, *, delay: float, command_timeout: str = "30s"
) -> SlowSwitchStand:
    """A workspace on SQLite whose rule rolls `slow-prod` back from 7 to 6 through the switch."""
    switch = SlowSwitch(tmp_path / "switch")
    switch.directory.mkdir()
    (switch.directory / "switch.py").write_text(SLOW_SWITCH)
    (switch.directory / "live").write_text("7")
    switch.set_delay(delay)
    url = f"sqlite:///{tmp_path / 'watcher.db'}"
    rules = FAST_RULES.replace("target: fraud-prod", "target: slow-prod").replace("for: 6s", "for: 1s")
    ws = fast_workspace(tmp_path, registry_template, url, rules=rules)
    target = COMMAND_TARGET.format(
        python=sys.executable,
        script=switch.directory / "switch.py",
        live=switch.directory / "live",
        timeout=command_timeout,
    )
    ws.config_path.write_text(ws.config_path.read_text().replace("targets:\n", "targets:\n" + target))
    db = Db(url)
    migrate.upgrade(db.engine)
    now = datetime.now(UTC)
    with db.store.transaction() as tx:  # version 6 was live for two hours without incident
        tx.record_live_version("slow-prod", "6", now - timedelta(hours=3))
        tx.record_live_version("slow-prod", "6", now - timedelta(hours=1))
    ws.set_value(0.2)
    return SlowSwitchStand(ws, switch, db)


def finished_intent(db: Db) -> RollbackIntent | None:
    """The first rollback intent once it is no longer running."""
    intents = db.queue.intents()
    return intents[0] if intents and intents[0].status is not RollbackStatus.RUNNING else None
