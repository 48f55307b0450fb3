"""Shared fixtures. Real services come from tests/support; a missing one fails in CI, skips elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pytest

from scenario.fake_slack import FakeSlack
from tests.support.prometheus import MetricsExporter, PrometheusServer, Series, binaries_missing
from tests.support.services import PostgresSchema, fresh_postgres_schema, require
from tests.support.slow_server import CannedHttpServer

# --- Prometheus -------------------------------------------------------------------------------

StartPrometheus = Callable[..., PrometheusServer]


def _require_prometheus() -> None:
    missing = binaries_missing()
    if missing is not None:
        require("prometheus", missing)


def start_prometheus_in(
    work_dir: Path,
    series: Iterable[Series] = (),
    scrape_targets: Sequence[str] = (),
    lookback_delta: str = "5m",
) -> PrometheusServer:
    """A started Prometheus in `work_dir`, backfilled with `series` and scraping `scrape_targets`."""
    _require_prometheus()
    server = PrometheusServer(work_dir, scrape_targets=scrape_targets, lookback_delta=lookback_delta)
    series = list(series)
    if series:
        server.backfill(series)
    server.start()
    return server


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[StartPrometheus]:
    """Start Prometheus servers for one test: `start_prometheus(series=..., scrape_targets=...)`.

    Every server started is killed at the end of the test.
    """
    started: list[PrometheusServer] = []

    def start(
        series: Iterable[Series] = (), scrape_targets: Sequence[str] = (), lookback_delta: str = "5m"
    ) -> PrometheusServer:
        server = start_prometheus_in(
            tmp_path / f"prometheus-{len(started)}", series, scrape_targets, lookback_delta
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def metrics_exporter() -> Iterator[MetricsExporter]:
    """A /metrics endpoint whose text the test sets; point a Prometheus at `.target`."""
    exporter = MetricsExporter()
    yield exporter
    exporter.close()


# --- local HTTP -------------------------------------------------------------------------------


@pytest.fixture
def canned_http_server() -> Iterator[CannedHttpServer]:
    """A local HTTP server answering what the test sets (`.answer(...)`), recording requests."""
    with CannedHttpServer() as server:
        yield server


# --- Slack ------------------------------------------------------------------------------------


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    """The local Slack Web API (scenario.fake_slack, the scenario's own) for one test."""
    with FakeSlack() as fake:
        yield fake


# --- databases and the model registry ----------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The watcher's database, once on SQLite and once on a fresh PostgreSQL schema (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'watcher.db'}"
        return
    with fresh_postgres_schema() as schema:
        yield schema.url


@pytest.fixture(scope="session")
def registry_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MLflow registry (SQLite), built once per run; tests work on copies of it."""
    from tests.support.mlflow_registry import build_registry  # MLflow is slow to import

    return build_registry(tmp_path_factory.mktemp("registry-template"))


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture
def postgres_schema() -> Iterator[PostgresSchema]:
    """A fresh schema on the test PostgreSQL, dropped afterwards; `.url` has it as search_path."""
    with fresh_postgres_schema() as schema:
        yield schema
