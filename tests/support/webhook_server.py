"""A local receiver for the webhook adapter, behaving as a careful one should.

- Checks ``X-Watcher-Signature: sha256=<hex HMAC-SHA256 of "v1:{timestamp}:{body}">`` and the
  freshness of ``X-Watcher-Timestamp`` on every request: missing, wrong or stale means 401.
- ``POST /rollback``: deduplicates by ``Idempotency-Key`` (a replay gets the first answer again,
  marked ``Idempotent-Replayed: true``), refuses with 409 ``{"error": "version_changed"}`` when
  the live version is not ``from_version``, else moves the live version (at once, or after
  `polls_until_done` status polls when `asynchronous`).
- ``GET /live``: ``{"version": live}``; ``GET /status/{intent}``: ``{"status": ...}``.
- `fail_next(status)` answers the next requests with that status and a body echoing the request's
  Authorization header, as a careless proxy might, to check that the adapter scrubs it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.local_server import LocalServer

MAX_SKEW_SECONDS = 300


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The signature a sender computes: HMAC-SHA256 over "v1:{timestamp}:{body}", hex-encoded."""
    message = b"v1:" + timestamp.encode() + b":" + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@dataclass
class _Job:
    intent: str
    to_version: str
    polls_left: int
    status: str = "pending"


@dataclass
class WebhookReceiver(LocalServer):
    secret: str
    live: str
    asynchronous: bool = False
    polls_until_done: int = 2
    final_status: str = "done"  # what an asynchronous job ends as: done or failed
    applied: list[dict[str, Any]] = field(default_factory=list)  # every change actually made
    received: list[dict[str, Any]] = field(default_factory=list)  # every request, with headers
    _answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    _jobs: dict[str, _Job] = field(default_factory=dict)
    _failures: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _race_live: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(_Handler):
            pass

        Handler.receiver = receiver
        return Handler

    def fail_next(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * times)

    def set_live(self, version: str) -> None:
        with self._lock:
            self.live = version

    def set_live_before_next_rollback(self, version: str) -> None:
        """Someone else deploys `version` just before the next rollback request arrives."""
        with self._lock:
            self._race_live = version

    def snapshot(self) -> str:
        with self._lock:
            return json.dumps({"live": self.live, "applied": self.applied}, sort_keys=True)

    # -- request handling (under the lock) ------------------------------------------------------

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bool]:
        """(status, JSON answer, replayed)."""
        self.received.append({"method": method, "path": path, "headers": headers, "body": body.decode()})
        if self._failures:
            status = self._failures.pop(0)
            return (
                status,
                {"error": f"upstream trouble; Authorization was {headers.get('authorization')}"},
                False,
            )
        if not self._signed(headers, body):
            return 401, {"error": "bad or missing signature"}, False
        if method == "GET" and path == "/live":
            return 200, {"version": self.live}, False
        if method == "GET" and path.startswith("/status/"):
            return self._status(path.removeprefix("/status/"))
        if method == "POST" and path == "/rollback":
            return self._rollback(headers, json.loads(body))
        return 404, {"error": "not found"}, False

    def _signed(self, headers: dict[str, str], body: bytes) -> bool:
        timestamp = headers.get("x-watcher-timestamp", "")
        given = headers.get("x-watcher-signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_SKEW_SECONDS:
            return False
        return hmac.compare_digest(given, signature(self.secret, timestamp, body))

    def _rollback(self, headers: dict[str, str], payload: dict[str, Any]) -> tuple[int, Any, bool]:
        key = headers.get("idempotency-key", "")
        if not key:
            return 400, {"error": "Idempotency-Key required"}, False
        if key in self._answers:
            status, first = self._answers[key]
            return status, first, True
        answer: tuple[int, dict[str, Any]]
        if self._race_live is not None:
            self.live, self._race_live = self._race_live, None
        if self.live != payload["from_version"]:
            answer = (409, {"error": "version_changed", "live_version": self.live})
        elif self.asynchronous:
            self._jobs[key] = _Job(key, payload["to_version"], self.polls_until_done)
            answer = (202, {"status": "accepted"})
        else:
            self._apply(payload)
            answer = (200, {"status": "done"})
        self._answers[key] = answer
        return answer[0], answer[1], False

    def _status(self, intent: str) -> tuple[int, Any, bool]:
        job = self._jobs.get(intent)
        if job is None:
            return 404, {"error": "unknown intent"}, False
        if job.status == "pending":
            job.polls_left -= 1
            if job.polls_left <= 0:
                job.status = self.final_status
                if job.status == "done":
                    self._apply({"intent": intent, "to_version": job.to_version})
        return 200, {"status": job.status, "detail": f"job {intent}"}, False

    def _apply(self, payload: dict[str, Any]) -> None:
        self.live = payload["to_version"]
        self.applied.append({"intent": payload["intent"], "to_version": payload["to_version"]})


class _Handler(BaseHTTPRequestHandler):
    receiver: WebhookReceiver

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        with self.receiver._lock:
            status, answer, replayed = self.receiver._handle(self.command, self.path, headers, body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if replayed:
            self.send_header("Idempotent-Replayed", "true")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass
