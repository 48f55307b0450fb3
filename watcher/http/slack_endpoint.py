"""POST /slack/actions: the raw body and headers, untouched, to the Slack handler.

The handler verifies the signature on the raw bytes, so nothing here parses or changes them. The
body is read under the limits first: over the size limit or too slow, the handler never sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from watcher.http.context import HttpContext
from watcher.http.limits import BodyProblem, BodyRefused, Limits, read_body
from watcher.http.responses import COMMON_HEADERS, error_response, json_response


def refused_body(refused: BodyRefused) -> Response:
    # Whatever of the body is left unread must not be taken for the next request: close.
    return error_response(HTTPStatus(refused.problem.value), refused.message, close=True)


def slack_routes(context: HttpContext, limits: Limits) -> Sequence[BaseRoute]:
    async def actions(request: Request) -> Response:
        if context.slack_handler is None:
            return error_response(HTTPStatus.NOT_FOUND, "Slack actions are not configured", close=True)
        body = await read_body(request, limits)
        if isinstance(body, BodyRefused):
            if body.problem is BodyProblem.GONE:
                return Response(status_code=400)  # never sent: the connection is gone
            return refused_body(body)
        status, answer = await run_in_threadpool(context.slack_handler, request.headers, body)
        if isinstance(answer, bytes):
            return Response(
                answer, status_code=status, media_type="text/plain; charset=utf-8", headers=COMMON_HEADERS
            )
        return json_response(status, answer)

    return [Route("/slack/actions", actions, methods=["POST"])]
