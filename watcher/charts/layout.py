"""The chart's geometry: ChartData in, a list of drawing primitives in pixel coordinates out.

Both renderers (SVG for the pages, PNG for Slack) draw exactly these primitives with the same
palette, so the two pictures cannot drift apart. Pure: no I/O, no clock.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from watcher.charts.model import ChartData, Line, MarkKind, SpanKind


class Role(StrEnum):
    BACKGROUND = "background"
    GRID = "grid"
    AXIS_TEXT = "axis-text"
    TITLE = "title"
    PENDING = "pending"
    FIRING = "firing"
    THRESHOLD = "threshold"
    SERIES = "series"
    VERSION = "version"
    ROLLBACK = "rollback"
    OPENED = "opened"
    RESOLVED = "resolved"
    VERIFIED = "verified"
    NOTE = "note"


@dataclass(frozen=True)
class Style:
    stroke: str | None = None
    fill: str | None = None
    width: float = 1.0
    dash: tuple[float, ...] = ()
    opacity: float = 1.0
    font_size: float = 11.0


# Colours picked to read on white and to stay apart for the colour-blind (blue series, orange
# threshold, grey-blue pending, red firing).
SERIES_COLOURS = ("#1f5fbf", "#7a3fb0", "#2a8a5a", "#b0662a", "#4a4a4a")
PALETTE: dict[Role, Style] = {
    Role.BACKGROUND: Style(fill="#ffffff", stroke="#c8ccd2"),
    Role.GRID: Style(stroke="#e6e8eb"),
    Role.AXIS_TEXT: Style(fill="#5a6270", font_size=10.0),
    Role.TITLE: Style(fill="#1d2430", font_size=12.0),
    Role.PENDING: Style(fill="#f2c14e", opacity=0.28),
    Role.FIRING: Style(fill="#d64545", opacity=0.22),
    Role.THRESHOLD: Style(stroke="#e07b00", width=1.5, dash=(6.0, 4.0)),
    Role.SERIES: Style(stroke=SERIES_COLOURS[0], width=1.8),
    Role.VERSION: Style(stroke="#6b7280", width=1.2, dash=(2.0, 3.0), fill="#374151", font_size=10.0),
    Role.ROLLBACK: Style(stroke="#0f8a4a", width=2.0, fill="#0f6a3a", font_size=10.0),
    Role.OPENED: Style(stroke="#b42318", width=1.2, fill="#b42318", font_size=10.0),
    Role.RESOLVED: Style(stroke="#2563eb", width=1.2, fill="#1d4ed8", font_size=10.0),
    Role.VERIFIED: Style(stroke="#0f8a4a", width=1.2, dash=(4.0, 2.0), fill="#0f6a3a", font_size=10.0),
    Role.NOTE: Style(fill="#6b7280", font_size=12.0),
}
_MARK_ROLES = {
    MarkKind.VERSION: Role.VERSION,
    MarkKind.ROLLBACK: Role.ROLLBACK,
    MarkKind.OPENED: Role.OPENED,
    MarkKind.RESOLVED: Role.RESOLVED,
    MarkKind.VERIFIED: Role.VERIFIED,
}


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    role: Role


@dataclass(frozen=True)
class Path:
    points: tuple[tuple[float, float], ...]
    role: Role
    colour: str | None = None  # a series' own colour; None: the role's
    series: int | None = None  # which line of the chart this path draws


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    role: Role
    anchor: str = "start"  # start | middle | end


Primitive = Rect | Path | Text


@dataclass(frozen=True)
class Drawing:
    width: int
    height: int
    title: str
    items: tuple[Primitive, ...]
    series_points: tuple[int, ...]  # how many points each line holds (for tests and alt text)


@dataclass(frozen=True)
class _Frame:
    """The plot area and the two scales."""

    left: float
    top: float
    right: float
    bottom: float
    start: datetime
    end: datetime
    low: float
    high: float

    def x(self, at: datetime) -> float:
        span = (self.end - self.start).total_seconds() or 1.0
        share = (at - self.start).total_seconds() / span
        return self.left + max(0.0, min(1.0, share)) * (self.right - self.left)

    def y(self, value: float) -> float:
        share = (value - self.low) / ((self.high - self.low) or 1.0)
        return self.bottom - max(0.0, min(1.0, share)) * (self.bottom - self.top)


def nice_step(span: float, target_ticks: int) -> float:
    """A 1-2-5 step that cuts `span` into about `target_ticks` pieces."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(1, target_ticks)
    magnitude: float = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return float(factor * magnitude)
    return 10.0 * magnitude


def value_range(chart: ChartData) -> tuple[float, float]:
    values = [p.value for line in chart.lines for p in line.points if math.isfinite(p.value)]
    if chart.threshold is not None:
        values.append(chart.threshold)
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    if low == high:
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.08
    low = 0.0 if low >= 0 and low - pad < 0 else low - pad
    return low, high + pad


_TIME_STEPS = [
    timedelta(seconds=s)
    for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
]


def time_ticks(start: datetime, end: datetime, target_ticks: int) -> list[datetime]:
    span = end - start
    step = next((s for s in _TIME_STEPS if span / s <= target_ticks), _TIME_STEPS[-1])
    seconds = int(step.total_seconds())
    first = math.ceil(start.timestamp() / seconds) * seconds
    ticks = []
    moment = first
    while moment <= end.timestamp():
        ticks.append(datetime.fromtimestamp(moment, UTC))
        moment += seconds
    return ticks


