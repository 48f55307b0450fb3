"""uvicorn's h11 protocol with a deadline for a request's head, and JSON for its own 400s.

uvicorn closes a kept-alive connection that stays idle, but a client that sends part of a request
line or of its headers and then stalls would hold its connection for ever; here it is closed once
`Limits.head_seconds` have passed without a complete head. The rest (parsing, the head size cap,
pipelining, flow control) is uvicorn's and h11's own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from watcher.http.limits import Limits

log = logging.getLogger("watcher.http")


def bounded_protocol(limits: Limits) -> type[asyncio.Protocol]:
    """The protocol class for uvicorn's Config(http=...), with `limits` applied."""

    class BoundedH11Protocol(_BoundedH11Protocol):
        head_seconds = limits.head_seconds

    return BoundedH11Protocol


class _BoundedH11Protocol(H11Protocol):
    head_seconds = 5.0

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's access line carries the query string; the app logs requests without it.
        self.access_log = False
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Armed while the client owes us (part of) a request head; off once a request is in."""
        awaiting_head = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if awaiting_head and (self.cycle is None or self.cycle.response_complete):
            if self._head_deadline is None:
                self._head_deadline = self.loop.call_later(self.head_seconds, self._head_too_slow)
        else:
            self._cancel_head_deadline()

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.debug("closed a connection whose request head did not arrive in time")
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse (head over the size cap, bad Content-Length, bad syntax)."""
        body = json.dumps({"error": "bad request: malformed or oversized request head"}).encode()
        headers = [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            for event in (
                h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                h11.Data(data=body),
            ):
                self.transport.write(self.conn.send(event) or b"")
            self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # a response had already begun on this connection
            pass
        self.transport.close()
