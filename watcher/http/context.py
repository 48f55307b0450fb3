"""What the HTTP endpoints read from, gathered in one object the app is built from.

Each route module takes an `HttpContext` and returns its routes; a new page or endpoint is a new
function of that shape added to `ROUTE_SETS` in watcher/http/app.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from watcher.metrics import Metrics
from watcher.store.repository import Store

# (headers, raw body) -> (status, JSON document or raw bytes); called on a worker thread.
SlackHandler = Callable[[Mapping[str, str], bytes], tuple[int, "dict[str, Any] | bytes"]]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class HttpContext:
    """The daemon's pieces the HTTP surface may read. Callables run on a worker thread unless a
    route says otherwise (/healthz reads `loop_alive` on the event loop: it must be cheap)."""

    store: Store
    metrics: Metrics
    loop_alive: Callable[[], bool]
    ready: Callable[[], tuple[bool, str]]
    slack_handler: SlackHandler | None = None
    report_for: Callable[[int], str | None] | None = None
    # The one place pages and the API read the time from, so tests can pass a fixed one.
    now: Callable[[], datetime] = field(default=_utc_now)
