"""GET /healthz, /readyz and /metrics."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from watcher.http.context import HttpContext
from watcher.http.responses import COMMON_HEADERS, json_response, text_response
from watcher.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE


def health_routes(context: HttpContext) -> Sequence[BaseRoute]:
    async def healthz(request: Request) -> Response:
        # On the event loop, not a worker thread: it must answer even when every worker is busy.
        alive = context.loop_alive()
        return text_response(200 if alive else 503, "ok\n" if alive else "evaluation loop not running\n")

    async def readyz(request: Request) -> Response:
        ready, reason = await run_in_threadpool(context.ready)  # pings the database
        if ready:
            return json_response(200, {"ready": True})
        return json_response(503, {"ready": False, "reason": reason})

    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(context.metrics.render)
        return Response(body, media_type=METRICS_CONTENT_TYPE, headers=COMMON_HEADERS)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
