"""A local Slack for tests and the demo: the Web API subset watcher uses, and Socket Mode.

It speaks HTTP on loopback, is reached through slack-sdk's `base_url` (http://127.0.0.1:PORT/api/),
checks the Bearer token, records every call, keeps messages with their updates and thread
replies, and can fail, rate-limit or slow down on request. With `echo` set it prints each message,
update and reply as a small box, buttons as `[ Roll back ]`.

    python -m scenario.fake_slack --port 8125
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import itertools
import json
import re
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

BOT_TOKEN = "xoxb-fake-bot-token"
APP_TOKEN = "xapp-fake-app-token"
TEAM_ID = "T0FAKETEAM"
BOT_USER_ID = "U0WATCHER"
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's fixed handshake suffix


@dataclass(frozen=True)
class RecordedCall:
    method: str
    params: dict[str, Any]  # the token is never kept
    status: int
    error: str | None


@dataclass
class StoredMessage:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    updates: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    metadata: dict[str, Any] | None = None  # chat.postMessage's `metadata`, returned by history


@dataclass
class UploadedFile:
    id: str
    filename: str
    length: int
    data: bytes | None = None  # None until the upload URL received it
    title: str = ""
    channel: str | None = None
    thread_ts: str | None = None
    comment: str = ""


@dataclass
class _Fault:
    count: int
    status: int
    retry_after: int = 0


class FakeSlack:
    def __init__(
        self,
        *,
        token: str = BOT_TOKEN,
        app_token: str = APP_TOKEN,
        channels: dict[str, str] | None = None,
        usergroups: dict[str, list[str]] | None = None,
        team_id: str = TEAM_ID,
        echo: TextIO | None = None,
    ) -> None:
        self.token, self.app_token, self.team_id, self.echo = token, app_token, team_id, echo
        self.channels = dict(channels or {"ml-alerts": "C0MLALERTS"})  # name -> id
        self.usergroups = {k: list(v) for k, v in (usergroups or {}).items()}
        self.delay = 0.0  # seconds every answer waits: Slack being slow
        self._slow: list[list[float]] = []  # [calls left, seconds]: slow_next()
        self._last_micro = 0
        self.messages: dict[tuple[str, str], StoredMessage] = {}
        self.ephemerals: list[dict[str, str]] = []
        self.acks: list[str] = []  # Socket Mode envelope ids acknowledged by the client
        self.uploads: dict[str, UploadedFile] = {}  # file id -> what files.getUploadURLExternal promised
        self.files: list[UploadedFile] = []  # files shared by files.completeUploadExternal, in order
        self._calls: list[RecordedCall] = []
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._ts = itertools.count(1700000000_000100, 100)
        self._sockets: list[tuple[socket.socket, threading.Lock]] = []
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeSlack:
        server = ThreadingHTTPServer((host, port), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-slack", daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            for sock, _ in self._sockets:
                sock.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeSlack:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # -- what tests look at ------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[RecordedCall]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def channel_messages(self, channel_id: str) -> list[StoredMessage]:
        """Top-level messages of a channel, oldest first."""
        with self._lock:
            return [m for m in self.messages.values() if m.channel == channel_id and m.thread_ts is None]

    def thread(self, channel_id: str, ts: str) -> list[StoredMessage]:
        with self._lock:
            return [self.messages[(channel_id, r)] for r in self.messages[(channel_id, ts)].replies]

    # -- faults ------------------------------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        with self._lock:
            self._faults.append(_Fault(count, status))

    def drop_next(self, count: int = 1) -> None:
        """Close the connection without an answer, as a dying load balancer does."""
        with self._lock:
            self._faults.append(_Fault(count, 0))

    def slow_next(self, count: int = 1, seconds: float = 2.0) -> None:
        """The next `count` calls wait `seconds` before Slack handles them (and still succeed,
        whether or not the client is still waiting for the answer)."""
        with self._lock:
            self._slow.append([count, seconds])

    def take_slowness(self) -> float:
        with self._lock:
            if not self._slow:
                return 0.0
            entry = self._slow[0]
            entry[0] -= 1
            if entry[0] <= 0:
                self._slow.pop(0)
            return entry[1]

    def rate_limit_next(self, count: int = 1, retry_after: int = 30) -> None:
        with self._lock:
            self._faults.append(_Fault(count, 429, retry_after))

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            fault.count -= 1
            if fault.count <= 0:
                self._faults.pop(0)
            return fault

    # -- the Web API -------------------------------------------------------------------------

    def handle(self, method: str, params: dict[str, Any], token: str | None) -> tuple[int, dict[str, Any]]:
        answer = self._answer(method, params, token)
        status = 404 if answer.get("error") == "unknown_method" else 200
        self._record(method, params, status, answer.get("error"))
        return status, answer

    def _record(self, method: str, params: dict[str, Any], status: int, error: str | None) -> None:
        kept = {k: v for k, v in params.items() if k != "token"}
        with self._lock:
            self._calls.append(RecordedCall(method, kept, status, error))

    def _answer(self, method: str, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        handler = _METHODS.get(method)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        wanted = self.app_token if method == "apps.connections.open" else self.token
        if not token:
            return {"ok": False, "error": "not_authed"}
        if not hmac.compare_digest(token, wanted):
            return {"ok": False, "error": "invalid_auth"}
        with self._lock:
            return handler(self, params)

    def _channel_id(self, given: object, names_allowed: bool = True) -> str | None:
        text = str(given or "")
        if text in self.channels.values():
            return text
        name = text.removeprefix("#")
        return self.channels.get(name) if names_allowed else None

    def _next_ts(self) -> str:
        """Unix time in microseconds, strictly increasing, as Slack's ts (history filters on it)."""
        micro = max(int(time.time() * 1_000_000), self._last_micro + 100)
        self._last_micro = micro
        return f"{micro // 1_000_000}.{micro % 1_000_000:06d}"

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(params.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        content = _content(params)
        if isinstance(content, str):
            return {"ok": False, "error": content}
        thread_ts = params.get("thread_ts") or None
        if thread_ts is not None and (channel, thread_ts) not in self.messages:
            return {"ok": False, "error": "thread_not_found"}
        message = StoredMessage(channel, self._next_ts(), content[0], content[1], thread_ts)
        message.metadata = _metadata(params.get("metadata"))
        self.messages[(channel, message.ts)] = message
        if thread_ts is not None:
            self.messages[(channel, thread_ts)].replies.append(message.ts)
        self._print("reply" if thread_ts else "message", message, content)
        return {"ok": True, "channel": channel, "ts": message.ts, "message": _as_json(message)}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(params.get("channel"), names_allowed=False)  # Slack wants the id here
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        message = self.messages.get((channel, str(params.get("ts"))))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        content = _content(params)
        if isinstance(content, str):
            return {"ok": False, "error": content}
        message.text, message.blocks = content
        message.updates.append(content)
        self._print("update", message, content)
        return {"ok": True, "channel": channel, "ts": message.ts, "text": message.text}

    def _history(self, params: dict[str, Any]) -> dict[str, Any]:
        """conversations.history: top-level messages newest first, `oldest` and `limit` honoured,
        metadata only with include_all_metadata, one page (a cursor is never needed here)."""
        channel = self._channel_id(params.get("channel"), names_allowed=False)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        found = [m for m in self.channel_messages(channel) if float(m.ts) > float(params.get("oldest") or 0)]
        return self._page(found, params)

    def _replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(params.get("channel"), names_allowed=False)
        parent = self.messages.get((channel or "", str(params.get("ts"))))
        if channel is None or parent is None:
            return {"ok": False, "error": "channel_not_found" if channel is None else "thread_not_found"}
        found = [parent, *(self.messages[(channel, r)] for r in parent.replies)]
        return self._page([m for m in found if float(m.ts) > float(params.get("oldest") or 0)], params)

    def _page(self, found: list[StoredMessage], params: dict[str, Any]) -> dict[str, Any]:
        with_metadata = str(params.get("include_all_metadata")).lower() in ("true", "1")
        limit = int(params.get("limit") or 100)
        newest_first = sorted(found, key=lambda m: float(m.ts), reverse=True)[:limit]
        messages = [_as_json(m, with_metadata) for m in newest_first]
        return {"ok": True, "messages": messages, "has_more": False, "response_metadata": {"next_cursor": ""}}

    def _list_channels(self, params: dict[str, Any]) -> dict[str, Any]:
        channels = [{"id": i, "name": n, "is_channel": True} for n, i in self.channels.items()]
        return {"ok": True, "channels": channels, "response_metadata": {"next_cursor": ""}}

    def _post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(params.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if not re.match(r"^[UW][A-Z0-9]+$", str(params.get("user", ""))) or not params.get("text"):
            return {"ok": False, "error": "user_not_in_channel" if params.get("text") else "no_text"}
        entry = {"channel": channel, "user": str(params["user"]), "text": str(params["text"])}
        self.ephemerals.append(entry)
        if self.echo is not None:
            print(f"  (only @{entry['user']} sees) {_readable(entry['text'])}", file=self.echo, flush=True)
        return {"ok": True, "message_ts": self._next_ts()}

    def _usergroup_users(self, params: dict[str, Any]) -> dict[str, Any]:
        group = self.usergroups.get(str(params.get("usergroup", "")))
        if group is None:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(group)}

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True, "url": "https://fake.slack.test/", "team": "Fake", "user": "watcher",
            "team_id": self.team_id, "user_id": BOT_USER_ID, "bot_id": "B0WATCHER",
        }  # fmt: skip

    def _connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket-mode"}

    # -- files (the three steps of files_upload_v2) ------------------------------------------

    def _get_upload_url(self, params: dict[str, Any]) -> dict[str, Any]:
        filename, length = str(params.get("filename") or ""), str(params.get("length") or "")
        if not filename or not length.isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._ts)}"
        self.uploads[file_id] = UploadedFile(file_id, filename, int(length))
        return {
            "ok": True,
            "upload_url": f"http://127.0.0.1:{self.port}/upload/v1/{file_id}",
            "file_id": file_id,
        }

    def receive_upload(self, file_id: str, data: bytes) -> bool:
        with self._lock:
            upload = self.uploads.get(file_id)
            if upload is None:
                return False
            upload.data = data
            return True

    def _complete_upload(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            listed = json.loads(str(params.get("files") or "[]"))
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        channel = self._channel_id(params.get("channel_id"), names_allowed=False)
        thread_ts = params.get("thread_ts") or None
        if params.get("channel_id") and channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if thread_ts is not None and (channel, thread_ts) not in self.messages:
            return {"ok": False, "error": "thread_not_found"}
        shared = []
        for item in listed:
            upload = self.uploads.get(str(item.get("id")))
            if upload is None or upload.data is None or len(upload.data) != upload.length:
                return {
                    "ok": False,
                    "error": "file_not_found" if upload is None else "file_upload_size_mismatch",
                }
            upload.title, upload.channel, upload.thread_ts = str(item.get("title") or ""), channel, thread_ts
            upload.comment = str(params.get("initial_comment") or "")
            self.files.append(upload)
            shared.append(
                {"id": upload.id, "name": upload.filename, "title": upload.title, "size": upload.length}
            )
            if channel is not None and thread_ts is not None:
                reply = StoredMessage(channel, self._next_ts(), upload.comment, [], thread_ts)
                self.messages[(channel, reply.ts)] = reply
                self.messages[(channel, thread_ts)].replies.append(reply.ts)
                self._print("reply", reply, (f"[picture {upload.filename}] {upload.comment}", []))
        return {"ok": True, "files": shared}

    # -- Socket Mode -------------------------------------------------------------------------

    def send_interactive(self, payload: dict[str, Any], envelope_id: str | None = None) -> str:
        """Push an interactive envelope to every connected Socket Mode client; its envelope id."""
        envelope_id = envelope_id or f"env-{self._next_ts()}"
        envelope = {"type": "interactive", "envelope_id": envelope_id, "payload": payload,
                    "accepts_response_payload": False}  # fmt: skip
        self._broadcast(json.dumps(envelope))
        return envelope_id

    def socket_clients(self) -> int:
        with self._lock:
            return len(self._sockets)

    def _broadcast(self, text: str) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for sock, send_lock in sockets:
            with send_lock:
                sock.sendall(_ws_frame(0x1, text.encode("utf-8")))

    def serve_socket(self, sock: socket.socket) -> None:
        send_lock = threading.Lock()
        with send_lock:
            sock.sendall(_ws_frame(0x1, json.dumps({"type": "hello", "num_connections": 1}).encode()))
        with self._lock:
            self._sockets.append((sock, send_lock))
        try:
            while True:
                opcode, data = _ws_read(sock)
                if opcode == 0x8:  # close
                    break
                if opcode == 0x9:  # ping: the client checks the connection with these
                    with send_lock:
                        sock.sendall(_ws_frame(0xA, data))
                elif opcode == 0x1:
                    self._on_socket_text(data)
        except (OSError, ConnectionError):
            pass
        finally:
            with self._lock:
                self._sockets = [s for s in self._sockets if s[0] is not sock]

    def _on_socket_text(self, data: bytes) -> None:
        try:
            envelope_id = json.loads(data).get("envelope_id")
        except ValueError:
            return
        if isinstance(envelope_id, str):
            with self._lock:
                self.acks.append(envelope_id)

    # -- the readable echo -------------------------------------------------------------------

    def _print(self, what: str, message: StoredMessage, content: tuple[str, list[dict[str, Any]]]) -> None:
        if self.echo is None:
            return
        name = next((n for n, i in self.channels.items() if i == message.channel), message.channel)
        if what == "reply":
            print(f"  ↳ thread {message.thread_ts}: {_readable(content[0])}", file=self.echo, flush=True)
            return
        lines = render_blocks_as_text(content[1]) or [_readable(content[0])]
        title = "new message" if what == "message" else "updated"
        print(f"┌─ #{name} · {title} {message.ts}", file=self.echo)
        for line in lines:
            print(f"│ {line}", file=self.echo)
        print("└─", file=self.echo, flush=True)


_METHODS = {
    "chat.postMessage": FakeSlack._post_message,
    "chat.update": FakeSlack._update,
    "chat.postEphemeral": FakeSlack._post_ephemeral,
    "usergroups.users.list": FakeSlack._usergroup_users,
    "auth.test": FakeSlack._auth_test,
    "conversations.history": FakeSlack._history,
    "conversations.replies": FakeSlack._replies,
    "conversations.list": FakeSlack._list_channels,
    "apps.connections.open": FakeSlack._connections_open,
    "files.getUploadURLExternal": FakeSlack._get_upload_url,
    "files.completeUploadExternal": FakeSlack._complete_upload,
}


def _content(params: dict[str, Any]) -> tuple[str, list[dict[str, Any]]] | str:
    """(text, blocks), or the error code Slack gives for them."""
    blocks: Any = params.get("blocks") or []
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except ValueError:
            return "invalid_blocks_format"
    text = str(params.get("text") or "")
    if not text and not blocks:
        return "no_text"
    return "invalid_blocks" if _block_problem(blocks) else (text, blocks)


def _block_problem(blocks: Any) -> str | None:
    """The first Block Kit limit these blocks break; Slack itself refuses such a message."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "blocks must be a list of at most 50"
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "header" and len(block["text"]["text"]) > 150:
            return "header text over 150"
        if kind == "section" and (len(block.get("text", {}).get("text", "")) > 3000 or
                                  len(block.get("fields", [])) > 10):  # fmt: skip
            return "section text over 3000 or more than 10 fields"
        if kind == "actions" and any(len(e.get("value", "")) > 2000 for e in block["elements"]):
            return "button value over 2000"
        if kind not in ("header", "section", "actions", "context", "divider"):
            return f"unknown block type {kind!r}"
    return None


def _as_json(message: StoredMessage, with_metadata: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "message", "ts": message.ts, "text": message.text}
    out["blocks"] = message.blocks
    if message.thread_ts:
        out["thread_ts"] = message.thread_ts
    if with_metadata and message.metadata is not None:
        out["metadata"] = message.metadata
    return out


def _metadata(given: Any) -> dict[str, Any] | None:
    """chat.postMessage's metadata, sent as JSON or as a JSON string in a form."""
    if isinstance(given, str):
        try:
            given = json.loads(given)
        except ValueError:
            return None
    return given if isinstance(given, dict) and isinstance(given.get("event_type"), str) else None


def render_blocks_as_text(blocks: list[dict[str, Any]]) -> list[str]:
    """Blocks as a few readable lines: what the demo shows instead of a Slack window."""
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind in ("header", "section") and "text" in block:
            lines += _readable(block["text"]["text"]).splitlines()
        if kind == "section" and block.get("fields"):
            lines += _wrap([_readable(f["text"]).replace("\n", ": ", 1) for f in block["fields"]])
        if kind == "context":
            lines.append(" · ".join(_readable(e.get("text", "")) for e in block["elements"]))
        if kind == "actions":
            lines.append("  ".join(f"[ {e['text']['text']} ]" for e in block["elements"]))
    return lines


def _wrap(items: list[str], width: int = 100) -> list[str]:
    lines = [""]
    for item in items:
        if lines[-1] and len(lines[-1]) + len(item) + 3 > width:
            lines.append("")
        lines[-1] += f" · {item}" if lines[-1] else item
    return lines


_EMOJI = {":red_circle:": "🔴", ":large_orange_circle:": "🟠", ":large_blue_circle:": "🔵",
          ":white_check_mark:": "✅"}  # fmt: skip


def _readable(text: str) -> str:
    """Slack mrkdwn as a terminal shows it: no markup, links as their text, dates in UTC."""
    for code, symbol in _EMOJI.items():
        text = text.replace(code, symbol)
    text = re.sub(r"(?<![\w*])\*(\S[^*\n]*?\S|\S)\*(?![\w*])", r"\1", text)
    text = re.sub(r"<!date\^\d+\^[^|>]*\|([^>]*)>", r"\1", text)
    text = re.sub(r"<@([A-Z0-9]+)>", r"@\1", text)
    text = re.sub(r"<([^|>]+)\|([^>]+)>", r"\2↗", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


# -- WebSocket framing (RFC 6455), just what Socket Mode needs --------------------------------


def _ws_frame(opcode: int, data: bytes) -> bytes:
    size = len(data)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return header + data


def _ws_read(sock: socket.socket) -> tuple[int, bytes]:
    first, second = _recv_exactly(sock, 2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", _recv_exactly(sock, 2))
    elif size == 127:
        (size,) = struct.unpack("!Q", _recv_exactly(sock, 8))
    mask = _recv_exactly(sock, 4) if second & 0x80 else b"\0\0\0\0"
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(_recv_exactly(sock, size)))
    return first & 0x0F, data


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = b""
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("socket closed")
        chunks += chunk
    return chunks


def _body_params(content_type: str, body: bytes) -> dict[str, Any]:
    if content_type.startswith("application/json"):
        decoded = json.loads(body or b"{}")
        if not isinstance(decoded, dict):
            raise ValueError("JSON body is not an object")
        return decoded
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8")).items()}


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-slack"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read calls(), not logs
        pass

    def do_GET(self) -> None:
        fake: FakeSlack = self.server.fake  # type: ignore[attr-defined]
        key = self.headers.get("Sec-WebSocket-Key")
        if not self.path.startswith("/socket-mode") or key is None:
            self._send(404, {"ok": False, "error": "unknown_method"})
            return
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        fake.serve_socket(self.connection)
        self.close_connection = True

    def do_POST(self) -> None:
        fake: FakeSlack = self.server.fake  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path.startswith("/upload/v1/"):  # the upload URL: raw bytes, answered in plain text
            received = fake.receive_upload(url.path.rsplit("/", 1)[-1], body)
            text = f"OK - {len(body)}".encode() if received else b"Not Found"
            self.send_response(200 if received else 404)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
            return
        params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            params.update(_body_params(self.headers.get("Content-Type", ""), body))
        except ValueError:  # UnicodeDecodeError and JSONDecodeError included
            self._send(200, {"ok": False, "error": "invalid_form_data"})
            return
        pause = fake.delay + fake.take_slowness()
        if pause:
            time.sleep(pause)
        method = url.path.removeprefix("/api/")
        fault = fake._take_fault()
        if fault is not None:
            fake._record(method, params, fault.status, f"injected {fault.status}")
            self._fail(fault)
            return
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else params.get("token")
        status, answer = fake.handle(method, params, token)
        self._send(status, answer)

    def _fail(self, fault: _Fault) -> None:
        if fault.status == 0:
            self.close_connection = True
            return
        if fault.status == 429:
            self._send(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(fault.retry_after)})
            return
        body = b"<html><body>Internal Server Error</body></html>"  # Slack's 5xx are not JSON either
        self.send_response(fault.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send(self, status: int, answer: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(answer).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


# -- what Slack sends to watcher ----------------------------------------------------------------


def sign(signing_secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers Slack puts on a request: v0 HMAC-SHA256 of "v0:{timestamp}:{body}"."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


def block_actions_payload(
    value: str, action_id: str, *, user: str, team: str = TEAM_ID, channel: str = "C0MLALERTS",
    message_ts: str = "1700000000.000100", action_ts: str = "1700000100.123456",
) -> dict[str, Any]:  # fmt: skip
    """A block_actions payload shaped like the one Slack sends when a button is pressed."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team},
        "api_app_id": "A0WATCHER",
        "team": {"id": team, "domain": "fake"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
        "channel": {"id": channel, "name": "ml-alerts"},
        "message": {"type": "message", "ts": message_ts},
        "trigger_id": "1111.2222.abcd",
        "response_url": f"https://hooks.slack.test/actions/{team}/1/abc",
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b", "value": value,
                     "text": {"type": "plain_text", "text": action_id}, "action_ts": action_ts}],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local Slack Web API for the demo and tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8125)
    parser.add_argument("--token", default=BOT_TOKEN, help="the bot token it accepts")
    parser.add_argument("--app-token", default=APP_TOKEN, help="the app token Socket Mode accepts")
    parser.add_argument("--channel", action="append", default=[], metavar="NAME=ID")
    parser.add_argument("--usergroup", action="append", default=[], metavar="S…=U1,U2")
    parser.add_argument("--quiet", action="store_true", help="do not print messages")
    args = parser.parse_args(argv)
    channels = dict(item.split("=", 1) for item in args.channel) or None
    groups = {k: v.split(",") for k, v in (item.split("=", 1) for item in args.usergroup)}
    fake = FakeSlack(token=args.token, app_token=args.app_token, channels=channels, usergroups=groups,
                     echo=None if args.quiet else sys.stdout)  # fmt: skip
    fake.start(args.host, args.port)
    print(f"fake Slack Web API at http://{args.host}:{fake.port}/api/", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
