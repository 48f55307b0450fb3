"""The HTTP surface against a real server on a free loopback port and a real database."""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from tests.support.services import fresh_postgres_schema, require
from tests.test_incident_json import Seeded, migrated_sqlite_store, seed_incidents
from watcher.decisions.evaluation import RuleStatus, Transition, TransitionReason
from watcher.http.context import HttpContext
from watcher.http.limits import DEFAULT_LIMITS
from watcher.http.serve import HttpBindError, HttpServer
from watcher.incidents.json_view import incident_detail_json, incidents_json
from watcher.metrics import Metrics
from watcher.model import Outcome, RuleState
from watcher.store.database import open_engine
from watcher.store.migrate import upgrade
from watcher.store.repository import Store

SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
MAX_BODY_BYTES = DEFAULT_LIMITS.max_body_bytes
SLACK_BODY = b"payload=%7B%22type%22%3A%22block_actions%22%2C%22token%22%3A%22verif-tok-123%22%7D&x=a+b"


@dataclass
class Knobs:
    """What the test flips and what the Slack handler saw."""

    alive: bool = True
    ready: tuple[bool, str] = (True, "2 rules loaded")
    reports: dict[int, str] = field(default_factory=dict)
    slack_calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    slack_answer: tuple[int, dict[str, Any] | bytes] = (200, b"")
    broken: bool = False

    def readiness(self) -> tuple[bool, str]:
        if self.broken:
            raise RuntimeError("postgresql://u:hunter2@db/x is down")
        return self.ready

    def slack(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any] | bytes]:
        self.slack_calls.append(({"signature": headers["X-Slack-Signature"], **dict(headers)}, body))
        return self.slack_answer


@dataclass
class Running:
    port: int
    knobs: Knobs
    store: Store
    seeded: Seeded
    metrics: Metrics


def observed_metrics() -> Metrics:
    metrics = Metrics()
    transition = Transition(
        previous=RuleStatus(),
        current=RuleStatus(state=RuleState.FIRING),
        outcome=Outcome.BREACH,
        reason=TransitionReason.FIRED_IMMEDIATELY,
        value=0.4,
    )
    metrics.observe_tick("fraud/p99", transition, 0.05)
    metrics.missed_run("fraud/p99")
    metrics.rollback("fraud-prod", "succeeded")
    metrics.set_open_incidents(1)
    return metrics


def start_server(store: Store) -> tuple[HttpServer, Running]:
    knobs = Knobs()
    metrics = observed_metrics()
    context = HttpContext(
        store=store,
        metrics=metrics,
        loop_alive=lambda: knobs.alive,
        ready=knobs.readiness,
        report_for=knobs.reports.get,
        slack_handler=knobs.slack,
    )
    server = HttpServer("127.0.0.1", 0, context)
    server.start()
    seeded = seed_incidents(store)
    return server, Running(server.bound_port, knobs, store, seeded, metrics)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    store = migrated_sqlite_store(tmp_path)
    server, state = start_server(store)
    yield state
    server.stop()
    store.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def running_any_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Running]:
    if request.param == "sqlite":
        store = migrated_sqlite_store(tmp_path)
        server, state = start_server(store)
        yield state
        server.stop()
        store.engine.dispose()
        return
    with fresh_postgres_schema() as schema:
        upgrade(schema.engine)
        engine = open_engine(schema.url)
        server, state = start_server(Store(engine))
        yield state
        server.stop()
        engine.dispose()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers["content-type"].startswith("application/json")
        return json.loads(self.body)


