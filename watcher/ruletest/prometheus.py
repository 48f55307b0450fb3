"""A local Prometheus: Debian's binary started on a free loopback port over a data directory of
its own, awaited until ready, stopped at the end. The one launcher: `watcher test` runs its rule
tests on it, and the test suite, the demo scenario and the benchmarks start theirs through it.

Input series are backfilled as TSDB blocks with `promtool tsdb create-blocks-from openmetrics`
before Prometheus starts (it reads its blocks when it starts). Retention defaults to a century,
so blocks that lie years in the past are never deleted under a test. What keeps it from starting
(binaries missing, a backfill refused, an early exit) is returned as PrometheusUnavailable.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

DEBIAN_BIN = Path("/usr/bin")
MINIMAL_CONFIG = "global: {}\n"  # nothing scraped: backfilled series are the only data
_READY_WITHIN = 60.0  # seconds; a busy machine may be slow to open the blocks
_STOP_WITHIN = 30.0
_PORT_ATTEMPTS = 3  # a free port may be taken by someone else before Prometheus binds it
_LOG_LINES = 5


@dataclass(frozen=True)
class PrometheusUnavailable:
    reason: str


def free_port() -> int:
    """A loopback TCP port free right now (another process may take it before it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def find_binary(name: str) -> Path | None:
    """`name` on PATH, else in /usr/bin (where Debian's package puts it)."""
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    fallback = DEBIAN_BIN / name
    return fallback if fallback.is_file() else None


def binary_missing(name: str) -> PrometheusUnavailable:
    return PrometheusUnavailable(
        f"'{name}' is neither on PATH nor in {DEBIAN_BIN}: rule tests evaluate PromQL with a "
        "real Prometheus (Debian/Ubuntu package 'prometheus')"
    )


def backfill(openmetrics: str, data_dir: Path) -> PrometheusUnavailable | None:
    """Write OpenMetrics text as TSDB blocks into `data_dir` (before Prometheus starts on it)."""
    promtool = find_binary("promtool")
    if promtool is None:
        return binary_missing("promtool")
    data_dir.mkdir(parents=True, exist_ok=True)
    source = data_dir.parent / f"{data_dir.name}-backfill.om"
    source.write_text(openmetrics)
    command = [str(promtool), "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return None
    return PrometheusUnavailable(f"promtool refused the input series: {_tail(result.stderr)}")


class LocalPrometheus:
    """One Prometheus on 127.0.0.1 with its config, data and log under `work_dir`.

    It can be stopped (SIGTERM), killed (SIGKILL: the WAL stays for the next start) and started
    again on the same data and port. `port` is chosen here unless given; until the first start
    succeeds a port someone else took meanwhile is replaced by another free one.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        config: str = MINIMAL_CONFIG,
        retention: str = "100y",
        flags: Sequence[str] = (),
        port: int | None = None,
        binary: Path | None = None,
        before_exec: Callable[[], None] | None = None,
    ) -> None:
        self.work_dir = work_dir
        self.data_dir = work_dir / "data"
        self.config_path = work_dir / "prometheus.yml"
        self.log_path = work_dir / "prometheus.log"
        self.port = port if port is not None else free_port()
        self._port_fixed = port is not None
        self._retention = retention
        self._flags = tuple(flags)
        self._binary = binary
        self._before_exec = before_exec
        self._process: subprocess.Popen[str] | None = None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.write_config(config)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def process(self) -> subprocess.Popen[str]:
        if self._process is None:
            raise RuntimeError("Prometheus has not been started")
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    def write_config(self, text: str) -> None:
        """The configuration read at the next start (or reload, SIGHUP)."""
        self.config_path.write_text(text)

    def start(self, ready_within: float = _READY_WITHIN) -> PrometheusUnavailable | None:
        """Start and wait until /-/ready answers; None when it does."""
        if self.running:
            return None
        binary = self._binary or find_binary("prometheus")
        if binary is None:
            return binary_missing("prometheus")
        if not binary.is_file():
            return PrometheusUnavailable(f"{binary} is missing (Debian/Ubuntu package 'prometheus')")
        failure = PrometheusUnavailable("Prometheus did not start")
        for _ in range(1 if self._port_fixed else _PORT_ATTEMPTS):
            started = self._start_once(binary, ready_within)
            if started is None:
                self._port_fixed = True  # a restart comes back where clients look for it
                return None
            failure = started
            if "address already in use" not in failure.reason:
                break
            self.port = free_port()
        return failure

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), waited for."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """A crash (SIGKILL)."""
        self._end(signal.SIGKILL)

    def _start_once(self, binary: Path, ready_within: float) -> PrometheusUnavailable | None:
        argv = [
            str(binary),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--storage.tsdb.retention.time={self._retention}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            *self._flags,
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,  # no pipes; a str-typed process, as callers that supervise children hold them
                start_new_session=True,  # a Ctrl-C of the caller is handled there, not by Prometheus
                preexec_fn=self._before_exec,
            )
        try:
            ready = self._wait_ready(ready_within)
        except BaseException:
            self.kill()  # interrupted while waiting: Prometheus, in its own session, would outlive us
            raise
        if ready is not None:
            self.kill()
        return ready

    def _wait_ready(self, within: float) -> PrometheusUnavailable | None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.running:
                return PrometheusUnavailable(f"Prometheus exited at start: {_tail(_read(self.log_path))}")
            if _ready(self.url):
                return None
            time.sleep(0.1)
        return PrometheusUnavailable(
            f"Prometheus was not ready within {within:.0f}s: {_tail(_read(self.log_path))}"
        )

    def _end(self, how: signal.Signals) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(how)
        try:
            process.wait(timeout=_STOP_WITHIN)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_prometheus(work_dir: Path, openmetrics: str | None) -> LocalPrometheus | PrometheusUnavailable:
    """Backfill `openmetrics` (when there is any) into `work_dir` and start Prometheus on it."""
    if find_binary("prometheus") is None:
        return binary_missing("prometheus")
    server = LocalPrometheus(work_dir)
    if openmetrics is not None:
        refused = backfill(openmetrics, server.data_dir)
        if refused is not None:
            return refused
    failure = server.start()
    return server if failure is None else failure


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-_LOG_LINES:]) or "no output"
