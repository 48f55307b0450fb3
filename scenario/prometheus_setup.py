"""Debian's Prometheus for the scenario: its own config and data in the run directory, a free
loopback port, a 1 s scrape interval, readiness and first data awaited, a clean stop. Started by
the product's one launcher (watcher.ruletest.prometheus)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from scenario.processes import Child, die_with_parent, wait_until
from watcher.ruletest.prometheus import LocalPrometheus

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


def config_text(jobs: Mapping[str, Sequence[str]], *, scrape_interval: str = "1s") -> str:
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
    return yaml.safe_dump(config, sort_keys=False)


def start_prometheus(
    directory: Path,
    jobs: Mapping[str, Sequence[str]],
    *,
    port: int | None = None,
    binary: Path = PROMETHEUS_BINARY,
    ready_timeout_s: float = 30.0,
) -> PrometheusServer | PrometheusFailure:
    """Start Prometheus with its config, data and log under `directory`, ready to answer.

    The process is the product's LocalPrometheus; here it also dies with the scenario.
    """
    directory.mkdir(parents=True, exist_ok=True)
    local = LocalPrometheus(
        directory,
        config=config_text(jobs),
        retention="1d",
        flags=["--log.level=warn"],
        port=port,
        binary=binary,
        before_exec=die_with_parent,
    )
    failure = local.start(ready_within=ready_timeout_s)
    if failure is not None:
        return PrometheusFailure(f"{failure.reason}; install it with apt-get install prometheus")
    return PrometheusServer(url=local.url, child=Child("prometheus", local.process), log_path=local.log_path)


def wait_for_first_data(server: PrometheusServer, job: str, *, timeout_s: float = 30.0) -> bool:
    """True once a scrape of `job` succeeded (its `up` series is 1)."""

    def scraped() -> bool:
        result = server.query(f'up{{job="{job}"}} == 1')
        return not isinstance(result, PrometheusFailure) and len(result) > 0

    return wait_until(scraped, timeout_s=timeout_s, interval_s=0.5)
