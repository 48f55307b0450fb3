"""The outermost layer of the app: refuses over-long targets, logs each request briefly, and turns
a failing endpoint into a JSON 500 while the server keeps serving.

Nothing about a request's headers, query or body is logged (Slack signatures and tokens live
there); of its path, at most a short escaped fragment.
"""

from __future__ import annotations

import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from watcher.http.limits import Limits
from watcher.http.responses import COMMON_HEADERS

log = logging.getLogger("watcher.http")

PATH_LOG_CHARS = 80


def loggable_path(path: str) -> str:
    """At most PATH_LOG_CHARS of `path`, control and non-ASCII characters escaped, length noted."""
    fragment = path[:PATH_LOG_CHARS].encode("ascii", "backslashreplace").decode("ascii")
    fragment = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in fragment)
    if len(path) > PATH_LOG_CHARS:
        fragment += f"...({len(path)} chars)"
    return fragment


def head_size(scope: Scope) -> int:
    """About the bytes of the request line and headers as they came (each header plus ': ' and CRLF)."""
    headers = sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))
    return len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + headers


async def send_json_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in COMMON_HEADERS.items()]
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, raw_path = str(scope["method"]), str(scope["path"])
        extra = {"http_method": method[:16], "http_path": loggable_path(raw_path)}
        if (
            len(scope.get("raw_path", b"")) + len(scope.get("query_string", b""))
            > self.limits.max_target_bytes
        ):
            log.info("request target too long", extra={**extra, "http_status": 414})
            await send_json_error(send, 414, "request target too long")
            return
        if head_size(scope) > self.limits.max_head_bytes:
            # h11 caps a head that arrives in pieces; one that arrives whole is measured here.
            log.info("request head too large", extra={**extra, "http_status": 431})
            await send_json_error(send, 431, "request header fields too large")
            return
        # Old clients and hand-typed URLs end paths with a slash; the routes do not.
        if len(raw_path) > 1 and raw_path.endswith("/"):
            scope = {**scope, "path": raw_path.rstrip("/") or "/"}
        status: list[int] = []

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        started = time.monotonic()
        try:
            await self.app(scope, receive, watched_send)
        except Exception:  # one failing request must not take the server down, nor reach its log raw
            log.exception("HTTP handler failed", extra=extra)
            if not status:
                status.append(500)
                await send_json_error(send, 500, "internal error")
        seconds = round(time.monotonic() - started, 4)
        log.debug(
            "http request", extra={**extra, "http_status": status[0] if status else 0, "seconds": seconds}
        )