def time_label(at: datetime, span: timedelta) -> str:
    utc = at.astimezone(UTC)
    if span > timedelta(days=2):
        return utc.strftime("%m-%d %H:%M")
    return utc.strftime("%H:%M:%S") if span <= timedelta(minutes=10) else utc.strftime("%H:%M")


def value_label(value: float) -> str:
    return f"{value:.4g}"


def layout(chart: ChartData, width: int = 760, height: int = 260, compact: bool = False) -> Drawing:
    """The drawing of `chart` in a `width` x `height` pixel box; `compact` drops axes and labels
    (the small charts of the rules page)."""
    low, high = value_range(chart)
    frame = (
        _Frame(2, 2, width - 2, height - 2, chart.start, chart.end, low, high)
        if compact
        else _Frame(56, 34, width - 14, height - 26, chart.start, chart.end, low, high)
    )
    items: list[Primitive] = [Rect(0, 0, width, height, Role.BACKGROUND)]
    if not compact:
        items += _axes(frame, chart)
    items += _spans(frame, chart)
    if chart.threshold is not None:
        y = frame.y(chart.threshold)
        items.append(Path(((frame.left, y), (frame.right, y)), Role.THRESHOLD))
    for index, line in enumerate(chart.lines):
        items += _series_paths(frame, line, index)
    items += _marks(frame, chart, compact)
    if chart.note and (not compact or not chart.lines):
        items.append(Text((frame.left + frame.right) / 2, (frame.top + frame.bottom) / 2, chart.note,
                          Role.NOTE, "middle"))  # fmt: skip
    return Drawing(width, height, chart.title, tuple(items), tuple(len(line.points) for line in chart.lines))


def _axes(frame: _Frame, chart: ChartData) -> list[Primitive]:
    items: list[Primitive] = [Text(frame.left, 16, chart.title, Role.TITLE)]
    step = nice_step(frame.high - frame.low, 4)
    tick = math.ceil(frame.low / step) * step
    while tick <= frame.high + step * 1e-9:
        y = frame.y(tick)
        items.append(Path(((frame.left, y), (frame.right, y)), Role.GRID))
        items.append(Text(frame.left - 6, y + 3.5, value_label(tick), Role.AXIS_TEXT, "end"))
        tick += step
    span = frame.end - frame.start
    for moment in time_ticks(frame.start, frame.end, 7):
        x = frame.x(moment)
        items.append(Path(((x, frame.top), (x, frame.bottom)), Role.GRID))
        items.append(Text(x, frame.bottom + 15, time_label(moment, span), Role.AXIS_TEXT, "middle"))
    if chart.threshold is not None:
        label = f"threshold {value_label(chart.threshold)} ({chart.comparison})"
        items.append(Text(frame.right, 16, label, Role.THRESHOLD, "end"))
    return items


def _spans(frame: _Frame, chart: ChartData) -> list[Primitive]:
    items: list[Primitive] = []
    for span in chart.spans:
        left, right = frame.x(span.start), frame.x(span.end)
        role = Role.PENDING if span.kind is SpanKind.PENDING else Role.FIRING
        items.append(Rect(left, frame.top, max(1.0, right - left), frame.bottom - frame.top, role))
    return items


def _series_paths(frame: _Frame, line: Line, index: int) -> list[Primitive]:
    """One path per stretch of data: a gap (no data) is left open, never bridged."""
    colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
    points = [p for p in line.points if math.isfinite(p.value)]
    gap = _gap_limit([p.at for p in points])
    paths: list[Primitive] = []
    stretch: list[tuple[float, float]] = []
    previous: datetime | None = None
    for point in points:
        if previous is not None and gap is not None and point.at - previous > gap and stretch:
            paths.append(Path(tuple(stretch), Role.SERIES, colour, index))
            stretch = []
        stretch.append((round(frame.x(point.at), 2), round(frame.y(point.value), 2)))
        previous = point.at
    if stretch:
        paths.append(Path(tuple(stretch), Role.SERIES, colour, index))
    return paths


def _gap_limit(times: Sequence[datetime]) -> timedelta | None:
    if len(times) < 3:
        return None
    steps = sorted(later - earlier for earlier, later in itertools.pairwise(times))
    return steps[len(steps) // 2] * 3


def _marks(frame: _Frame, chart: ChartData, compact: bool) -> list[Primitive]:
    items: list[Primitive] = []
    ordered = sorted(chart.marks, key=lambda mark: mark.at)
    last_label_x: list[float] = []
    for mark in ordered:
        if not chart.start <= mark.at <= chart.end:
            continue
        role = _MARK_ROLES[mark.kind]
        x = frame.x(mark.at)
        items.append(Path(((x, frame.top), (x, frame.bottom)), role))
        if compact:
            continue
        # Labels that would overlap step down a row; four rows, then they wrap around.
        row = sum(1 for seen in last_label_x if abs(seen - x) < 70) % 4
        last_label_x.append(x)
        anchor = "end" if x > frame.right - 60 else "start"
        items.append(
            Text(x + (3 if anchor == "start" else -3), frame.top + 11 + row * 12, mark.label, role, anchor)
        )
    return items
