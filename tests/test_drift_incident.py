"""A drift rule end to end: shifted inputs open an incident whose evidence holds the per-column
scores, and the daemon serves Evidently's HTML report for it."""

from __future__ import annotations

import random
import textwrap
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.mlflow_registry import build_registry
from tests.support.workspace import make_workspace
from watcher.engine.daemon import Daemon

pytestmark = pytest.mark.integration

RULES = textwrap.dedent("""\
    model: fraud-detector
    target: fraud-prod
    rules:
      - name: input-drift
        signal: drift
        drift:
          reference: reference.csv
          current: current.csv
          method: auto
        above: 0.4
        action: notify
    """)


def _csv(path: Path, shift: float, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["amount,hour,merchant_category"]
    for _ in range(1500):
        category = rng.choice(["food", "travel", "games"] if shift == 0 else ["games", "games", "travel"])
        lines.append(f"{rng.lognormvariate(3 + shift, 0.5):.4f},{rng.randrange(24)},{category}")
    path.write_text("\n".join(lines) + "\n")


def test_drift_incident_has_scores_and_a_report(tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    ws = make_workspace(
        tmp_path / "ws", build_registry(tmp_path / "tpl"), f"sqlite:///{tmp_path / 'w.db'}", rules=RULES
    )
    _csv(ws.root / "rules" / "reference.csv", 0.0, 1)
    _csv(ws.root / "rules" / "current.csv", 1.0, 2)
    daemon = Daemon(ws.config())
    daemon.prepare()
    try:
        runtime = daemon.rules.current.runtime["fraud-detector/input-drift"]
        result = daemon.engine.tick(runtime, datetime.now(UTC))
        assert result.incident_opened is not None
        incident = daemon.store.incident(result.incident_opened)
        assert incident is not None
        columns = incident.evidence["columns"]
        assert set(columns) == {"amount", "hour", "merchant_category"}
        assert columns["amount"]["drifted"] and not columns["hour"]["drifted"]
        assert incident.evidence["value"] == pytest.approx(2 / 3)
        daemon._start_http()
        url = f"http://{daemon.config.http.listen}/reports/{incident.id}.html"
        with urllib.request.urlopen(url, timeout=120) as response:
            html = response.read().decode()
        assert response.status == 200 and "<html" in html.lower() and "merchant_category" in html
    finally:
        daemon.stop(grace=1)
