"""The web pages, read-only: GET / (the incident board), /incidents/{id}, /rules, /static/….

Server-rendered with Jinja2 (autoescaped) and inline SVG charts: no JavaScript, and nothing is
fetched from anywhere but the daemon (the Content-Security-Policy says so to the browser too).
Mounted through `page_route_set(sources)`, a route set for `watcher.http.app.build_app(extra=…)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from watcher.http.page_data import PageSources, incident_page, rules_page
from watcher.http.page_reads import BoardQuery, read_board
from watcher.model import IncidentStatus
from watcher.store.repository import Store

HERE = Path(__file__).parent
MAX_PAGE = 100_000
# Only the daemon itself: styles from /static, pictures inline. No script at all.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}


class PageContext(Protocol):
    """What the pages read of the app's context (watcher.http.context.HttpContext has it)."""

    @property
    def store(self) -> Store: ...

    @property
    def now(self) -> Callable[[], datetime]: ...


def utc_text(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "–"


def age_text(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return ""
    seconds = int((now - moment).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def number_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else "–"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["utc"] = utc_text
    env.filters["num"] = number_text
    env.globals["age"] = age_text
    env.globals["statuses"] = [status.value for status in IncidentStatus]
    return env


TEMPLATES = _environment()


def render(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    html = TEMPLATES.get_template(template).render(**values)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def _not_found(what: str, status: HTTPStatus = HTTPStatus.NOT_FOUND) -> HTMLResponse:
    return render("problem.html", status.value, title=status.phrase, message=what)


def parse_page(request: Request) -> int | None:
    text = request.query_params.get("page", "1") or "1"
    if not text.isascii() or not text.isdigit() or not 1 <= int(text[:7]) <= MAX_PAGE:
        return None
    return int(text)


def parse_board(request: Request) -> BoardQuery | str:
    """The board's filters from the query string, or what is wrong with them."""
    page = parse_page(request)
    if page is None:
        return "page must be a number from 1"
    status_text = request.query_params.get("status") or None
    try:
        status = IncidentStatus(status_text) if status_text else None
    except ValueError:
        return f"unknown status {status_text[:40]!r}" if status_text else "bad status"
    target = (request.query_params.get("target") or "").strip()[:200] or None
    return BoardQuery(status=status, target=target, page=page)


def page_route_set(sources: PageSources) -> Callable[[PageContext], Sequence[BaseRoute]]:
    """The pages as a route set for build_app(extra=…)."""

    def routes(context: PageContext) -> Sequence[BaseRoute]:
        return page_routes(context, sources)

    return routes


def page_routes(context: PageContext, sources: PageSources) -> Sequence[BaseRoute]:
    async def board(request: Request) -> Response:
        query = parse_board(request)
        if isinstance(query, str):
            return _not_found(query, HTTPStatus.BAD_REQUEST)
        data = await run_in_threadpool(read_board, context.store, query)
        return render("board.html", board=data, now=context.now(), nav="board")

    async def incident(request: Request) -> Response:
        text = str(request.path_params["id"])
        if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > 2**31 - 1:
            return _not_found(f"no incident {text[:40]}")
        data = await run_in_threadpool(incident_page, context.store, sources, int(text), context.now())
        if data is None:
            return _not_found(f"no incident {int(text)}")
        return render("incident.html", page=data, now=context.now(), nav="board")

    async def rules(request: Request) -> Response:
        page = parse_page(request)
        if page is None:
            return _not_found("page must be a number from 1", HTTPStatus.BAD_REQUEST)
        data = await run_in_threadpool(rules_page, context.store, sources, page, context.now())
        return render("rules.html", page=data, now=context.now(), nav="rules")

    return [
        Route("/", board, methods=["GET", "HEAD"]),
        Route("/incidents/{id}", incident, methods=["GET", "HEAD"]),
        Route("/rules", rules, methods=["GET", "HEAD"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


__all__ = ["PageContext", "PageSources", "page_route_set", "page_routes"]


def daemon_page_routes(
    config: Any, runtime_rules: Callable[[], Any]
) -> Callable[[PageContext], Sequence[BaseRoute]]:
    """The pages as the daemon mounts them: its loaded rules (RuntimeRule by id) and Prometheus."""
    from watcher.charts.series import PrometheusRange

    prometheus = (
        PrometheusRange(config.prometheus.url, config.prometheus.header_values(), config.evaluation.timeout)
        if config.prometheus is not None
        else None
    )

    def rules() -> dict[str, Any]:
        return {rule_id: runtime.rule for rule_id, runtime in runtime_rules().items()}

    return page_route_set(PageSources(rules=rules, prometheus=prometheus))
