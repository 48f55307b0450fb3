"""A local HTTP server answering what the test sets, as late as the test wants, recording requests.

It stands in for a Prometheus that is slow, broken or behind a misbehaving proxy, and lets a test
see the headers a client really sent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.support.local_server import LocalServer


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class CannedAnswer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0  # seconds between reading the request and answering


@dataclass
class _State:
    answer: CannedAnswer = field(default_factory=CannedAnswer)
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Set on close, so that delayed handlers stop waiting at once.
    closing: threading.Event = field(default_factory=threading.Event)


class CannedHttpServer(LocalServer):
    """An HTTP server on a free 127.0.0.1 port; `answer(...)` sets what every request gets."""

    def __init__(self, answer: CannedAnswer | None = None) -> None:
        self._server = None
        self._state = _State(answer=answer or CannedAnswer())
        self.start()

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self._state)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    def answer(
        self, status: int = 200, body: bytes = b"", content_type: str = "application/json", delay: float = 0.0
    ) -> None:
        with self._state.lock:
            self._state.answer = CannedAnswer(status, body, content_type, delay)

    def close(self) -> None:
        self._state.closing.set()  # delayed handlers stop waiting at once
        self.stop()

    def __exit__(self, *_: object) -> None:
        self.close()


class SlowHttpServer(CannedHttpServer):
    """Accepts connections and reads requests, but answers only after `delay` seconds."""

    def __init__(self, delay: float, body: bytes = b'{"status":"success","data":{"result":[]}}') -> None:
        super().__init__(CannedAnswer(body=body, delay=delay))


def _handler_for(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._answer(self.rfile.read(length))

        def _answer(self, body: bytes) -> None:
            parts = urlsplit(self.path)
            # The parameters of a GET's query string and of a POSTed form alike.
            query = parse_qs(parts.query)
            if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                query.update(parse_qs(body.decode("utf-8", "replace")))
            with state.lock:
                state.requests.append(RecordedRequest(self.command, parts.path, query, dict(self.headers)))
                answer = state.answer
            if answer.delay and state.closing.wait(answer.delay):
                return
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except OSError:
                pass  # the client gave up waiting: that is what a timeout test expects

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
