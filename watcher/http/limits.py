"""What one request may cost the daemon: its size, how long it may take to arrive, how many at once.

The server (uvicorn with h11) enforces the head limits and the backlog; the app enforces the body
limit and the body deadline, reading no more than the limit and answering before the rest arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import anyio
from starlette.requests import ClientDisconnect, Request


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1024 * 1024  # Slack's presses are a few KiB
    body_seconds: float = 5.0  # a body not all there by then is answered 408
    head_seconds: float = 5.0  # request line and headers of a request that has begun arriving
    keep_alive_seconds: int = 5  # an idle kept-alive connection is closed after this
    max_target_bytes: int = 2048  # path and query; longer is 414
    max_head_bytes: int = 16 * 1024  # request line and headers together (h11's incomplete-event cap)
    backlog: int = 2048  # connections the kernel queues before accept(); bursts must not be reset
    max_connections: int = 4096  # past this a request is answered 503 rather than queued in memory
    stop_seconds: float = 3.0  # requests in flight get this long to finish when the daemon stops


DEFAULT_LIMITS = Limits()


class BodyProblem(Enum):
    TOO_LARGE = 413
    TOO_SLOW = 408
    BAD_LENGTH = 400
    LENGTH_REQUIRED = 411
    GONE = 499  # the client hung up; nobody is left to answer


@dataclass(frozen=True)
class BodyRefused:
    problem: BodyProblem
    message: str


def declared_length(request: Request, limits: Limits) -> int | BodyRefused:
    """The Content-Length, checked before a byte of the body is read."""
    if "chunked" in request.headers.get("transfer-encoding", "").lower():
        return BodyRefused(BodyProblem.LENGTH_REQUIRED, "send the body with a Content-Length")
    text = request.headers.get("content-length", "0").strip()
    # Length-capped before int(): 5,000 digits are refused without converting them.
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        return BodyRefused(BodyProblem.BAD_LENGTH, "bad Content-Length")
    if int(text) > limits.max_body_bytes:
        return BodyRefused(BodyProblem.TOO_LARGE, f"request body over {limits.max_body_bytes} bytes")
    return int(text)


async def read_body(request: Request, limits: Limits) -> bytes | BodyRefused:
    """The whole body, or why not: too large (never read past the limit) or too slow."""
    length = declared_length(request, limits)
    if isinstance(length, BodyRefused):
        return length
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(limits.body_seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body_bytes:
                    return BodyRefused(
                        BodyProblem.TOO_LARGE, f"request body over {limits.max_body_bytes} bytes"
                    )
                chunks.append(chunk)
    except TimeoutError:
        return BodyRefused(
            BodyProblem.TOO_SLOW, f"request body not received within {limits.body_seconds:g} s"
        )
    except ClientDisconnect:
        return BodyRefused(BodyProblem.GONE, "client went away")
    return b"".join(chunks)
