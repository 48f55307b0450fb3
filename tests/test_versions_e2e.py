"""End to end on a real Prometheus: one bad release is one incident and one rollback.

Three rules (latency, errors, feedback) on one model read 60 s windows. Version 3 goes bad and is
rolled back to 2; for the next 150 s the windows still hold version 3's data for a minute. Nothing
may be blamed on version 2: one rollback, one incident with the other rules in it, no incident and
no rollback proposal against 2, and the incident mitigated (verified on clean windows), never
escalated because a window still held version 3.

Then `watcher backtest` replays the same period on what the daemon recorded: the same incident and
the same rollback.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, wait_for
from tests.support.mlflow_registry import build_registry, champion
from tests.support.prometheus import MetricsExporter, PrometheusServer
from tests.support.workspace import Workspace, make_workspace
from watcher.cli import main
from watcher.model import IncidentStatus
from watcher.store import migrate
from watcher.store.database import open_engine
from watcher.store.queue import WorkQueue
from watcher.store.records import IncidentRecord
from watcher.store.repository import Store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = 'model="fraud-detector"'
RULES = f"""\
model: fraud-detector
target: fraud-prod
rules:
  - name: latency
    signal: latency
    prometheus: >-
      sum(rate(model_request_seconds_sum{{{MODEL}}}[60s]))
      / sum(rate(model_request_seconds_count{{{MODEL}}}[60s]))
    above: 0.25
    for: 10s
    every: 3s
    action: rollback
  - name: errors
    signal: error_rate
    prometheus: >-
      sum(rate(model_requests_total{{{MODEL},status="error"}}[60s]))
      / sum(rate(model_requests_total{{{MODEL}}}[60s]))
    above: 0.05
    for: 10s
    every: 3s
    action: rollback
  - name: feedback
    signal: feedback
    prometheus: >-
      sum(rate(model_feedback_total{{{MODEL},verdict="bad"}}[60s]))
      / sum(rate(model_feedback_total{{{MODEL}}}[60s]))
    above: 0.2
    for: 10s
    every: 3s
    action: rollback
