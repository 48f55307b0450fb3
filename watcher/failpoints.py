"""Named crash points for the crash tests: `WATCHER_FAILPOINTS=after_adapter` makes the process die
(as kill -9 would) when it reaches that point. Unset in production: then this does nothing."""

from __future__ import annotations

import os

ENV = "WATCHER_FAILPOINTS"


def crash_if_armed(name: str) -> None:
    armed = os.environ.get(ENV)
    if armed and name in armed.split(","):
        os._exit(137)


_stopped: set[str] = set()


def stop_if_armed(name: str) -> None:
    """`WATCHER_FAILPOINTS=stop:<name>` stops the process (SIGSTOP) the first time it reaches that
    point, as a long pause would: the test decides when it goes on (SIGCONT)."""
    armed = os.environ.get(ENV)
    if armed and f"stop:{name}" in armed.split(",") and name not in _stopped:
        import signal

        _stopped.add(name)
        os.kill(os.getpid(), signal.SIGSTOP)
