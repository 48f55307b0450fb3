"""The recorded clock of a replay: its range, and the moments each rule is evaluated at.

Moments are whole seconds from `--from`: Prometheus' range queries evaluate at start, start+step,
..., and its client rounds start and end to whole seconds, so a rule evaluated on that grid sees
exactly what an instant query at that moment would have answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from watcher.rules.durations import InvalidDuration, parse_duration


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class BadMoment:
    message: str


def parse_moment(text: str, now: datetime) -> datetime | BadMoment:
    """RFC 3339 (a time without an offset is UTC), `now`, or relative to now: `-6h`, `-1d12h`."""
    text = text.strip()
    if text == "now":
        return now
    if text.startswith("-"):
        duration = parse_duration(text[1:])
        if isinstance(duration, InvalidDuration):
            return BadMoment(f"{text!r}: {duration.message}")
        return now - duration
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return BadMoment(f"{text!r} is not a time (RFC 3339 like 2024-05-01T12:00:00Z, or -6h)")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def whole_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def step_seconds(step: timedelta) -> int:
    """A replay step in whole seconds (at least one)."""
    return max(1, round(step.total_seconds()))


def moments(window: TimeRange, step: int) -> list[datetime]:
    """start, start+step, ... up to and including end."""
    count = int((window.end - window.start).total_seconds()) // step + 1
    return [window.start + timedelta(seconds=index * step) for index in range(max(count, 0))]
