"""Logging set-up: JSON lines for machines, readable lines for people, secrets masked in both.

Not on a terminal (systemd, Kubernetes, a pipe), every record is one JSON object on stderr with
`ts` (UTC, ISO 8601), `level`, `logger`, `msg` and whatever the caller passed as `extra={...}`.
On a terminal the same record is one readable line with the extras as key=value.

Secrets are masked twice: a filter rewrites the record's message and extra fields (so nothing
downstream sees them), and the formatters mask their final text too, because a traceback is only
rendered after the filters ran and may quote a URL or a header.
"""

from __future__ import annotations

import json as jsonlib
import logging
import math
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TextIO

MASK = "***"

_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Slack bot, user, app-level and other tokens: xoxb-…, xoxp-…, xoxa-…, xapp-…
    (re.compile(r"\b(xox[abposre])-[A-Za-z0-9-]+"), rf"\1-{MASK}"),
    (re.compile(r"\bxapp-[A-Za-z0-9-]+"), f"xapp-{MASK}"),
    # Authorization: Bearer <token>
    (re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE), rf"\1 {MASK}"),
    # scheme://user:password@host (database and HTTP URLs)
    (re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^@\s/]+@"), rf"\1:{MASK}@"),
    # password=… in query strings and libpq-style connection strings
    (
        re.compile(r"\b(password|passwd|pwd|token|secret|api_key|apikey)=[^&\s;'\",]+", re.IGNORECASE),
        rf"\1={MASK}",
    ),
)

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_CORE_KEYS = ("ts", "level", "logger", "msg")


def redact(text: str) -> str:
    """`text` with Slack tokens, bearer tokens and URL or query-string passwords masked."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any) -> Any:
    """Mask secrets in every string inside `value` (mappings, lists and tuples recursively)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact_value(key): redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES}


class RedactionFilter(logging.Filter):
    """Masks secrets in the message, its arguments and every extra field of a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for key, value in extra_fields(record).items():
            setattr(record, key, redact_value(value))
        return True


def _utc_timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_safe(value: Any) -> Any:
    """Non-finite floats as Prometheus spells them (strict JSON has no NaN); the rest as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": _utc_timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            if key not in _CORE_KEYS:
                payload[key] = _json_safe(value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return redact(jsonlib.dumps(payload, ensure_ascii=False, allow_nan=False))


class HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = [
            f"{key}={_json_safe(value)}" for key, value in extra_fields(record).items() if value is not None
        ]
        if extras:
            line += "  " + " ".join(extras)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return redact(line)


class _WatcherHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler setup_logging installed, so calling it again replaces it."""


def _level_number(level: int | str) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning or error")
    return number


def setup_logging(level: int | str = "info", json: bool | None = None, stream: TextIO | None = None) -> None:
    """Send every log record to `stream` (stderr by default); JSON unless it is a terminal.

    `json` forces one format or the other. Calling it again replaces the earlier set-up.
    """
    level_number = _level_number(level)
    target = stream if stream is not None else sys.stderr
    use_json = json if json is not None else not _is_terminal(target)
    handler = _WatcherHandler(target)
    handler.addFilter(RedactionFilter())
    handler.setFormatter(JsonFormatter() if use_json else HumanFormatter())
    root = logging.getLogger()
    for existing in [h for h in root.handlers if isinstance(h, _WatcherHandler)]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level_number)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or file-like objects without a terminal
        return False
