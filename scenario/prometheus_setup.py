"""Debian's Prometheus for the scenario: its own config and data in the run directory, a free
loopback port, a 1 s scrape interval, readiness and first data awaited, a clean stop."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from scenario.processes import Child, free_port, spawn, wait_until

PROMETHEUS_BINARY = Path("/usr/bin/prometheus")


@dataclass(frozen=True)
class PrometheusFailure:
    message: str


@dataclass
class PrometheusServer:
    url: str
    child: Child
    log_path: Path

    def stop(self) -> int | None:
        return self.child.stop()

    def query(self, promql: str) -> list[dict[str, object]] | PrometheusFailure:
        """The result vector of an instant query now."""
        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        try:
            with urllib.request.urlopen(address, timeout=5) as response:
                answer = json.load(response)
        except (OSError, ValueError) as error:
            return PrometheusFailure(f"query {promql!r}: {error}")
        if answer.get("status") != "success":
            return PrometheusFailure(f"query {promql!r}: {answer.get('error', 'failed')}")
        result: list[dict[str, object]] = answer["data"]["result"]
        return result

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False


def write_config(directory: Path, jobs: Mapping[str, Sequence[str]], *, scrape_interval: str = "1s") -> Path:
    """prometheus.yml scraping each job's `host:port` targets every `scrape_interval`."""
    config = {
        # The scrape timeout may not exceed the interval (Prometheus' default timeout is 10s).
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]} for job, targets in jobs.items()
        ],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_prometheus(
    directory: Path,
    jobs: Mapping[str, Sequence[str]],
    *,
    port: int | None = None,
    binary: Path = PROMETHEUS_BINARY,
    ready_timeout_s: float = 30.0,
) -> PrometheusServer | PrometheusFailure:
    """Start Prometheus with its config, data and log under `directory`, ready to answer."""
    if not binary.exists():
        return PrometheusFailure(
            f"{binary} is missing: install Debian's package (apt-get install prometheus)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(directory, jobs)
    listen = f"127.0.0.1:{port if port is not None else free_port()}"
    log_path = directory / "prometheus.log"
    argv = [
        str(binary),
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={listen}",
        "--storage.tsdb.retention.time=1d",
        "--log.level=warn",
    ]
    with log_path.open("w") as log:
        try:
            child = spawn("prometheus", argv, cwd=directory, stdout=log, stderr=subprocess.STDOUT)
        except OSError as error:
            return PrometheusFailure(f"cannot start {binary}: {error.strerror}")
    server = PrometheusServer(url=f"http://{listen}", child=child, log_path=log_path)
    if not wait_until(lambda: server.ready() or not child.running(), timeout_s=ready_timeout_s):
        server.stop()
        return PrometheusFailure(f"not ready after {ready_timeout_s:.0f}s; see {log_path}")
    if not child.running():
        return PrometheusFailure(f"exited with code {child.process.returncode}: {_tail(log_path)}")
    return server


def wait_for_first_data(server: PrometheusServer, job: str, *, timeout_s: float = 30.0) -> bool:
    """True once a scrape of `job` succeeded (its `up` series is 1)."""

    def scraped() -> bool:
        result = server.query(f'up{{job="{job}"}} == 1')
        return not isinstance(result, PrometheusFailure) and len(result) > 0

    return wait_until(scraped, timeout_s=timeout_s, interval_s=0.5)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text().strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
