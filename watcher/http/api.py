"""GET /api/incidents[?open=true], /api/incidents/{id}: the JSON of `watcher incidents --json`;
GET /reports/{id}.html: a drift incident's stored report."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from watcher.http.context import HttpContext
from watcher.http.responses import COMMON_HEADERS, error_response, json_response
from watcher.incidents.json_view import incident_detail_json, incidents_json

MAX_INCIDENT_ID = 2**31 - 1  # the column is a 32-bit integer; larger ids cannot exist


def parse_incident_id(text: str) -> int | Response:
    if not text.isascii() or not text.isdigit():
        return error_response(HTTPStatus.BAD_REQUEST, f"incident id must be a number, not {text[:40]!r}")
    if len(text) > 12 or int(text) > MAX_INCIDENT_ID:
        return error_response(HTTPStatus.NOT_FOUND, f"no incident {text[:40]}")
    return int(text)


def parse_open_flag(request: Request) -> bool | Response:
    values = request.query_params.getlist("open")
    if not values:
        return False
    flag = values[-1].lower()
    if flag in ("true", "1", "yes"):
        return True
    if flag in ("false", "0", "no"):
        return False
    return error_response(HTTPStatus.BAD_REQUEST, "open must be true or false")


def api_routes(context: HttpContext) -> Sequence[BaseRoute]:
    async def incidents(request: Request) -> Response:
        open_only = parse_open_flag(request)
        if isinstance(open_only, Response):
            return open_only
        return json_response(200, await run_in_threadpool(incidents_json, context.store, open_only))

    async def incident(request: Request) -> Response:
        incident_id = parse_incident_id(request.path_params["id"])
        if isinstance(incident_id, Response):
            return incident_id
        document = await run_in_threadpool(incident_detail_json, context.store, incident_id)
        if document is None:
            return error_response(HTTPStatus.NOT_FOUND, f"no incident {incident_id}")
        return json_response(200, document)

    async def report(request: Request) -> Response:
        incident_id = parse_incident_id(request.path_params["id"])
        if isinstance(incident_id, Response):
            return incident_id
        html = await run_in_threadpool(context.report_for, incident_id) if context.report_for else None
        if html is None:
            return error_response(HTTPStatus.NOT_FOUND, f"no report for incident {incident_id}")
        return Response(html.encode(), media_type="text/html; charset=utf-8", headers=COMMON_HEADERS)

    return [
        Route("/api/incidents", incidents, methods=["GET"]),
        Route("/api/incidents/{id}", incident, methods=["GET"]),
        Route("/reports/{id}.html", report, methods=["GET"]),
    ]
