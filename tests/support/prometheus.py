"""A real Prometheus for tests, fed by backfilled blocks or by scraping a small local exporter.

The process is the product's LocalPrometheus (watcher.ruletest.prometheus), the one launcher;
here are what only tests need: series as values, scrape configs, and failures raised.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType

import requests

from tests.support.local_server import LocalServer
from watcher.ruletest.prometheus import LocalPrometheus, find_binary
from watcher.ruletest.prometheus import backfill as backfill_blocks


def binaries_missing() -> str | None:
    """Why Prometheus cannot be started here, or None when it can."""
    for name in ("prometheus", "promtool"):
        if find_binary(name) is None:
            return f"{name} not found (Debian package 'prometheus')"
    return None


@dataclass(frozen=True)
class Series:
    """One backfilled series: name, labels and (time, value) points; times are datetimes or Unix s."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    points: Sequence[tuple[datetime | float, float]] = ()


def openmetrics_text(series: Iterable[Series]) -> str:
    """OpenMetrics text for promtool: every series' points in time order, no TYPE lines, `# EOF`."""
    lines: list[str] = []
    for one in series:
        selector = one.name + _label_text(one.labels)
        for at, value in sorted(one.points, key=lambda point: _unix(point[0])):
            lines.append(f"{selector} {_number(value)} {_unix(at):.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


class PrometheusServer(LocalPrometheus):
    """A LocalPrometheus scraping `scrape_targets`; start and backfill raise when they fail."""

    def __init__(
        self,
        work_dir: Path,
        *,
        scrape_targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        lookback_delta: str = "5m",
    ) -> None:
        super().__init__(
            work_dir,
            config=_config_text(scrape_targets, scrape_interval),
            flags=[f"--query.lookback-delta={lookback_delta}"],
        )

    def backfill(self, series: Iterable[Series]) -> None:
        if self.running:
            raise RuntimeError("backfill before start: Prometheus reads its blocks when it starts")
        refused = backfill_blocks(openmetrics_text(series), self.data_dir)
        if refused is not None:
            raise RuntimeError(refused.reason)

    def start(self, ready_within: float = 60.0) -> None:
        failure = super().start(ready_within)
        if failure is not None:
            raise RuntimeError(failure.reason)

    def query(self, promql: str, at: datetime | None = None) -> list[dict[str, object]]:
        """The raw result of an instant query (for test set-up, not for code under test)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        answer = requests.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        answer.raise_for_status()
        result: list[dict[str, object]] = answer.json()["data"]["result"]
        return result

    def wait_for_series(self, promql: str, within: float = 30.0) -> None:
        """Wait until `promql` returns something (scraped data has arrived)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.query(promql):
                return
            time.sleep(0.2)
        raise RuntimeError(f"no data for {promql} after {within}s")

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class MetricsExporter(LocalServer):
    """A /metrics endpoint on a free loopback port serving what the test sets (Prometheus text
    format), or what `make_text` returns at each scrape. Started on creation; `close()` ends it."""

    def __init__(self, make_text: Callable[[], str] | None = None) -> None:
        self._server = None
        self._text = ""
        self._make_text = make_text
        self._lock = threading.Lock()
        self.start()

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    @property
    def target(self) -> str:
        """host:port, as a scrape config names it."""
        return self.url.removeprefix("http://")

    @property
    def text(self) -> str:
        if self._make_text is not None:
            return self._make_text()
        with self._lock:
            return self._text

    def set_text(self, text: str) -> None:
        with self._lock:
            self._text = text

    def set_values(self, values: Mapping[str, float]) -> None:
        """Serve `values`, keyed by series selector: {'req_total{model="a"}': 12.0}."""
        self.set_text("".join(f"{selector} {_number(value)}\n" for selector, value in values.items()))

    def close(self) -> None:
        self.stop()


def _config_text(scrape_targets: Sequence[str], scrape_interval: str) -> str:
    lines = ["global:", f"  scrape_interval: {scrape_interval}", f"  evaluation_interval: {scrape_interval}"]
    if scrape_targets:
        targets = ", ".join(f'"{target}"' for target in scrape_targets)
        lines += [
            "scrape_configs:",
            "  - job_name: exporter",
            "    static_configs:",
            f"      - targets: [{targets}]",
        ]
    return "\n".join(lines) + "\n"


def _label_text(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    pairs = (f'{key}="{_escape(value)}"' for key, value in sorted(labels.items()))
    return "{" + ",".join(pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _unix(at: datetime | float) -> float:
    return at.timestamp() if isinstance(at, datetime) else float(at)
