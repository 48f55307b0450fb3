"""Prometheus-style durations (`500ms`, `30s`, `1h30m`) and rate limits (`3 per 24h`).

Parsing returns a typed failure instead of raising; `Duration` and `RateLimitField` are the
pydantic field types built on top, for configuration models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, PlainSerializer, PlainValidator

from watcher.rules.findings import fragment as _shown

# Units from the largest down, as Prometheus writes them (a year is 365 days, as there).
_UNITS: tuple[tuple[str, timedelta], ...] = (
    ("y", timedelta(days=365)),
    ("w", timedelta(weeks=1)),
    ("d", timedelta(days=1)),
    ("h", timedelta(hours=1)),
    ("m", timedelta(minutes=1)),
    ("s", timedelta(seconds=1)),
    ("ms", timedelta(milliseconds=1)),
)
_PATTERN = re.compile("".join(rf"(?:(?P<{unit}>[0-9]+){unit})?" for unit, _ in _UNITS))
_HINT = "expected a duration such as 500ms, 30s, 5m, 2h, 1d or 1h30m"
# Beyond this, timedelta overflows; nobody means a rule interval of ten thousand years.
_MAX_DAYS = 3_650_000


@dataclass(frozen=True)
class InvalidDuration:
    message: str


def parse_duration(text: str) -> timedelta | InvalidDuration:
    """`1h30m` -> 90 minutes. Units in descending order, each at most once; `0` is zero."""
    if text == "0":
        return timedelta(0)
    match = _PATTERN.fullmatch(text)
    if not text or match is None:
        return InvalidDuration(f"invalid duration '{_shown(text)}': {_HINT}")
    total = timedelta(0)
    for unit, size in _UNITS:
        count = match.group(unit)
        if count is not None:
            if int(count) * size.total_seconds() > _MAX_DAYS * 86400:
                return InvalidDuration(f"duration '{_shown(text)}' is too long")
            total += int(count) * size
    return total


def format_duration(value: timedelta) -> str:
    """The shortest Prometheus spelling: 90 minutes -> `1h30m`, zero -> `0s`."""
    millis = round(value.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    sign = "-" if millis < 0 else ""
    millis = abs(millis)
    parts: list[str] = []
    for unit, size in _UNITS:
        unit_millis = round(size.total_seconds() * 1000)
        count, millis = divmod(millis, unit_millis)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)


@dataclass(frozen=True)
class RateLimit:
    """At most `count` events in any `period`."""

    count: int
    period: timedelta

    def __str__(self) -> str:
        return f"{self.count} per {format_duration(self.period)}"


@dataclass(frozen=True)
class InvalidRateLimit:
    message: str


_RATE = re.compile(r"\s*([0-9]+)\s+per\s+(\S+)\s*")


def parse_rate_limit(text: str) -> RateLimit | InvalidRateLimit:
    """`3 per 24h` -> RateLimit(3, 24 hours). The period must be longer than zero."""
    match = _RATE.fullmatch(text)
    if match is None:
        return InvalidRateLimit(
            f"invalid rate limit '{_shown(text)}': expected COUNT per DURATION, e.g. '3 per 24h'"
        )
    period = parse_duration(match.group(2))
    if isinstance(period, InvalidDuration):
        return InvalidRateLimit(
            f"invalid rate limit '{_shown(text)}': '{_shown(match.group(2))}' is not a duration such as 24h"
        )
    if period <= timedelta(0):
        return InvalidRateLimit(f"invalid rate limit '{_shown(text)}': the period must be longer than 0s")
    return RateLimit(count=int(match.group(1)), period=period)


def _validate_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    # YAML reads a bare `0` as a number; any other number lacks its unit.
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return timedelta(0)
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"a duration needs a unit: {_HINT}")
    if not isinstance(value, str):
        raise ValueError(_HINT)
    parsed = parse_duration(value)
    if isinstance(parsed, InvalidDuration):
        raise ValueError(parsed.message)
    return parsed


def _validate_rate_limit(value: Any) -> RateLimit:
    if isinstance(value, RateLimit):
        return value
    if not isinstance(value, str):
        raise ValueError("expected COUNT per DURATION, e.g. '3 per 24h'")
    parsed = parse_rate_limit(value)
    if isinstance(parsed, InvalidRateLimit):
        raise ValueError(parsed.message)
    return parsed


Duration = Annotated[timedelta, PlainValidator(_validate_duration), PlainSerializer(format_duration)]
RateLimitField = Annotated[RateLimit, PlainValidator(_validate_rate_limit), PlainSerializer(str)]


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