"""


class ModelService:
    """Serves whichever version the alias points at; version 3 is slow, errs and displeases once bad."""

    def __init__(self, exporter: MetricsExporter, registry: Path) -> None:
        self.exporter = exporter
        self.registry = registry
        self.bad = False
        self.totals: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _add(self, series: str, amount: float) -> None:
        self.totals[series] = self.totals.get(series, 0.0) + amount

    def _run(self) -> None:
        while not self._stop.is_set():
            bad = self.bad and champion(self.registry) == "3"
            errors, latency, unhappy = (30, 0.5, 40) if bad else (0, 0.05, 5)
            self._add(f'model_requests_total{{{MODEL},status="ok"}}', 100 - errors)
            self._add(f'model_requests_total{{{MODEL},status="error"}}', errors)
            self._add(f"model_request_seconds_sum{{{MODEL}}}", 100 * latency)
            self._add(f"model_request_seconds_count{{{MODEL}}}", 100)
            self._add(f'model_feedback_total{{{MODEL},verdict="bad"}}', unhappy)
            self._add(f'model_feedback_total{{{MODEL},verdict="good"}}', 100 - unhappy)
            lines = [f"{name} {value}\n" for name, value in sorted(self.totals.items())]
            self.exporter.set_text("".join(lines))
            self._stop.wait(0.25)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


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


def test_one_bad_release_is_one_incident_one_rollback_and_nothing_against_the_restored_version(
    tmp_path: Path, stack: tuple[PrometheusServer, ModelService, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    prometheus, service, registry = stack
    url = f"sqlite:///{tmp_path / 'watcher.db'}"
    ws = make_workspace(
        tmp_path / "ws",
        registry,
        url,
        rules=RULES,
        every="3s",
        timeout="2s",
        verify_after="20s",
        extra_config=f"prometheus:\n  url: {prometheus.url}\n",
    )
    ws.config_path.write_text(ws.config_path.read_text().replace("cooldown: 30m", "cooldown: 1m"))
    service.registry = ws.registry
    engine = open_engine(url)
    migrate.upgrade(engine)
    store = Store(engine)
    wait_for(lambda: prometheus.query("sum(rate(model_requests_total[5s])) > 0"), what="scraped traffic")
    started = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    daemon = DaemonProcess(ws.config_path, tmp_path / "daemon.log")
    try:
        time.sleep(5)  # a healthy start
        service.bad = True
        wait_for(lambda: ws.champion() == "2", what="the rollback", timeout=90)
        rolled_back = time.monotonic()
        settling: set[str] = set()
        seen: list[str] = []
        while time.monotonic() - rolled_back < 150:
            found, what = _settling(ws)
            settling.update(found)
            seen.append(what)
            time.sleep(1)

        [incident] = store.incidents()
        assert incident.live_version == "3"
        assert incident.status is IncidentStatus.MITIGATED, incident.status
        intents = WorkQueue(store).intents()
        assert [(i.from_version, i.to_version) for i in intents] == [("3", "2")]
        assert ws.champion() == "2"
        findings = store.findings([incident.id])[incident.id]
        assert {f.rule_id for f in findings} == {
            "fraud-detector/latency",
            "fraud-detector/errors",
            "fraud-detector/feedback",
        }
        proposals = [
            e
            for e in store.audit_events()
            if e.kind in ("rollback_requested", "approval_requested") and e.from_version == "2"
        ]
        assert proposals == []
        assert "escalated" not in [e.kind for e in store.timeline(incident.id)]
        # While their windows still held version 3, the rules said so on /metrics.
        assert settling, f"no rule was ever settling after the rollback: {seen[:3]} ... {seen[-2:]}"
        assert daemon.terminate() == 0
        _replay_finds_the_same(ws, capsys, started, incident, store)
    finally:
        if daemon.alive():
            daemon.kill9()
        engine.dispose()


def _replay_finds_the_same(
    ws: Workspace,
    capsys: pytest.CaptureFixture[str],
    started: datetime,
    incident: IncidentRecord,
    store: Store,
) -> None:
    """`watcher backtest` over the period the daemon ran, on the version history the daemon
    recorded: the same incident (opened within one step, 3 s) and the same rollback.

    Before the daemon ran, its records hold nothing: as SPEC says, `--versions` gives those times
    (the registry's story: 1, then 2 for hours, then 3 released half an hour before the start)."""
    ended = datetime.now(UTC).replace(microsecond=0)
    versions = ws.config_path.parent / "before-watcher.csv"
    versions.write_text(
        "time,target,version\n"
        + "".join(
            f"{_iso(started - timedelta(minutes=ago))},fraud-prod,{version}\n"
            for ago, version in [(240, "1"), (180, "2"), (30, "3")]
        )
    )
    capsys.readouterr()
    window = ["--from", _iso(started), "--to", _iso(ended)]
    code = main(["backtest", "--config", str(ws.config_path), *window, "--versions", str(versions), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    document = json.loads(out)
    [would] = document["incidents"]
    live_findings = {f.rule_id for f in store.findings([incident.id])[incident.id]}
    print(
        f"live: opened {_iso(incident.opened_at)} on {incident.live_version}; replay: opened "
        f"{would['opened_at']} on {would['version']}, {would['rollback']}, status {would['status']}"
    )
    assert abs((_parse(would["opened_at"]) - incident.opened_at).total_seconds()) <= 3  # one step
    assert would["version"] == incident.live_version == "3"
    assert would["would"] == "rollback"
    assert (would["rollback"]["from"], would["rollback"]["to"]) == ("3", "2")
    assert would["rule"] == incident.rule_id
    assert {f["rule"] for f in would["findings"]} == live_findings
    assert would["status"] == incident.status.value == "mitigated"
    assert incident.resolved_at is not None
    # Mitigated once verified on a clean window: the replay's grid may reach it a step later or
    # earlier than the daemon's own schedule did.
    assert abs((_parse(would["resolved_at"]) - incident.resolved_at).total_seconds()) <= 6
    assert document["totals"]["rollbacks"] == 1
    assert document["unjudged"] == {}


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _settling(ws: Workspace) -> tuple[set[str], str]:
    """The rules whose settling gauge is 1 on /metrics, and what was read (for a failure's message)."""
    listen = re.search(r"listen: (\S+)", ws.config_path.read_text())
    if listen is None:
        return set(), "no listen address"
    try:
        with urllib.request.urlopen(f"http://{listen.group(1)}/metrics", timeout=2) as response:
            body = response.read().decode()
    except OSError as error:
        return set(), repr(error)
    found = re.findall(r'^watcher_rule_settling\{rule="([^"]+)"\} (\S+)$', body, re.MULTILINE)
    return {rule for rule, value in found if float(value) == 1}, repr(found)
