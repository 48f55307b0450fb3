"""Runs the app on uvicorn in a thread of the daemon's process: start() binds and returns once
serving, stop() returns within a bound.

The socket is bound here, on the caller's thread, so a port in use is an `HttpBindError` naming
host and port at start-up rather than a log line from another thread. uvicorn installs no signal
handlers: SIGTERM and SIGHUP belong to the daemon, which calls stop().
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Generator, Sequence

import uvicorn
from starlette.applications import Starlette

from watcher.http.app import RouteSet, build_app
from watcher.http.context import HttpContext
from watcher.http.limits import DEFAULT_LIMITS, Limits
from watcher.http.protocol import bounded_protocol

log = logging.getLogger("watcher.http")

START_SECONDS = 10.0  # uvicorn's start-up is an event loop and a listener: well under this


class HttpBindError(OSError):
    """The server could not listen where it was told to."""


class HttpStartError(RuntimeError):
    """The server thread did not come up (it logged why)."""


class _ThreadServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the daemon owns the process's signals


def uvicorn_config(app: Starlette, limits: Limits) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        loop="asyncio",
        http=bounded_protocol(limits),
        ws="none",
        lifespan="off",
        interface="asgi3",
        log_config=None,  # the daemon's logging stays as set up; uvicorn's loggers propagate to it
        log_level="warning",  # uvicorn's start and stop lines repeat what watcher.http says
        access_log=False,  # requests are logged by the app, without query strings
        proxy_headers=False,  # nothing here trusts X-Forwarded-*
        server_header=False,
        backlog=limits.backlog,
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keep_alive_seconds,
        timeout_graceful_shutdown=max(1, int(limits.stop_seconds)),
        h11_max_incomplete_event_size=limits.max_head_bytes,
    )


def bind(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        raise HttpBindError(error.errno, f"cannot listen on {host}:{port}: {reason}") from None
    sock.setblocking(False)
    return sock


class HttpServer:
    """The HTTP surface on its own thread: start(), then stop() when the daemon exits."""

    def __init__(
        self,
        host: str,
        port: int,
        context: HttpContext,
        *,
        limits: Limits = DEFAULT_LIMITS,
        extra: Sequence[RouteSet] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.limits = limits
        self.app = build_app(context, limits=limits, extra=extra)
        self._server: _ThreadServer | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind, serve, return once uvicorn listens. HttpBindError when host:port cannot be had."""
        self._socket = bind(self.host, self.port, self.limits.backlog)
        self._server = _ThreadServer(uvicorn_config(self.app, self.limits))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="watcher-http", daemon=True
        )
        self._thread.start()
        if not self._wait_started():
            self.stop()
            raise HttpStartError(f"HTTP server on {self.host}:{self.port} did not start")
        log.info("HTTP listening", extra={"listen": f"{self.host}:{self.bound_port}"})

    def _wait_started(self) -> bool:
        assert self._server is not None and self._thread is not None
        for _ in range(int(START_SECONDS / 0.01)):
            if self._server.started:
                return True
            if not self._thread.is_alive():
                return False
            time.sleep(0.01)
        return False

    @property
    def bound_port(self) -> int:
        """The port actually listened on (the one the OS chose when started with port 0)."""
        if self._socket is None:
            return self.port
        return int(self._socket.getsockname()[1])

    def stop(self) -> None:
        """Stop accepting, give requests in flight `limits.stop_seconds`, then return regardless."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.limits.stop_seconds + 2)
            if self._thread.is_alive():
                log.warning("HTTP server did not stop in time; leaving its thread to the process exit")
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None
        self._socket = None
