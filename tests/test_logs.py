"""Log set-up: JSON lines off a terminal, readable lines on one, secrets masked everywhere."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime

import pytest

from watcher.logs import redact, setup_logging

SLACK_BOT = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_APP = "xapp-1-A0123456789-1234567890123-abcdef0123456789"
SLACK_USER = "xoxp-1111-2222-3333-deadbeefcafe"
SECRETS = (SLACK_BOT, SLACK_APP, SLACK_USER, "s3cr3t-pass", "eyJhbGciOiJIUzI1NiJ9.tokenbody")


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_the_core_keys_and_the_extras() -> None:
    stream = io.StringIO()
    setup_logging("info", json=True, stream=stream)

    logging.getLogger("watcher.engine.tick").info(
        "evaluated %s: %s", "m/r", "breach", extra={"rule": "m/r", "value": 0.31, "state_to": "firing"}
    )

    [line] = json_lines(stream)
    assert line["level"] == "info"
    assert line["logger"] == "watcher.engine.tick"
    assert line["msg"] == "evaluated m/r: breach"
    assert line["rule"] == "m/r"
    assert line["value"] == 0.31
    assert line["state_to"] == "firing"
    stamp = datetime.fromisoformat(str(line["ts"]).replace("Z", "+00:00"))
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_json_stays_strict_json_for_infinities_and_odd_objects() -> None:
    stream = io.StringIO()
    setup_logging("info", json=True, stream=stream)

    odd = {"value": float("inf"), "nan": float("nan"), "when": datetime(2024, 1, 1), "obj": object()}
    logging.getLogger("t").warning("odd", extra=odd)

    raw = stream.getvalue()
    assert "Infinity" not in raw and "NaN," not in raw
    [line] = json_lines(stream)
    assert line["value"] == "+Inf"
    assert line["nan"] == "NaN"
    assert line["when"] == "2024-01-01T00:00:00"
    assert str(line["obj"]).startswith("<object object")


def test_level_filters_records() -> None:
    stream = io.StringIO()
    setup_logging("warning", json=True, stream=stream)
    logging.getLogger("t").info("quiet")
    logging.getLogger("t").warning("loud")
    assert [line["msg"] for line in json_lines(stream)] == ["loud"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("chatty", json=True, stream=io.StringIO())


def test_calling_setup_again_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("info", json=True, stream=first)
    setup_logging("info", json=True, stream=second)
    logging.getLogger("t").info("once")
    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


@pytest.mark.parametrize("as_json", [True, False])
def test_secrets_are_masked_in_message_arguments_extras_and_tracebacks(as_json: bool) -> None:
    stream = io.StringIO()
    setup_logging("debug", json=as_json, stream=stream)
    log = logging.getLogger("watcher.notify")

    log.info("posting with token %s", SLACK_BOT)
    log.info("socket mode with " + SLACK_APP)
    log.info(
        "query failed",
        extra={
            "url": "postgresql+psycopg://analyst:s3cr3t-pass@db.internal:5432/analytics",
            "headers": {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.tokenbody"},
            "tokens": [SLACK_USER],
        },
    )
    try:
        raise RuntimeError(f"connect to mysql://root:s3cr3t-pass@host/db failed with {SLACK_BOT}")
    except RuntimeError:
        log.exception("boom")

    output = stream.getvalue()
    for secret in SECRETS:
        assert secret not in output
    assert "xoxb-***" in output
    assert "xapp-***" in output
    assert "analyst:***@db.internal" in output
    assert "Bearer ***" in output
    assert "RuntimeError" in output  # the traceback is kept, only the secrets go
    if as_json:
        lines = json_lines(stream)
        assert len(lines) == 4
        assert "exc" in lines[-1]


def test_records_reaching_other_handlers_are_masked_too() -> None:
    """The filter rewrites the record itself, so a second handler never sees the secret."""
    stream = io.StringIO()
    setup_logging("info", json=True, stream=stream)
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    logging.getLogger().addHandler(Keep())
    logging.getLogger("t").info("token %s", SLACK_BOT, extra={"db": "sqlite:///x.db"})
    assert SLACK_BOT not in captured[0].getMessage()
    assert captured[0].db == "sqlite:///x.db"  # type: ignore[attr-defined]


def test_human_format_on_request() -> None:
    stream = io.StringIO()
    setup_logging("info", json=False, stream=stream)
    logging.getLogger("watcher.http.server").info("HTTP listening", extra={"listen": "127.0.0.1:9460"})
    line = stream.getvalue().strip()
    assert "INFO" in line and "watcher.http.server: HTTP listening" in line
    assert "listen=127.0.0.1:9460" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_format_follows_the_stream_when_not_forced() -> None:
    pipe = io.StringIO()  # not a terminal: what systemd and Kubernetes give
    setup_logging("info", stream=pipe)
    logging.getLogger("t").info("to a pipe")
    assert json_lines(pipe)[0]["msg"] == "to a pipe"

    leader, follower = os.openpty()
    with os.fdopen(follower, "w", buffering=1) as terminal:
        setup_logging("info", stream=terminal)
        logging.getLogger("t").info("to a terminal")
        terminal.flush()
        shown = os.read(leader, 4096).decode()
    os.close(leader)
    assert "t: to a terminal" in shown
    assert not shown.lstrip().startswith("{")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("xoxb-123-456-abc", "xoxb-***"),
        ("xoxe.xoxp-1-abc", "xoxe.xoxp-***"),
        ("Authorization: bearer abc.def", "Authorization: bearer ***"),
        ("https://user:p%40ss@host/path", "https://user:***@host/path"),
        ("postgresql://:pw@host/db", "postgresql://:***@host/db"),
        ("host=db password=hunter2 user=x", "host=db password=*** user=x"),
        ("https://host/x?a=1&token=abc&b=2", "https://host/x?a=1&token=***&b=2"),
        ("sqlite:///watcher.db", "sqlite:///watcher.db"),
        ("http://127.0.0.1:9090/api/v1/query", "http://127.0.0.1:9090/api/v1/query"),
        ("postgresql://user@host:5432/db", "postgresql://user@host:5432/db"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected
