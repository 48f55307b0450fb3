"""The daemon's HTTP surface on the standard library: health, readiness, metrics, Slack, JSON API.

GET  /healthz                  200 while the evaluation loop is alive, else 503
GET  /readyz                   200 when ready (database reachable, rules loaded), else 503 + reason
GET  /metrics                  Prometheus text format
GET  /api/incidents[?open=true]
GET  /api/incidents/{id}       404 for an unknown id, 400 for one that is not a number
GET  /reports/{id}.html        a stored drift report
POST /slack/actions            handed, raw and untouched, to the Slack handler (1 MiB at most)

Nothing about a request's headers or body is ever logged: Slack signatures and tokens live there.
A handler that fails answers 500 with a generic body; the failure is logged without the request.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from watcher.incidents.json_view import incident_detail_json, incidents_json
from watcher.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from watcher.metrics import Metrics
from watcher.model import MAX_INCIDENT_ID
from watcher.store.repository import Store

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
SOCKET_TIMEOUT_SECONDS = 30  # a client that stops sending does not hold a thread for ever
SHUTDOWN_POLL_SECONDS = 0.1  # how soon stop() is noticed by the serving loop

SlackHandler = Callable[[Mapping[str, str], bytes], tuple[int, "dict[str, Any] | bytes"]]


@dataclass(frozen=True)
class Routes:
    """What the endpoints read from; each is called on the request's thread."""

    loop_alive: Callable[[], bool]
    ready: Callable[[], tuple[bool, str]]
    metrics: Callable[[], bytes]
    incidents: Callable[[bool], list[dict[str, Any]]]
    incident: Callable[[int], dict[str, Any] | None]
    report_for: Callable[[int], str | None] | None = None
    slack_handler: SlackHandler | None = None


def store_routes(
    store: Store,
    metrics: Metrics,
    *,
    loop_alive: Callable[[], bool],
    ready: Callable[[], tuple[bool, str]],
    report_for: Callable[[int], str | None] | None = None,
    slack_handler: SlackHandler | None = None,
) -> Routes:
    """Routes whose API reads `store` and whose /metrics renders `metrics`."""
    return Routes(
        loop_alive=loop_alive,
        ready=ready,
        metrics=metrics.render,
        incidents=lambda open_only: incidents_json(store, open_only),
        incident=lambda incident_id: incident_detail_json(store, incident_id),
        report_for=report_for,
        slack_handler=slack_handler,
    )


class HttpBindError(OSError):
    """The server could not listen where it was told to."""


