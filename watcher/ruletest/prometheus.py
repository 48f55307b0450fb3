"""A throwaway Prometheus for rule unit tests: input series backfilled as TSDB blocks with
`promtool tsdb create-blocks-from openmetrics`, then `prometheus` started on a free loopback port
over that data directory (Prometheus reads its blocks when it starts), and stopped at the end.

Nothing is scraped: the backfilled series are the only data. Retention is a century, so blocks
that lie years in the past are never deleted under the test. What keeps it from starting
(binaries missing, a backfill refused, an early exit) is returned as PrometheusUnavailable.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

DEBIAN_BIN = Path("/usr/bin")
_READY_WITHIN = 60.0  # seconds; a busy machine may be slow to open the blocks
_STOP_WITHIN = 30.0
_PORT_ATTEMPTS = 3  # a free port may be taken by someone else before Prometheus binds it
_LOG_LINES = 5


@dataclass(frozen=True)
class PrometheusUnavailable:
    reason: str


def find_binary(name: str) -> Path | None:
    """`name` on PATH, else in /usr/bin (where Debian's package puts it)."""
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    fallback = DEBIAN_BIN / name
    return fallback if fallback.is_file() else None


class LocalPrometheus:
    """A running Prometheus on 127.0.0.1; `stop()` ends it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self._process = process
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=_STOP_WITHIN)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def start_prometheus(work_dir: Path, openmetrics: str | None) -> LocalPrometheus | PrometheusUnavailable:
    """Backfill `openmetrics` (when there is any) into `work_dir` and start Prometheus on it."""
    prometheus, promtool = find_binary("prometheus"), find_binary("promtool")
    if prometheus is None or promtool is None:
        missing = "prometheus" if prometheus is None else "promtool"
        return PrometheusUnavailable(
            f"'{missing}' is neither on PATH nor in {DEBIAN_BIN}: rule tests evaluate PromQL with a "
            "real Prometheus (Debian/Ubuntu package 'prometheus')"
        )
    data_dir = work_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    if openmetrics is not None:
        refused = _backfill(promtool, work_dir / "input.om", openmetrics, data_dir)
        if refused is not None:
            return refused
    config = work_dir / "prometheus.yml"
    config.write_text("global: {}\n")
    failure = PrometheusUnavailable("Prometheus did not start")
    for _ in range(_PORT_ATTEMPTS):
        started = _start(prometheus, config, data_dir, work_dir / "prometheus.log")
        if isinstance(started, LocalPrometheus):
            return started
        failure = started
        if "address already in use" not in started.reason:
            break
    return failure


def _backfill(promtool: Path, source: Path, openmetrics: str, data_dir: Path) -> PrometheusUnavailable | None:
    source.write_text(openmetrics)
    command = [str(promtool), "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return None
    return PrometheusUnavailable(f"promtool refused the input series: {_tail(result.stderr)}")


def _start(
    prometheus: Path, config: Path, data_dir: Path, log_path: Path
) -> LocalPrometheus | PrometheusUnavailable:
    port = _free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(prometheus),
                f"--config.file={config}",
                f"--storage.tsdb.path={data_dir}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the test run is handled here, not by Prometheus
        )
    server = LocalPrometheus(process, port)
    try:
        ready = _wait_ready(server, process, log_path)
    except BaseException:
        server.stop()  # interrupted while waiting: Prometheus, in its own session, would outlive us
        raise
    if ready is not None:
        server.stop()
        return ready
    return server


def _wait_ready(
    server: LocalPrometheus, process: subprocess.Popen[bytes], log_path: Path
) -> PrometheusUnavailable | None:
    deadline = time.monotonic() + _READY_WITHIN
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return PrometheusUnavailable(f"Prometheus exited at start: {_tail(_read(log_path))}")
        if _ready(server.url):
            return None
        time.sleep(0.1)
    return PrometheusUnavailable(f"Prometheus was not ready within {_READY_WITHIN:.0f}s")


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-_LOG_LINES:]) or "no output"
