"""The daemon's HTTP surface as one Starlette app, built from an `HttpContext`.

GET  /healthz                  200 while the evaluation loop is alive, else 503
GET  /readyz                   200 when ready (database reachable, rules loaded), else 503 + reason
GET  /metrics                  Prometheus text format
GET  /api/incidents[?open=true]
GET  /api/incidents/{id}       404 for an unknown id, 400 for one that is not a number
GET  /reports/{id}.html        a stored drift report
POST /slack/actions            handed, raw and untouched, to the Slack handler

Every error is JSON (`{"error": ...}`), unknown paths (404) and methods (405, with Allow) too.
To add pages or endpoints: write `def my_routes(context: HttpContext) -> Sequence[BaseRoute]`
and add it to ROUTE_SETS (or pass it to `build_app` as an extra route set).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from watcher.http.api import api_routes
from watcher.http.context import HttpContext
from watcher.http.guard import Guard
from watcher.http.health import health_routes
from watcher.http.limits import DEFAULT_LIMITS, Limits
from watcher.http.responses import http_exception_handler
from watcher.http.slack_endpoint import slack_routes

RouteSet = Callable[[HttpContext], Sequence[BaseRoute]]

ROUTE_SETS: tuple[RouteSet, ...] = (health_routes, api_routes)


def build_app(
    context: HttpContext, *, limits: Limits = DEFAULT_LIMITS, extra: Sequence[RouteSet] = ()
) -> Starlette:
    routes: list[BaseRoute] = [*slack_routes(context, limits)]
    for route_set in (*ROUTE_SETS, *extra):
        routes.extend(route_set(context))
    return Starlette(
        routes=routes,
        middleware=[Middleware(Guard, limits=limits)],
        exception_handlers={HTTPException: http_exception_handler},
    )
