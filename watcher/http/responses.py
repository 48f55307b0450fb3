"""JSON answers, and the JSON errors every route (and every unknown route or method) gives."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

JSON_TYPE = "application/json; charset=utf-8"
# Sent with every answer: nothing here is cacheable, and no body is to be sniffed into HTML.
COMMON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def json_response(status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(document, ensure_ascii=False, allow_nan=False).encode()
    return Response(
        body, status_code=status, media_type=JSON_TYPE, headers={**COMMON_HEADERS, **(headers or {})}
    )


def error_response(status: HTTPStatus, message: str, *, close: bool = False) -> Response:
    """`close`: the request body was not read, so the connection cannot carry another request."""
    headers = {"Connection": "close"} if close else None
    return json_response(status.value, {"error": message}, headers)


def text_response(status: int, text: str) -> Response:
    return Response(
        text.encode(), status_code=status, media_type="text/plain; charset=utf-8", headers=COMMON_HEADERS
    )


def _sorted_allow(headers: dict[str, str]) -> dict[str, str]:
    # Starlette keeps a route's methods in a set; the Allow header is given in a stable order.
    if "Allow" in headers:
        headers["Allow"] = ", ".join(sorted(method.strip() for method in headers["Allow"].split(",")))
    return headers


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """404 for an unknown path, 405 (with Allow) for a known path and another method, as JSON."""
    assert isinstance(exc, HTTPException)
    status = HTTPStatus(exc.status_code)
    message = {404: "not found", 405: f"{request.method[:16]} not allowed here"}.get(
        status.value, status.phrase.lower()
    )
    headers = _sorted_allow(dict(exc.headers or {}))
    unread_body = request.method not in ("GET", "HEAD") and request.headers.get("content-length", "0") != "0"
    if unread_body or "transfer-encoding" in request.headers:
        headers["Connection"] = "close"
    return json_response(status.value, {"error": message}, headers)
