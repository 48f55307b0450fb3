"""A local HTTP server answering what the test sets, as late as the test wants, recording requests.

It stands in for a Prometheus that is slow, broken or behind a misbehaving proxy, and lets a test
see the headers a client really sent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit


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


class CannedHttpServer:
    """An HTTP server on a free 127.0.0.1 port; `answer(...)` sets what every request gets."""

    def __init__(self, answer: CannedAnswer | None = None) -> None:
        self._state = _State(answer=answer or CannedAnswer())
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self._state))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

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
        self._state.closing.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> CannedHttpServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
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