def call(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Reply:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


# --- health and metrics ------------------------------------------------------------------------------
def test_healthz_follows_the_evaluation_loop(running: Running) -> None:
    assert call(running.port, "GET", "/healthz").status == 200
    running.knobs.alive = False
    assert call(running.port, "GET", "/healthz").status == 503


def test_readyz_gives_the_reason_when_not_ready(running: Running) -> None:
    assert call(running.port, "GET", "/readyz").status == 200
    running.knobs.ready = (False, "database unreachable")
    reply = call(running.port, "GET", "/readyz")
    assert reply.status == 503
    assert reply.json() == {"ready": False, "reason": "database unreachable"}


def test_metrics_are_served_in_the_text_format_with_every_spec_name(running: Running) -> None:
    reply = call(running.port, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {family.name for family in text_string_to_metric_families(reply.body.decode())}
    assert {
        "watcher_rule_evaluations",  # the parser drops a counter's _total suffix from the family
        "watcher_rule_evaluation_seconds",
        "watcher_rule_state",
        "watcher_evaluations_missed",
        "watcher_incidents_open",
        "watcher_rollbacks",
    } <= families
    assert b"_created" not in reply.body


def test_metrics_pass_promtool_lint(running: Running) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        require("promtool", "not on PATH")
        return
    body = call(running.port, "GET", "/metrics").body
    checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_head_answers_headers_only(running: Running) -> None:
    reply = call(running.port, "HEAD", "/healthz")
    assert reply.status == 200
    assert reply.body == b""


# --- the JSON API ----------------------------------------------------------------------------------------
@pytest.mark.integration
def test_api_serves_the_same_json_as_the_cli(running_any_database: Running) -> None:
    state = running_any_database
    listing = call(state.port, "GET", "/api/incidents")
    assert listing.status == 200
    assert listing.json() == incidents_json(state.store)
    assert [doc["id"] for doc in listing.json()] == [state.seeded.open_id, state.seeded.resolved_id]

    only_open = call(state.port, "GET", "/api/incidents?open=true").json()
    assert [doc["id"] for doc in only_open] == [state.seeded.open_id]

    detail = call(state.port, "GET", f"/api/incidents/{state.seeded.resolved_id}")
    assert detail.status == 200
    assert detail.json() == incident_detail_json(state.store, state.seeded.resolved_id)
    assert detail.json()["timeline"][0]["kind"] == "incident_opened"
    assert b"pg-s3cret" not in listing.body


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/incidents/999", 404),
        ("/api/incidents/99999999999999999999", 404),
        ("/api/incidents/abc", 400),
        ("/api/incidents/-1", 400),
        ("/api/incidents?open=maybe", 400),
        ("/nowhere", 404),
        ("/api/incidents/1/extra", 404),
    ],
)
def test_api_errors_are_json(running: Running, path: str, status: int) -> None:
    reply = call(running.port, "GET", path)
    assert reply.status == status
    assert "error" in reply.json()


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/slack/actions", "POST"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/api/incidents", "GET, HEAD"),
        ("PUT", "/api/incidents/1", "GET, HEAD"),
    ],
)
def test_wrong_methods_are_405_with_allow(running: Running, method: str, path: str, allow: str) -> None:
    reply = call(running.port, method, path, body=b"x" if method in ("POST", "PUT") else None)
    assert reply.status == 405
    assert reply.headers["allow"] == allow


def test_reports_are_served_when_stored(running: Running) -> None:
    running.knobs.reports[running.seeded.open_id] = "<html><body>drift</body></html>"
    reply = call(running.port, "GET", f"/reports/{running.seeded.open_id}.html")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/html")
    assert reply.body == b"<html><body>drift</body></html>"
    assert call(running.port, "GET", f"/reports/{running.seeded.resolved_id}.html").status == 404
    assert call(running.port, "GET", "/reports/x.html").status == 400


def test_a_failing_endpoint_answers_500_and_the_server_keeps_serving(running: Running) -> None:
    running.knobs.broken = True
    reply = call(running.port, "GET", "/readyz")
    assert reply.status == 500
    assert reply.json() == {"error": "internal error"}
    assert call(running.port, "GET", "/healthz").status == 200


# --- Slack actions -----------------------------------------------------------------------------------------
def test_slack_handler_gets_the_raw_body_and_the_headers(running: Running) -> None:
    running.knobs.slack_answer = (200, {"text": "ok"})
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Signature": SIGNATURE,
        "X-Slack-Request-Timestamp": "1714564800",
    }
    reply = call(running.port, "POST", "/slack/actions", body=SLACK_BODY, headers=headers)
    assert reply.status == 200
    assert reply.json() == {"text": "ok"}
    [(seen_headers, seen_body)] = running.knobs.slack_calls
    assert seen_body == SLACK_BODY
    assert seen_headers["signature"] == SIGNATURE
    assert seen_headers["x-slack-request-timestamp"] == "1714564800"


