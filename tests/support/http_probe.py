"""Clients that misbehave on purpose, for probing the daemon's HTTP server on loopback.

Every probe is bounded: sockets time out, loops have a fixed number of rounds, nothing retries.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PROBE_TIMEOUT = 20.0  # far past every server deadline: reaching it means the server held on


@dataclass(frozen=True)
class RawAnswer:
    status: int | None  # None: the connection closed without an answer
    headers: dict[str, str]
    body: bytes
    raw: bytes

    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return json.loads(self.body)


def parse_answer(raw: bytes) -> RawAnswer:
    if not raw.startswith(b"HTTP/"):
        return RawAnswer(None, {}, b"", raw)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return RawAnswer(int(lines[0].split()[1]), headers, body, raw)


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:  # the server closed with bytes of ours unread: what came, counts
        pass
    return received


def exchange(port: int, *pieces: bytes, pause: float = 0.0, timeout: float = PROBE_TIMEOUT) -> RawAnswer:
    """Send `pieces` (waiting `pause` between them), then read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for index, piece in enumerate(pieces):
            if index and pause:
                time.sleep(pause)
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server already answered and closed: read what it said
        return parse_answer(read_until_closed(sock))


def request(method: str, target: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body and not any(name.lower() in ("content-length", "transfer-encoding") for name, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _healthz_once(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("GET", "/healthz"))
        answer = await reader.read()
        writer.close()
        return answer.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@dataclass(frozen=True)
class CrowdResult:
    crowd_ok: int
    crowd_failed: int
    watch_ok: int
    watch_failed: int


async def _crowd(port: int, size: int, idle: bool) -> CrowdResult:
    """`size` clients at once (each a GET /healthz, or, `idle`, a connection holding half a
    request) while a watcher asks /healthz on fresh connections every 20 ms."""
    stop = asyncio.Event()

    async def watch() -> list[bool]:
        answers: list[bool] = []
        for _ in range(1000):  # bounded even if `stop` never came
            answers.append(await _healthz_once(port))
            if stop.is_set() and len(answers) >= 3:
                break
            await asyncio.sleep(0.02)
        return answers

    async def idler() -> tuple[bool, asyncio.StreamWriter | None]:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and nothing more
            await writer.drain()
            return True, writer
        except OSError:
            return False, None

    watcher = asyncio.create_task(watch())
    if idle:
        held = await asyncio.gather(*(idler() for _ in range(size)))
        crowd = [ok for ok, _ in held]
        await asyncio.sleep(0.5)  # the watcher asks while every idler is connected
        stop.set()
        watched = await watcher
        for _, writer in held:
            if writer is not None:
                writer.close()
    else:
        crowd = list(await asyncio.gather(*(_healthz_once(port) for _ in range(size))))
        stop.set()
        watched = await watcher
    return CrowdResult(sum(crowd), len(crowd) - sum(crowd), sum(watched), len(watched) - sum(watched))


def crowd(port: int, size: int, *, idle: bool = False) -> CrowdResult:
    return asyncio.run(asyncio.wait_for(_crowd(port, size, idle), timeout=60))
