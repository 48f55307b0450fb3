"""The daemon's HTTP server probed as an attacker would: malformed and oversized input, every
method on every route, slow and stalled clients, a crowd of connections. Loopback only; every
probe is bounded. The server is started as the daemon starts it (HttpServer, default limits), on
a free port, with the real Slack handler, a real SQLite store and a local Slack stand-in.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

import pytest

from scenario.fake_slack import BOT_TOKEN, FakeSlack, block_actions_payload, sign
from tests.support.http_probe import RawAnswer, crowd, exchange, request
from tests.test_incident_json import Seeded, migrated_sqlite_store, seed_incidents
from watcher.http.context import HttpContext
from watcher.http.limits import DEFAULT_LIMITS
from watcher.http.serve import HttpServer
from watcher.metrics import Metrics
from watcher.notify.inbound.actions import SlackActions
from watcher.notify.outbound.slack_client import SlackClient

SECRET = "robustness-signing-secret-0f9e"
APPROVER = "U0APPROVER"
LIMIT = DEFAULT_LIMITS.max_body_bytes


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(f"{r.getMessage()} {vars(r)!r}" for r in self.records)


@dataclass
class Target:
    port: int
    seeded: Seeded
    logs: Records
    stalls: dict[str, Future[RawAnswer]]


def press_body(incident: int, *, response_url: str | None = None, payload: str | None = None) -> bytes:
    value = json.dumps({"incident": incident, "action": "ack"})
    document = block_actions_payload(value, "ack", user=APPROVER, action_ts=f"{time.time():.6f}")
    if response_url is not None:
        document["response_url"] = response_url
    return urlencode({"payload": payload if payload is not None else json.dumps(document)}).encode()


def slack_post(body: bytes, headers: dict[str, str]) -> bytes:
    return request(
        "POST",
        "/slack/actions",
        [("Content-Type", "application/x-www-form-urlencoded"), *headers.items()],
        body,
    )


HEAD = b"POST /slack/actions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
# Clients that stop or crawl; each must be answered (408) or cut off, never held for ever.
STALLS: dict[str, tuple[tuple[bytes, ...], float]] = {
    "body stops after 10 of 100 bytes": ((HEAD, b"payload=ab"), 0.0),
    "body trickles a byte every 0.3 s": ((HEAD, *[b"x"] * 100), 0.3),
    "head stops halfway": ((b"GET /healthz HTTP/1.1\r\nHost: x\r\n",), 0.0),
    "head trickles a byte every 0.3 s": (
        tuple(bytes([c]) for c in b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 60),
        0.3,
    ),
    "connects and sends nothing": ((b"",), 0.0),
    "slow but finishing: a head in 8 pieces over 1.4 s": (
        tuple(request("GET", "/healthz")[i : i + 8] for i in range(0, 64, 8)),
        0.2,
    ),
}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    store = migrated_sqlite_store(tmp_path_factory.mktemp("robustness"))
    seeded = seed_incidents(store)
    logs = Records()
    http_logger = logging.getLogger("watcher.http")
    level = http_logger.level
    http_logger.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(logs)
    with FakeSlack() as slack, ThreadPoolExecutor(max_workers=len(STALLS)) as pool:
        client = SlackClient(BOT_TOKEN, api_url=slack.api_url, timeout=timedelta(seconds=5))
        actions = SlackActions(store, client, SECRET, [APPROVER], prometheus_url=None, http_base_url=None)
        context = HttpContext(
            store=store,
            metrics=Metrics(),
            loop_alive=lambda: True,
            ready=lambda: (True, "ok"),
            slack_handler=actions.handle_http,
        )
        server = HttpServer("127.0.0.1", 0, context)
        server.start()
        port = server.bound_port
        # The stalled clients run in the background while the other probes go on: the suite
        # waits for the server's deadlines once, not once per stall.
        stalls = {
            name: pool.submit(exchange, port, *pieces, pause=pause)
            for name, (pieces, pause) in STALLS.items()
        }
        try:
            yield Target(port, seeded, logs, stalls)
        finally:
            server.stop()
            logging.getLogger().removeHandler(logs)
            http_logger.setLevel(level)
            store.engine.dispose()


def assert_json_error(answer: RawAnswer, *statuses: int) -> None:
    assert answer.status in statuses, answer.raw[:300]
    assert "error" in answer.json()


# --- requests that are too big or malformed ---------------------------------------------------------------
DIGITS = "9" * 5000
MALFORMED: dict[str, tuple[bytes, tuple[int, ...]]] = {
    "path of 5,000 digits": (request("GET", "/" + DIGITS), (414,)),
    "incident id of 5,000 digits": (request("GET", "/api/incidents/" + DIGITS), (414,)),
    "incident id of 40 digits": (request("GET", "/api/incidents/" + "9" * 40), (404,)),
    "path of 66 KB": (request("GET", "/" + "1" * 66_000), (400, 414)),
    "query of 3,000 characters": (request("GET", "/metrics?" + "a=b&" * 750), (414,)),
    "escaped control characters in a long path": (request("GET", "/%1b[31m%00" + "%0a" * 1000), (414,)),
    "undecodable percent-escapes": (request("GET", "/%ff%fe%00"), (404,)),
    "raw non-ASCII bytes in the target": (b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
    "absolute-form target": (request("GET", "http://elsewhere.test/healthz"), (400, 404)),
    "asterisk target": (request("OPTIONS", "*"), (400, 404, 405)),
    "dot-dot path": (request("GET", "/../../etc/passwd"), (404,)),
    "encoded dot-dot in a report id": (request("GET", "/reports/..%2f..%2fetc%2fpasswd.html"), (400, 404)),
    "Content-Length of 5,000 digits": (
        request("POST", "/slack/actions", [("Content-Length", DIGITS)]),
        (400, 413),
    ),
    "negative Content-Length": (request("POST", "/slack/actions", [("Content-Length", "-1")]), (400,)),
    "Content-Length with letters": (request("POST", "/slack/actions", [("Content-Length", "12abc")]), (400,)),
    "two different Content-Lengths": (
        request("POST", "/slack/actions", [("Content-Length", "3"), ("Content-Length", "4")], b"abcd"),
        (400,),
    ),
    "Content-Length and chunked together": (
        request(
            "POST",
            "/slack/actions",
            [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
            b"0\r\n\r\n",
        ),
        (400, 411),
    ),
    "Content-Length over the limit, no body sent": (
        request("POST", "/slack/actions", [("Content-Length", str(2 * LIMIT))]),
        (413,),
    ),
    "over the limit with Expect: 100-continue": (
        request("POST", "/slack/actions", [("Content-Length", str(LIMIT + 1)), ("Expect", "100-continue")]),
        (413,),
    ),
    "chunked body of 2 MiB": (
        request(
            "POST",
            "/slack/actions",
            [("Transfer-Encoding", "chunked")],
            b"200000\r\n" + b"x" * 0x200000 + b"\r\n0\r\n\r\n",
        ),
        (411, 413),
    ),
    "one header of 20 KiB": (request("GET", "/healthz", [("X-Big", "a" * 20_000)]), (400, 431)),
    "2,000 small headers": (request("GET", "/healthz", [(f"X-{i}", "b") for i in range(2000)]), (400, 431)),
    "a NUL in a header value": (request("GET", "/healthz", [("X-Nul", "a\x00b")]), (400,)),
    "no Host on HTTP/1.1": (b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", (400,)),
    "garbage request line": (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n",
        (400,),
    ),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_and_oversized_requests_are_a_json_4xx(target: Target, name: str) -> None:
    raw, statuses = MALFORMED[name]
    assert_json_error(exchange(target.port, raw), *statuses)
    assert exchange(target.port, request("GET", "/healthz")).status == 200


def test_a_body_over_the_limit_is_refused_after_reading_at_most_the_limit(target: Target) -> None:
    big = b"x" * (3 * LIMIT)
    raw = request("POST", "/slack/actions", [("Transfer-Encoding", "chunked")])
    chunked = raw + b"%x\r\n" % len(big) + big + b"\r\n0\r\n\r\n"
    assert_json_error(exchange(target.port, chunked), 411, 413)
    # More bytes than it declared: the declared megabyte is the body, the rest is no request.
    lying = request("POST", "/slack/actions", [("Content-Length", str(LIMIT))]) + big
    assert_json_error(exchange(target.port, lying), 400, 401)
    assert exchange(target.port, request("GET", "/healthz")).status == 200


# --- every method on every route ----------------------------------------------------------------------------
GET_ROUTES = {
    "/healthz": 200,
    "/readyz": 200,
    "/metrics": 200,
    "/api/incidents": 200,
    "/api/incidents/1": 200,
}
ROUTES = {**GET_ROUTES, "/reports/1.html": 404, "/slack/actions": 401, "/nowhere": 404}
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"]


def expected_status(method: str, path: str) -> int:
    if path == "/nowhere":
        return 404
    if path == "/slack/actions":
        return 401 if method == "POST" else 405
    return ROUTES[path] if method in ("GET", "HEAD") else 405


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_every_route_gets_its_status_and_json_errors(
    target: Target, method: str, path: str
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", target.port, timeout=20)
    try:
        connection.request(method, path, body=b"payload=x" if method in ("POST", "PUT", "PATCH") else None)
        response = connection.getresponse()
        status, headers, body = (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()
    assert status == expected_status(method, path)
    if status == 405:
        assert "POST" in headers["allow"] or "GET" in headers["allow"]
    if status >= 400 and method != "HEAD":
        assert headers["content-type"].startswith("application/json") and "error" in json.loads(body)


# --- the Slack endpoint -------------------------------------------------------------------------------------
def deep_payload(levels: int) -> str:
    return '{"type": "block_actions", "actions": ' + "[" * levels + "]" * levels + "}"


def test_a_validly_signed_payload_nested_100000_deep_is_400(target: Target) -> None:
    body = press_body(1, payload=deep_payload(100_000))
    assert len(body) < LIMIT
    answer = exchange(target.port, slack_post(body, sign(SECRET, int(time.time()), body)))
    assert_json_error(answer, 400)
    assert "RecursionError" not in target.logs.text()


def test_an_unsigned_deep_payload_is_401_before_anything_is_parsed(target: Target) -> None:
    body = press_body(1, payload=deep_payload(100_000))
    assert exchange(target.port, slack_post(body, {})).status == 401


BAD_SIGNATURES: dict[str, Callable[[bytes], dict[str, str]]] = {
    "missing": lambda body: {},
    "wrong secret": lambda body: sign("not-the-secret", int(time.time()), body),
    "stale by 301 s": lambda body: sign(SECRET, int(time.time()) - 301, body),
    "from the future by 301 s": lambda body: sign(SECRET, int(time.time()) + 301, body),
    "timestamp of 5,000 digits": lambda body: {
        **sign(SECRET, int(time.time()), body),
        "X-Slack-Request-Timestamp": DIGITS,
    },
}


@pytest.mark.parametrize("name", BAD_SIGNATURES)
def test_a_bad_signature_is_401_saying_only_unauthorized(target: Target, name: str) -> None:
    body = press_body(target.seeded.open_id)
    answer = exchange(target.port, slack_post(body, BAD_SIGNATURES[name](body)))
    assert answer.status == 401
    assert answer.json() == {"error": "unauthorized"}


def test_a_signed_press_whose_response_url_is_not_https_is_accepted(target: Target) -> None:
    body = press_body(target.seeded.open_id, response_url="http://hooks.slack.test/not-tls")
    answer = exchange(target.port, slack_post(body, sign(SECRET, int(time.time()), body)))
    assert answer.status == 200, answer.raw[:300]
    assert "invalid payload" not in answer.body.decode()


def test_a_signed_body_that_is_not_a_form_is_400(target: Target) -> None:
    body = b"&".join(b"f%d=1" % i for i in range(50))
    assert_json_error(exchange(target.port, slack_post(body, sign(SECRET, int(time.time()), body))), 400)


# --- slow and stalled clients -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", STALLS)
def test_stalled_and_slow_clients_are_answered_or_cut_off(target: Target, name: str) -> None:
    answer = target.stalls[name].result(timeout=60)
    if name.startswith("body"):
        assert_json_error(answer, 408)
    elif name.startswith("slow but finishing"):
        assert answer.status == 200
    else:
        assert answer.status is None and answer.raw == b""  # closed, nothing said


# --- many clients at once ---------------------------------------------------------------------------------
def test_1000_concurrent_requests_are_all_answered_while_healthz_keeps_answering(target: Target) -> None:
    result = crowd(target.port, 1000)
    assert (result.crowd_ok, result.crowd_failed) == (1000, 0)
    assert result.watch_failed == 0 and result.watch_ok >= 3


def test_1000_connections_holding_half_a_request_do_not_stop_healthz(target: Target) -> None:
    result = crowd(target.port, 1000, idle=True)
    assert (result.crowd_ok, result.crowd_failed) == (1000, 0)
    assert result.watch_failed == 0 and result.watch_ok >= 3


def test_pipelined_requests_are_answered_in_order(target: Target) -> None:
    keep = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = exchange(target.port, keep * 20 + request("GET", "/readyz"))
    assert answer.raw.count(b"HTTP/1.1 200") == 21


def test_http_1_0_is_answered(target: Target) -> None:
    assert exchange(target.port, b"GET /healthz HTTP/1.0\r\n\r\n").status == 200


# --- what the log keeps -------------------------------------------------------------------------------------
def test_bad_paths_are_logged_as_a_short_escaped_fragment_only(target: Target) -> None:
    exchange(target.port, request("GET", "/%1b[2J" + "7" * 1900))
    exchange(target.port, request("GET", "/" + "8" * 5000))
    logged = target.logs.text()
    assert "7" * 200 not in logged and "8" * 200 not in logged
    assert "\x1b" not in logged and "\\x1b" in logged
    assert SECRET not in logged