class Headers(Mapping[str, str]):
    """Request headers looked up case-insensitively; keys iterate in lower case."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, str] = {}
        for name, value in pairs:
            self._values.setdefault(name.lower(), value)

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str
    extra_headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, document: Any) -> Response:
    body = json.dumps(document, ensure_ascii=False, allow_nan=False).encode()
    return Response(status, body, "application/json; charset=utf-8")


def text_response(status: int, text: str) -> Response:
    return Response(status, text.encode(), "text/plain; charset=utf-8")


def error_response(status: HTTPStatus, message: str) -> Response:
    return json_response(status.value, {"error": message})


# Which methods each path takes; a known path with another method is a 405.
_GET = frozenset({"GET", "HEAD"})
_STATIC_PATHS: dict[str, frozenset[str]] = {
    "/healthz": _GET,
    "/readyz": _GET,
    "/metrics": _GET,
    "/api/incidents": _GET,
    "/slack/actions": frozenset({"POST"}),
}
_INCIDENT_PATH = re.compile(r"^/api/incidents/(?P<id>[^/]+)$")
_REPORT_PATH = re.compile(r"^/reports/(?P<id>[^/]+)\.html$")


def allowed_methods(path: str) -> frozenset[str] | None:
    """The methods `path` answers, or None for an unknown path."""
    if path in _STATIC_PATHS:
        return _STATIC_PATHS[path]
    if _INCIDENT_PATH.match(path) or _REPORT_PATH.match(path):
        return _GET
    return None


def parse_incident_id(text: str) -> int | Response:
    if not text.isascii() or not text.isdigit():
        return error_response(HTTPStatus.BAD_REQUEST, f"incident id must be a number, not {text[:40]!r}")
    number = int(text)
    if number > MAX_INCIDENT_ID:
        return error_response(HTTPStatus.NOT_FOUND, f"no incident {number}")
    return number


def parse_open_flag(query: str) -> bool | Response:
    values = parse_qs(query).get("open", [])
    if not values:
        return False
    flag = values[-1].lower()
    if flag in ("true", "1", "yes"):
        return True
    if flag in ("false", "0", "no"):
        return False
    return error_response(HTTPStatus.BAD_REQUEST, "open must be true or false")


class Dispatcher:
    """Turns a GET into a Response; kept apart from the socket handling so each piece stays small."""

    def __init__(self, routes: Routes) -> None:
        self.routes = routes

    def get(self, path: str, query: str) -> Response:
        if path == "/healthz":
            alive = self.routes.loop_alive()
            return text_response(200 if alive else 503, "ok\n" if alive else "evaluation loop not running\n")
        if path == "/readyz":
            return self._ready()
        if path == "/metrics":
            return Response(200, self.routes.metrics(), METRICS_CONTENT_TYPE)
        if path == "/api/incidents":
            open_only = parse_open_flag(query)
            if isinstance(open_only, Response):
                return open_only
            return json_response(200, self.routes.incidents(open_only))
        if match := _INCIDENT_PATH.match(path):
            return self._incident(match.group("id"))
        if match := _REPORT_PATH.match(path):
            return self._report(match.group("id"))
        return error_response(HTTPStatus.NOT_FOUND, "not found")

    def _ready(self) -> Response:
        ready, reason = self.routes.ready()
        if ready:
            return json_response(200, {"ready": True})
        return json_response(503, {"ready": False, "reason": reason})

    def _incident(self, text: str) -> Response:
        incident_id = parse_incident_id(text)
        if isinstance(incident_id, Response):
            return incident_id
        document = self.routes.incident(incident_id)
        if document is None:
            return error_response(HTTPStatus.NOT_FOUND, f"no incident {incident_id}")
        return json_response(200, document)

    def _report(self, text: str) -> Response:
        incident_id = parse_incident_id(text)
        if isinstance(incident_id, Response):
            return incident_id
        html = self.routes.report_for(incident_id) if self.routes.report_for else None
        if html is None:
            return error_response(HTTPStatus.NOT_FOUND, f"no report for incident {incident_id}")
        return Response(200, html.encode(), "text/html; charset=utf-8")

    def slack(self, headers: Headers, body: bytes) -> Response:
        if self.routes.slack_handler is None:
            return error_response(HTTPStatus.NOT_FOUND, "Slack actions are not configured")
        status, answer = self.routes.slack_handler(headers, body)
        if isinstance(answer, bytes):
            return Response(status, answer, "text/plain; charset=utf-8")
        return json_response(status, answer)


class _RequestHandler(BaseHTTPRequestHandler):
    server_version = "model-watcher"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_SECONDS
    dispatcher: Dispatcher  # set on the subclass HttpServer builds

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_OPTIONS(self) -> None:
        self._handle("OPTIONS")

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        allowed = allowed_methods(path)
        if allowed is None:
            self._drain_and_send(error_response(HTTPStatus.NOT_FOUND, "not found"), method)
            return
        if method not in allowed:
            allow = (("Allow", ", ".join(sorted(allowed))),)
            response = error_response(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed here")
            self._drain_and_send(replace(response, extra_headers=allow), method)
            return
        try:
            response = self._slack() if method == "POST" else self.dispatcher.get(path, parts.query)
        except Exception:  # one failing request must not take the server down
            log.exception("HTTP handler failed", extra={"http_method": method, "http_path": path})
            response = error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
        self._send(response, method)

    def _slack(self) -> Response:
        length = self._content_length()
        if isinstance(length, Response):
            self.close_connection = True
            return length
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self.close_connection = True
            return error_response(HTTPStatus.BAD_REQUEST, "request body shorter than Content-Length")
        return self.dispatcher.slack(Headers(self.headers.items()), body)

    def _content_length(self) -> int | Response:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return error_response(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        text = self.headers.get("Content-Length", "0").strip()
        if not text.isdigit():
            return error_response(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if int(text) > MAX_BODY_BYTES:
            return error_response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body over 1 MiB")
        return int(text)

    def _drain_and_send(self, response: Response, method: str) -> None:
        """Refuse without reading a body: close the connection so unread bytes cannot be misparsed."""
        if self.headers.get("Content-Length", "0").strip() not in ("", "0"):
            self.close_connection = True
        self._send(response, method)

    def _send(self, response: Response, method: str) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in response.extra_headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes the request line to stderr; only method, path and status are kept,
        # at debug level (no query string, no headers, no body).
        log.debug("http %s", urlsplit(getattr(self, "path", "")).path)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug(
            "http request",
            extra={"http_method": self.command, "http_path": urlsplit(self.path).path, "http_status": code},
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must not keep the process from exiting
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr, past the log set-up and its redaction; a
        # client that hung up or timed out is routine, not an error of the daemon.
        log.debug("HTTP connection ended abnormally", exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class HttpServer:
    """The HTTP surface on its own daemon thread: start(), then stop() when the daemon exits.

    The API reads `store` and /metrics renders `metrics`; `from_routes` wires other callables.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        store: Store,
        metrics: Metrics,
        loop_alive: Callable[[], bool],
        ready: Callable[[], tuple[bool, str]],
        report_for: Callable[[int], str | None] | None = None,
        slack_handler: SlackHandler | None = None,
    ) -> None:
        routes = store_routes(
            store,
            metrics,
            loop_alive=loop_alive,
            ready=ready,
            report_for=report_for,
            slack_handler=slack_handler,
        )
        self._setup(host, port, routes)

    @classmethod
    def from_routes(cls, host: str, port: int, routes: Routes) -> HttpServer:
        server = cls.__new__(cls)
        server._setup(host, port, routes)
        return server

    def _setup(self, host: str, port: int, routes: Routes) -> None:
        self.host = host
        self.port = port
        self.routes = routes
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve; HttpBindError when host:port cannot be had (in use, no such address)."""
        handler = type("WatcherRequestHandler", (_RequestHandler,), {"dispatcher": Dispatcher(self.routes)})
        server_class = _Server6 if ":" in self.host else _Server
        try:
            self._server = server_class((self.host, self.port), handler)
        except OSError as error:
            reason = error.strerror or str(error)
            raise HttpBindError(error.errno, f"cannot listen on {self.host}:{self.port}: {reason}") from None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name="watcher-http",
            daemon=True,
        )
        self._thread.start()
        log.info("HTTP listening", extra={"listen": f"{self.host}:{self.bound_port}"})

    @property
    def bound_port(self) -> int:
        """The port actually listened on (the one the OS chose when started with port 0)."""
        if self._server is None:
            return self.port
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None
