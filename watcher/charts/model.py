"""What a chart shows, independent of how it is drawn: lines of values, the threshold, the
pending and firing spans, and the moments worth marking (version changes, the rollback)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class SpanKind(StrEnum):
    PENDING = "pending"  # breaching, `for` not yet over
    FIRING = "firing"


class MarkKind(StrEnum):
    VERSION = "version"  # the target's live version changed
    ROLLBACK = "rollback"
    OPENED = "opened"
    RESOLVED = "resolved"
    VERIFIED = "verified"


@dataclass(frozen=True)
class Point:
    at: datetime
    value: float


@dataclass(frozen=True)
class Line:
    label: str
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime
    kind: SpanKind


@dataclass(frozen=True)
class Mark:
    at: datetime
    kind: MarkKind
    label: str


@dataclass(frozen=True)
class ChartData:
    title: str
    start: datetime
    end: datetime
    lines: tuple[Line, ...] = ()
    threshold: float | None = None
    comparison: str = "above"  # "above" or "below": the side of the threshold that breaches
    spans: tuple[Span, ...] = ()
    marks: tuple[Mark, ...] = ()
    note: str | None = None  # why the chart is empty or partial (Prometheus unreachable, ...)

    @property
    def point_count(self) -> int:
        return sum(len(line.points) for line in self.lines)


def breach_test(threshold: float | None, comparison: str) -> Callable[[float], bool]:
    """value > threshold for `above`, value < threshold for `below`; NaN never breaches."""
    if threshold is None:
        return lambda value: False
    if comparison == "below":
        return lambda value: not math.isnan(value) and value < threshold
    return lambda value: not math.isnan(value) and value > threshold


def _runs(
    points: Sequence[Point], breaches: Callable[[float], bool], gap: timedelta
) -> list[tuple[datetime, datetime]]:
    """Stretches of consecutive breaching points; a run ends at the first point that does not
    breach (or at a gap in the data, which is no data: never a breach)."""
    runs: list[tuple[datetime, datetime]] = []
    start: datetime | None = None
    last: datetime | None = None
    for point in points:
        broken = last is not None and point.at - last > gap
        if start is not None and (broken or not breaches(point.value)):
            runs.append((start, point.at if not broken else last or start))
            start = None
        if start is None and breaches(point.value):
            start = point.at
        last = point.at
    if start is not None and last is not None:
        runs.append((start, last))
    return runs


def state_spans(
    points: Sequence[Point],
    breaches: Callable[[float], bool],
    for_: timedelta,
    step: timedelta,
    keep_firing_for: timedelta = timedelta(0),
) -> tuple[Span, ...]:
    """Pending and firing spans as the rule's state machine would see them at the chart's
    resolution: a run of breaches is pending for `for_`, then firing (kept `keep_firing_for` on)."""
    spans: list[Span] = []
    for start, end in _runs(points, breaches, gap=step * 3):
        fires_at = start + for_
        if for_ > timedelta(0):
            spans.append(Span(start, min(fires_at, end), SpanKind.PENDING))
        if end > fires_at or (for_ == timedelta(0)):
            spans.append(Span(fires_at, end + keep_firing_for, SpanKind.FIRING))
    return tuple(spans)
