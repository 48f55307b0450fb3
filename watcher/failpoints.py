"""Named crash points for the crash tests: `WATCHER_FAILPOINTS=after_adapter` makes the process die
(as kill -9 would) when it reaches that point. Unset in production: then this does nothing."""

from __future__ import annotations

import os

ENV = "WATCHER_FAILPOINTS"


def crash_if_armed(name: str) -> None:
    armed = os.environ.get(ENV)
    if armed and name in armed.split(","):
        os._exit(137)
