"""A real Prometheus for tests, fed by backfilled blocks or by scraping a small local exporter.

Backfilled data goes through `promtool tsdb create-blocks-from openmetrics` before Prometheus
starts (Prometheus loads blocks from its data directory at start). Retention is set to ten years so
that the blocks, which lie in the past, are never deleted under the test.
"""

from __future__ import annotations

import math
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

import requests

PROMETHEUS = Path(shutil.which("prometheus") or "/usr/bin/prometheus")
PROMTOOL = Path(shutil.which("promtool") or "/usr/bin/promtool")
# Generous bounds for starting and stopping on a busy machine; waits, never assertions.
_READY_WITHIN = 60.0
_STOP_WITHIN = 30.0


def binaries_missing() -> str | None:
    """Why Prometheus cannot be started here, or None when it can."""
    for binary in (PROMETHEUS, PROMTOOL):
        if not binary.is_file():
            return f"{binary} not found (Debian package 'prometheus')"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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


def backfill(series: Iterable[Series], data_dir: Path) -> None:
    """Write `series` as TSDB blocks into `data_dir` (before Prometheus starts on it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    source = data_dir.parent / f"{data_dir.name}-backfill.om"
    source.write_text(openmetrics_text(series))
    result = subprocess.run(
        [str(PROMTOOL), "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"promtool backfill failed: {result.stderr.strip()}")


class PrometheusServer:
    """One Prometheus process on 127.0.0.1; stoppable and restartable on the same data and port."""

    def __init__(
        self,
        work_dir: Path,
        *,
        scrape_targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        lookback_delta: str = "5m",
    ) -> None:
        self.work_dir = work_dir
        self.data_dir = work_dir / "data"
        self.log_path = work_dir / "prometheus.log"
        self.port = free_port()
        self._lookback_delta = lookback_delta
        self._process: subprocess.Popen[bytes] | None = None
        work_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.config_path = work_dir / "prometheus.yml"
        self.config_path.write_text(_config_text(scrape_targets, scrape_interval))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def backfill(self, series: Iterable[Series]) -> None:
        if self.running:
            raise RuntimeError("backfill before start: Prometheus reads its blocks when it starts")
        backfill(series, self.data_dir)

    def start(self) -> None:
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.data_dir}",
                    "--storage.tsdb.retention.time=3650d",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--query.lookback-delta={self._lookback_delta}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), waited for."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """A crash (SIGKILL): the data directory keeps its WAL for the next start."""
        self._end(signal.SIGKILL)

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

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_WITHIN
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"Prometheus exited at start:\n{self._log_tail()}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"Prometheus not ready after {_READY_WITHIN}s:\n{self._log_tail()}")

    def _end(self, how: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(how)
        try:
            process.wait(timeout=_STOP_WITHIN)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

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


class MetricsExporter:
    """A tiny /metrics endpoint serving whatever text the test sets (Prometheus text format)."""

    def __init__(self) -> None:
        self._text = ""
        self._lock = threading.Lock()
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

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def target(self) -> str:
        """host:port, as a scrape config names it."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def text(self) -> str:
        with self._lock:
            return self._text

    def set_text(self, text: str) -> None:
        with self._lock:
            self._text = text

    def set_values(self, values: Mapping[str, float]) -> None:
        """Serve `values`, keyed by series selector: {'req_total{model="a"}': 12.0}."""
        self.set_text("".join(f"{selector} {_number(value)}\n" for selector, value in values.items()))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


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