def test_slack_handler_status_and_bytes_pass_through(running: Running) -> None:
    running.knobs.slack_answer = (401, b"")
    headers = {"X-Slack-Signature": "v0=0"}
    reply = call(running.port, "POST", "/slack/actions", body=b"payload=x", headers=headers)
    assert reply.status == 401
    assert reply.body == b""


def test_a_body_over_one_mebibyte_is_413_and_never_reaches_the_handler(running: Running) -> None:
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as raw:
        raw.sendall(
            b"POST /slack/actions HTTP/1.1\r\nHost: x\r\nX-Slack-Signature: v0=0\r\n"
            + f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
        )
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413")
    assert running.knobs.slack_calls == []


def test_a_body_of_exactly_one_mebibyte_is_accepted(running: Running) -> None:
    body = b"p" * MAX_BODY_BYTES
    reply = call(running.port, "POST", "/slack/actions", body=body, headers={"X-Slack-Signature": "v0=0"})
    assert reply.status == 200
    assert running.knobs.slack_calls[0][1] == body


def test_slack_actions_are_404_without_a_handler(tmp_path: Path) -> None:
    store = migrated_sqlite_store(tmp_path)
    context = HttpContext(store=store, metrics=Metrics(), loop_alive=lambda: True, ready=lambda: (True, ""))
    server = HttpServer("127.0.0.1", 0, context)
    server.start()
    try:
        assert call(server.bound_port, "POST", "/slack/actions", body=b"payload=x").status == 404
        assert call(server.bound_port, "GET", "/reports/1.html").status == 404
    finally:
        server.stop()
        store.engine.dispose()


def test_requests_are_logged_without_headers_or_bodies(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    call(running.port, "POST", "/slack/actions", body=SLACK_BODY, headers={"X-Slack-Signature": SIGNATURE})
    call(running.port, "GET", "/api/incidents?open=true&token=query-secret")
    seen = " ".join(repr(vars(record)) for record in caplog.records)
    assert "http_path" in seen  # requests are logged
    for secret in (SIGNATURE, "verif-tok-123", "query-secret"):
        assert secret not in seen


# --- binding ---------------------------------------------------------------------------------------------
def test_binding_a_port_in_use_fails_naming_host_and_port(running: Running) -> None:
    context = HttpContext(
        store=running.store, metrics=Metrics(), loop_alive=lambda: True, ready=lambda: (True, "")
    )
    second = HttpServer("127.0.0.1", running.port, context)
    with pytest.raises(HttpBindError, match=f"127.0.0.1:{running.port}"):
        second.start()
    second.stop()  # harmless when it never started


# --- running inside the daemon --------------------------------------------------------------------------
def test_stop_is_bounded_while_a_client_holds_a_request_open(tmp_path: Path) -> None:
    store = migrated_sqlite_store(tmp_path)
    context = HttpContext(store=store, metrics=Metrics(), loop_alive=lambda: True, ready=lambda: (True, ""))
    server = HttpServer("127.0.0.1", 0, context)
    server.start()
    port = server.bound_port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as stalled:
        stalled.sendall(b"POST /slack/actions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npay")
        thread = server._thread
        server.stop()
        assert thread is not None and not thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    store.engine.dispose()


def test_signal_handlers_are_left_to_the_daemon(running: Running) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    context = HttpContext(
        store=running.store, metrics=Metrics(), loop_alive=lambda: True, ready=lambda: (True, "")
    )
    server = HttpServer("127.0.0.1", 0, context)
    server.start()
    assert call(server.bound_port, "GET", "/healthz").status == 200
    server.stop()
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_extra_route_sets_are_served_with_the_same_json_errors(running: Running) -> None:
    async def hello(request: Request) -> Response:
        return PlainTextResponse("hello")

    def greeting(context: HttpContext) -> list[BaseRoute]:
        return [Route("/hello", hello, methods=["GET"])]

    context = HttpContext(
        store=running.store, metrics=Metrics(), loop_alive=lambda: True, ready=lambda: (True, "")
    )
    server = HttpServer("127.0.0.1", 0, context, extra=[greeting])
    server.start()
    try:
        assert call(server.bound_port, "GET", "/hello").body == b"hello"
        refused = call(server.bound_port, "DELETE", "/hello")
        assert refused.status == 405 and refused.headers["allow"] == "GET, HEAD"
        assert "error" in refused.json()
    finally:
        server.stop()
