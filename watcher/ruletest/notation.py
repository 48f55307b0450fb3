"""The input notations of rule unit tests, as promtool's test files write them.

Values, spaced by the test's `interval`, one token per whitespace-separated word:

    1 2.5 -3 1e3 Inf -Inf NaN   single values
    a+bxn  a-bxn               n+1 values: a, a+b, ..., a+n*b (so `0+10x3` is 0 10 20 30)
    axn                        n+1 times a
    _                          no sample at this step
    _xn                        no sample for n steps

`stale` (promtool's staleness marker) is refused: a stale marker cannot be written through
OpenMetrics into backfilled blocks. `_` leaves a gap that Prometheus bridges for its lookback
delta (5m); range functions such as rate() treat both the same way.

Series are written as PromQL shows them: `name{label="value", ...}` (or `{__name__="name", ...}`),
with double or single quotes.

Expected failures are returned as NotationError values, never raised.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# A test that writes more points than this is a typo (`0+1x100000000`), not a test.
MAX_POINTS = 100_000

_NUMBER = r"[+-]?(?:Inf|inf|NaN|nan|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
_UNSIGNED = r"(?:Inf|inf|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
_EXPANDING = re.compile(rf"(?P<start>{_NUMBER})(?:(?P<sign>[+-])(?P<step>{_UNSIGNED}))?x(?P<times>[0-9]+)")
_SINGLE = re.compile(_NUMBER)
_GAPS = re.compile(r"_x(?P<times>[0-9]+)")

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}

# One step of a series: a number, or None for no sample.
Point = float | None


@dataclass(frozen=True)
class NotationError:
    message: str


@dataclass(frozen=True)
class SeriesId:
    """A series' metric name and labels (without __name__)."""

    name: str
    labels: tuple[tuple[str, str], ...]  # sorted by label name

    def __str__(self) -> str:
        pairs = ", ".join(f'{key}="{_escape(value)}"' for key, value in self.labels)
        return f"{self.name}{{{pairs}}}" if pairs else self.name

    def openmetrics(self) -> str:
        """The series as an OpenMetrics sample line starts."""
        if not self.labels:
            return self.name
        return self.name + "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in self.labels) + "}"


def parse_values(text: str) -> list[Point] | NotationError:
    """`0+10x3 _ 5` -> [0, 10, 20, 30, None, 5]."""
    points: list[Point] = []
    for position, token in enumerate(text.split(), start=1):
        expanded = _token_points(token)
        if isinstance(expanded, NotationError):
            return NotationError(f"value {position} '{token}': {expanded.message}")
        points.extend(expanded)
        if len(points) > MAX_POINTS:
            return NotationError(f"more than {MAX_POINTS} values: shorten the series or widen its interval")
    if not points:
        return NotationError("no values: write e.g. '0+10x20' or '1 2 3'")
    return points


def _token_points(token: str) -> list[Point] | NotationError:
    if token == "_":
        return [None]
    if token == "stale":
        return NotationError(
            "stale markers cannot be backfilled into Prometheus blocks: write _ for a missing sample"
        )
    gaps = _GAPS.fullmatch(token)
    if gaps is not None:
        return _repeat(None, int(gaps["times"]))
    single = _SINGLE.fullmatch(token)
    if single is not None:
        return [float(token)]
    expanding = _EXPANDING.fullmatch(token)
    if expanding is None:
        return NotationError("expected a number, a+bxn, a-bxn, axn, _ or _xn")
    times = int(expanding["times"])
    if times >= MAX_POINTS:
        return NotationError(f"x{times} repeats more than {MAX_POINTS} times")
    start = float(expanding["start"])
    step = float(expanding["step"] or 0.0) * (-1.0 if expanding["sign"] == "-" else 1.0)
    points: list[Point] = [start]
    current = start
    for _ in range(times):
        # Accumulated as promtool does, so the same file gives the same floats.
        current += step
        points.append(current)
    return points


def _repeat(point: Point, times: int) -> list[Point] | NotationError:
    if times > MAX_POINTS:
        return NotationError(f"x{times} repeats more than {MAX_POINTS} times")
    return [point] * times


def parse_series(text: str) -> SeriesId | NotationError:
    """`m{a="1", b='2'}` -> SeriesId("m", (("a", "1"), ("b", "2")))."""
    scanner = _Scanner(text.strip())
    name = scanner.take(_METRIC_NAME)
    labels: dict[str, str] = {}
    if scanner.skip("{"):
        parsed = _labels(scanner)
        if isinstance(parsed, NotationError):
            return parsed
        labels = parsed
    if not scanner.at_end():
        return NotationError(f"unexpected '{scanner.rest()[:20]}' at character {scanner.index + 1}")
    if "__name__" in labels:
        if name:
            return NotationError("the metric name is given twice (before the braces and as __name__)")
        name = labels.pop("__name__")
        if not _METRIC_NAME.fullmatch(name):
            return NotationError(f"'{name}' is not a valid metric name")
    if not name:
        return NotationError('a series needs a metric name: write e.g. requests_total{model="m"}')
    return SeriesId(name, tuple(sorted(labels.items())))


def _labels(scanner: _Scanner) -> dict[str, str] | NotationError:
    labels: dict[str, str] = {}
    while not scanner.skip("}"):
        label = scanner.take(_LABEL_NAME)
        if not label:
            return NotationError(f"expected a label name or '}}' at character {scanner.index + 1}")
        if not scanner.skip("="):
            return NotationError(f"expected '=' after label '{label}'")
        value = _quoted(scanner)
        if isinstance(value, NotationError):
            return NotationError(f"label '{label}': {value.message}")
        if label in labels:
            return NotationError(f"label '{label}' is given twice")
        labels[label] = value
        if not scanner.skip(",") and not scanner.peek("}"):
            return NotationError(f"expected ',' or '}}' after label '{label}'")
    return labels


def _quoted(scanner: _Scanner) -> str | NotationError:
    scanner.blank()
    quote = scanner.next_char()
    if quote not in ('"', "'"):
        return NotationError("expected a quoted value")
    chars: list[str] = []
    while True:
        char = scanner.next_char()
        if char == "":
            return NotationError("the quoted value is not closed")
        if char == quote:
            return "".join(chars)
        if char == "\\":
            escaped = _ESCAPES.get(scanner.next_char())
            if escaped is None:
                return NotationError("unknown escape: use \\\\, \\\", \\', \\n or \\t")
            char = escaped
        chars.append(char)


class _Scanner:
    """Reads a series text left to right; whitespace between tokens is skipped."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.index = 0

    def blank(self) -> None:
        while self.index < len(self.text) and self.text[self.index].isspace():
            self.index += 1

    def take(self, pattern: re.Pattern[str]) -> str:
        self.blank()
        match = pattern.match(self.text, self.index)
        if match is None:
            return ""
        self.index = match.end()
        return match.group(0)

    def skip(self, literal: str) -> bool:
        if self.peek(literal):
            self.index += len(literal)
            return True
        return False

    def peek(self, literal: str) -> bool:
        self.blank()
        return self.text.startswith(literal, self.index)

    def next_char(self) -> str:
        """The next character as is (inside quotes blanks count), or '' at the end."""
        if self.index >= len(self.text):
            return ""
        self.index += 1
        return self.text[self.index - 1]

    def at_end(self) -> bool:
        self.blank()
        return self.index >= len(self.text)

    def rest(self) -> str:
        return self.text[self.index :]


def openmetrics_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
