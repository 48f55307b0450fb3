"""End to end: a real Prometheus scraping a model service stand-in, a real MLflow registry, and
`watcher run` as a process. Version 3 goes bad; watcher rolls the alias back to the known-good 2
and verifies; a second breach inside the cooldown asks for approval instead."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, wait_for
from tests.support.mlflow_registry import build_registry, champion
from tests.support.prometheus import MetricsExporter, PrometheusServer
from tests.support.workspace import make_workspace
from watcher.model import IncidentStatus
from watcher.store import migrate
from watcher.store.database import open_engine
from watcher.store.records import IncidentRecord
from watcher.store.repository import Store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RULES = """\
model: fraud-detector
target: fraud-prod
rules:
  - name: error-rate
    signal: error_rate
    prometheus: >-
      sum(rate(model_requests_total{model="fraud-detector",status="error"}[5s]))
      / sum(rate(model_requests_total{model="fraud-detector"}[5s]))
    above: 0.05
    for: 3s
    every: 1s
    action: rollback
    severity: critical
"""


class ModelService:
    """Counts requests per version; version 3 errs a lot once `bad` is set."""

    def __init__(self, exporter: MetricsExporter, registry: Path) -> None:
        self.exporter = exporter
        self.registry = registry
        self.bad = False
        self.counts: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            version = champion(self.registry)
            errors = 30 if (self.bad and version == "3") else 0
            for status, n in (("ok", 100 - errors), ("error", errors)):
                key = (version, status)
                self.counts[key] = self.counts.get(key, 0) + n
            self.exporter.set_text(
                "# TYPE model_requests_total counter\n"
                + "".join(
                    f'model_requests_total{{model="fraud-detector",version="{v}",status="{s}"}} {c}\n'
                    for (v, s), c in sorted(self.counts.items())
                )
            )
            self._stop.wait(0.25)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[PrometheusServer, ModelService, Path]]:
    registry_dir = tmp_path / "registry-template"
    registry_dir.mkdir()
    template = build_registry(registry_dir)
    exporter = MetricsExporter()
    service = ModelService(exporter, template)
    service.start()
    prometheus = PrometheusServer(tmp_path / "prometheus", scrape_targets=[exporter.target])
    prometheus.start()
    try:
        yield prometheus, service, template
    finally:
        service.stop()
        prometheus.stop()


def test_bad_version_rolls_back_to_known_good_then_cooldown_asks_for_approval(
    tmp_path: Path, stack: tuple[PrometheusServer, ModelService, Path]
) -> None:
    prometheus, service, registry = stack
    url = f"sqlite:///{tmp_path / 'watcher.db'}"
    ws = make_workspace(
        tmp_path / "ws",
        registry,
        url,
        rules=RULES,
        every="1s",
        timeout="800ms",
        verify_after="6s",
        extra_config=f"prometheus:\n  url: {prometheus.url}\n",
    )
    # The registry the service reads is the one watcher moves.
    service.registry = ws.registry
    engine = open_engine(url)
    migrate.upgrade(engine)
    store = Store(engine)
    now = datetime.now(UTC)
    with store.transaction() as tx:  # 2 served for two hours without incident, then 3 came out
        tx.record_live_version("fraud-prod", "2", now - timedelta(hours=3))
        tx.record_live_version("fraud-prod", "2", now - timedelta(hours=1))
        tx.record_live_version("fraud-prod", "3", now - timedelta(minutes=30))
    wait_for(lambda: prometheus.query("sum(rate(model_requests_total[5s])) > 0"), what="scraped traffic")
    daemon = DaemonProcess(ws.config_path, tmp_path / "daemon.log")
    try:
        time.sleep(2)  # a healthy start: evaluations come back ok
        assert store.incidents() == []
        service.bad = True
        incident = wait_for(lambda: store.incidents(), what="the incident", timeout=60)[0]
        assert incident.live_version == "3" and incident.rollback_to == "2"
        wait_for(lambda: ws.champion() == "2", what="the alias to move")
        done = wait_for(
            lambda: _status(store, incident.id, IncidentStatus.MITIGATED), what="verification", timeout=60
        )
        assert done.resolved_at is not None
        timeline = store.timeline(incident.id)
        moved = next(e for e in timeline if e.kind == "rollback_succeeded")
        print(f"\nfor ran out -> alias moved: {(moved.at - incident.opened_at).total_seconds():.3f}s")
        requested = next(e for e in timeline if e.kind == "rollback_requested")
        assert requested.detail["reason"] == "auto_rollback"

        # The operator puts 3 back; it is still bad: inside the cooldown, watcher asks first.
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=f"sqlite:///{ws.registry}").set_registered_model_alias(
            "fraud-detector", "champion", "3"
        )
        second = wait_for(
            lambda: [i for i in store.incidents() if i.id != incident.id], what="second incident", timeout=60
        )[0]
        assert second.status is IncidentStatus.AWAITING_APPROVAL
        assert second.decision_reason == "cooldown"
        time.sleep(2)
        assert ws.champion() == "3"
        assert daemon.terminate() == 0
    finally:
        if daemon.alive():
            daemon.kill9()
        engine.dispose()


def _status(store: Store, incident_id: int, status: IncidentStatus) -> IncidentRecord | None:
    record = store.incident(incident_id)
    return record if record is not None and record.status is status else None
