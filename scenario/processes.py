"""Child processes of the scenario: started so that none of them outlives the scenario.

Every child runs in its own session (its own process group), so one signal reaches it and
everything it started; the terminal's Ctrl-C reaches only the scenario, which then stops the
children in order. On Linux a child also gets SIGTERM when the scenario process dies for any
reason, SIGKILL included (PR_SET_PDEATHSIG), so nothing is left running even then.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child between fork and exec: ask the kernel for SIGTERM when the parent dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def python_module_argv(module: str, *args: str) -> list[str]:
    """Run one of the scenario's modules with the interpreter that runs the scenario."""
    return [sys.executable, "-m", module, *args]


@dataclass
class Child:
    """One started child process and its process group."""

    name: str
    process: subprocess.Popen[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM to the whole group, SIGKILL after `grace_s`; returns the exit code."""
        if self.running():
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait(timeout=5)
        # Whatever the leader left behind in its group (a grandchild) goes too.
        self._signal_group(signal.SIGKILL)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return self.process.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        # The group id equals the leader's pid (start_new_session); it stays valid while any
        # member lives, and signalling an empty group is a harmless ProcessLookupError.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdout: IO[str] | int | None = subprocess.PIPE,
    stderr: IO[str] | int | None = subprocess.STDOUT,
) -> Child:
    """Start `argv` in a new session that dies with this process. Raises OSError if it can't start."""
    process = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        text=True,
        bufsize=1,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    return Child(name=name, process=process)


class Supervisor:
    """Stops every child it started, newest first, exactly once, whatever ended the scenario."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdout: IO[str] | int | None = subprocess.PIPE,
        stderr: IO[str] | int | None = subprocess.STDOUT,
    ) -> Child:
        return self.adopt(spawn(name, argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr))

    def adopt(self, child: Child) -> Child:
        self._children.append(child)
        return child

    def children(self) -> list[Child]:
        return list(self._children)

    def stop_all(self, on_stop: Callable[[Child, int | None], None] | None = None) -> None:
        # A second Ctrl-C while stopping must not leave half the children running.
        previous = _ignore_sigint()
        try:
            while self._children:
                child = self._children.pop()
                code = child.stop()
                if on_stop is not None:
                    on_stop(child, code)
        finally:
            _restore_sigint(previous)


def _ignore_sigint() -> object:
    try:
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to protect here
        return None


def _restore_sigint(previous: object) -> None:
    if previous is not None:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGINT, previous)  # type: ignore[arg-type]


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll `predicate` until it holds or `timeout_s` passes; True when it held."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
