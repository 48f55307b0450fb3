"""Terminal output of the scenario: timestamped lines, and long steps that show they are alive.

Several threads print at once (the daemon's timeline, the fake Slack, the monitor), so every
line goes through one lock; a running step redraws its spinner line under that lock too.
On a terminal a step is a spinner with elapsed seconds; in a log file it is a start line,
a "still ..." line every few seconds and an end line.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TextIO

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_PLAIN_HEARTBEAT_S = 10.0


class Console:
    """All output of one scenario run, with seconds since the run started in front of lines."""

    def __init__(self, stream: TextIO | None = None, *, color: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._interactive = self._stream.isatty()
        self._color = (self._interactive and "NO_COLOR" not in os.environ) if color is None else color
        self._lock = threading.RLock()
        self._started = time.monotonic()
        self._spinner_text: str | None = None

    def elapsed_s(self) -> float:
        return time.monotonic() - self._started

    def stamp(self) -> str:
        return self.dim(f"[{self.elapsed_s():5.0f}s]")

    def say(self, text: str = "", *, stamp: bool = False) -> None:
        line = f"{self.stamp()} {text}" if stamp else text
        with self._lock:
            self._clear_spinner_line()
            self._stream.write(line + "\n")
            self._draw_spinner()
            self._stream.flush()

    def bold(self, text: str) -> str:
        return self._paint(text, "1")

    def dim(self, text: str) -> str:
        return self._paint(text, "2")

    def green(self, text: str) -> str:
        return self._paint(text, "32")

    def red(self, text: str) -> str:
        return self._paint(text, "31")

    def yellow(self, text: str) -> str:
        return self._paint(text, "33")

    @contextmanager
    def step(self, title: str) -> Iterator[Step]:
        """Show `title` as running until the block ends; an exception marks it failed."""
        step = Step(self, title)
        step.begin()
        try:
            yield step
        except KeyboardInterrupt:
            step.end(failed_reason="interrupted")
            raise
        except BaseException:
            step.end(failed_reason=step.failure or "failed")
            raise
        step.end(failed_reason=step.failure)

    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self._color else text

    # The spinner line is redrawn by the step's thread and cleared before any other output.
    def _set_spinner(self, text: str | None) -> None:
        with self._lock:
            self._clear_spinner_line()
            self._spinner_text = text
            self._draw_spinner()
            self._stream.flush()

    def _clear_spinner_line(self) -> None:
        if self._interactive and self._spinner_text is not None:
            self._stream.write("\r\033[K")

    def _draw_spinner(self) -> None:
        if self._interactive and self._spinner_text is not None:
            self._stream.write(self._spinner_text)

    @property
    def interactive(self) -> bool:
        return self._interactive


class Step:
    """One long step: a spinner (terminal) or heartbeat lines (file) with elapsed seconds."""

    def __init__(self, console: Console, title: str) -> None:
        self._console = console
        self.title = title
        self.failure: str | None = None
        self.detail = ""
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._animate, name=f"step:{title}", daemon=True)

    def fail(self, reason: str) -> None:
        """Mark the step failed without raising (the caller returns a typed failure)."""
        self.failure = reason

    def note(self, detail: str) -> None:
        """A short detail shown at the end of the step line (e.g. the port it listens on)."""
        self.detail = detail

    def begin(self) -> None:
        if not self._console.interactive:
            self._console.say(f"… {self.title}", stamp=True)
        self._thread.start()

    def end(self, *, failed_reason: str | None) -> None:
        self._stop.set()
        self._thread.join()
        self._console._set_spinner(None)
        took = f"({time.monotonic() - self._started:.1f}s)"
        extra = f" {self._console.dim(self.detail)}" if self.detail else ""
        if failed_reason is None:
            self._console.say(
                f"{self._console.green('✓')} {self.title}{extra} {self._console.dim(took)}", stamp=True
            )
        else:
            self._console.say(f"{self._console.red('✗')} {self.title}: {failed_reason} {took}", stamp=True)

    def _animate(self) -> None:
        frame = 0
        next_heartbeat = _PLAIN_HEARTBEAT_S
        while not self._stop.wait(0.1):
            elapsed = time.monotonic() - self._started
            if self._console.interactive:
                glyph = _SPINNER[frame % len(_SPINNER)]
                self._console._set_spinner(f"{self._console.stamp()} {glyph} {self.title} … {elapsed:.0f}s")
                frame += 1
            elif elapsed >= next_heartbeat:
                self._console.say(f"… still {self.title} ({elapsed:.0f}s)", stamp=True)
                next_heartbeat += _PLAIN_HEARTBEAT_S


def forward_output(
    stream: IO[str] | None,
    console: Console,
    label: str,
    raw_log: Path,
    describe: Callable[[str], str | None] | None = None,
) -> threading.Thread:
    """Copy a child's output to `raw_log` and, made readable by `describe`, to the console.

    Reading starts at once: a child whose pipe fills up would stall.
    """

    def pump() -> None:
        if stream is None:
            return
        with raw_log.open("a") as log, contextlib.suppress(ValueError, OSError):
            for line in stream:
                log.write(line)
                log.flush()
                shown = describe(line) if describe is not None else line.rstrip("\n")
                if shown:
                    console.say(f"{label} {shown}", stamp=True)

    thread = threading.Thread(target=pump, name=f"output:{raw_log.name}", daemon=True)
    thread.start()
    return thread
