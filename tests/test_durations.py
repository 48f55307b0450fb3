"""Prometheus-style durations and rate limits."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from watcher.rules.durations import (
    Duration,
    InvalidDuration,
    InvalidRateLimit,
    PositiveDuration,
    RateLimit,
    RateLimitField,
    format_duration,
    parse_duration,
    parse_rate_limit,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("1y", timedelta(days=365)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("90s", timedelta(seconds=90)),
        ("0s", timedelta(0)),
        ("0", timedelta(0)),
    ],
)
def test_parses_prometheus_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "5",
        "-1m",
        "1.5h",
        "5 m",
        " 5m",
        "5M",
        "1m1h",
        "1h1h",
        "ms",
        "5min",
        "1s500ms100ms",
        "1e3s",
        "3 days",
    ],
)
def test_refuses_what_prometheus_refuses(text: str) -> None:
    parsed = parse_duration(text)
    assert isinstance(parsed, InvalidDuration)
    assert "duration" in parsed.message


def test_refuses_a_duration_too_long_for_timedelta() -> None:
    assert isinstance(parse_duration("99999999999y"), InvalidDuration)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(hours=24), "1d"),
        (timedelta(days=8), "1w1d"),
        (timedelta(days=366, seconds=1), "1y1d1s"),
    ],
)
def test_formats_the_shortest_spelling(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@given(st.integers(min_value=0, max_value=10**12))
def test_format_then_parse_is_identity(milliseconds: int) -> None:
    value = timedelta(milliseconds=milliseconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 per 24h", RateLimit(3, timedelta(hours=24))),
        ("0 per 1h", RateLimit(0, timedelta(hours=1))),
        ("10 per 1h30m", RateLimit(10, timedelta(minutes=90))),
    ],
)
def test_parses_rate_limits(text: str, expected: RateLimit) -> None:
    assert parse_rate_limit(text) == expected


@pytest.mark.parametrize(
    "text", ["3", "3 per", "three per 24h", "3 per day", "3 per 0s", "-3 per 1h", "3/24h"]
)
def test_refuses_bad_rate_limits(text: str) -> None:
    assert isinstance(parse_rate_limit(text), InvalidRateLimit)


def test_rate_limit_reads_back_as_written() -> None:
    assert str(RateLimit(3, timedelta(hours=24))) == "3 per 1d"


class _Model(BaseModel):
    every: Duration = timedelta(seconds=30)
    interval: PositiveDuration = timedelta(seconds=30)
    limit: RateLimitField = RateLimit(3, timedelta(days=1))


def test_pydantic_fields_parse_and_serialize() -> None:
    model = _Model.model_validate({"every": "1h30m", "interval": "15s", "limit": "2 per 1h"})
    assert model.every == timedelta(minutes=90)
    assert model.limit == RateLimit(2, timedelta(hours=1))
    assert model.model_dump() == {"every": "1h30m", "interval": "15s", "limit": "2 per 1h"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"every": 5}, "a duration needs a unit"),
        ({"every": True}, "expected a duration"),
        ({"every": "soon"}, "invalid duration 'soon'"),
        ({"interval": "0s"}, "must be longer than 0s"),
        ({"limit": 3}, "expected COUNT per DURATION"),
    ],
)
def test_pydantic_fields_refuse_with_a_reason(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _Model.model_validate(data)


def test_a_bare_zero_is_zero() -> None:
    assert _Model.model_validate({"every": 0}).every == timedelta(0)
