"""Runs `watcher run` as a real subprocess and waits on what it writes to its database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from tests.support.workspace import DEFAULT_RULES, Workspace, make_workspace
from watcher.store.database import open_engine
from watcher.store.queue import WorkQueue
from watcher.store.repository import Store

WATCHER = Path(sys.executable).parent / "watcher"
T = TypeVar("T")

# The workspace's rule, evaluated every second and firing after 6 s of breach.
FAST_RULES = DEFAULT_RULES.replace("for: 2m", "for: 6s").replace("every: 30s", "every: 1s")


def fast_workspace(tmp_path: Path, template: Path, url: str, rules: str = FAST_RULES, **kw: str) -> Workspace:
    """A workspace in `tmp_path/ws` paced for a daemon under test: 1 s evaluations, 2 s verification."""
    return make_workspace(
        tmp_path / "ws",
        template,
        url,
        rules=rules,
        every="1s",
        timeout="500ms",
        verify_after=kw.pop("verify_after", "2s"),
        **kw,
    )


class Db:
    """The daemon's database as the test reads it, beside the running process."""

    def __init__(self, url: str) -> None:
        self.engine = open_engine(url)
        self.store = Store(self.engine)
        self.queue = WorkQueue(self.store)

    def close(self) -> None:
        self.engine.dispose()


class DaemonProcess:
    def __init__(self, config: Path, log: Path, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.log = log
        merged = dict(os.environ)
        merged.pop("WATCHER_FAILPOINTS", None)
        merged.update(env or {})
        self._log_file = log.open("ab")
        self.process = subprocess.Popen(
            [str(WATCHER), "run", "--config", str(config)],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=merged,
        )

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log_file.close()

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self._log_file.close()
        return code

    def wait_exit(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout=timeout)
        self._log_file.close()
        return code

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def evaluations(daemon: DaemonProcess) -> int:
    """How many evaluations this daemon reports on its own /metrics (0 while it does not answer)."""
    import re
    import urllib.request

    port = re.search(r"listen: 127\.0\.0\.1:(\d+)", daemon.config.read_text())
    assert port is not None, "the test config names no HTTP port"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("watcher_rule_evaluations_total{")
        )
    )


def wait_for(condition: Callable[[], T | None], timeout: float = 60, what: str = "condition") -> T:
    """Poll until `condition` returns something truthy; a bounded wait, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:  # the database may be mid-write or not created yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f}s")
        time.sleep(0.2)
