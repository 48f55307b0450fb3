"""Time from the evaluation at which `for` runs out to the MLflow alias having moved.

Runs `watcher run` as a process against a real MLflow registry (SQLite) and a SQL source the
bench flips between healthy and breaching; repeats the episode and prints p50/p95/max.
Target: p95 under 2 s.

    .venv/bin/python bench/rollback.py [--episodes 20]
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from watcher.ruletest.prometheus import free_port

T = TypeVar("T")
WATCHER = Path(sys.executable).parent / "watcher"


def wait_for(condition: Callable[[], T | None], timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit("bench: gave up waiting")


def set_value(db: Path, value: float) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS signal (value REAL, samples INTEGER)")
        connection.execute("DELETE FROM signal")
        connection.execute("INSERT INTO signal VALUES (?, 1000)", (value,))


def run_episode(store: Any, client: Any, signal_db: Path) -> float:
    """One bad episode: breach, wait for the rollback, recover, put the bad version back."""
    seen = {i.id for i in store.incidents()}
    set_value(signal_db, 0.2)
    incident = wait_for(lambda: [i for i in store.incidents() if i.id not in seen])[0]
    moved = wait_for(
        lambda: next((e for e in store.timeline(incident.id) if e.kind == "rollback_succeeded"), None)
    )
    set_value(signal_db, 0.01)
    wait_for(lambda: (store.incident(incident.id) or incident).resolved_at)
    client.set_registered_model_alias("fraud-detector", "champion", "3")
    return float((moved.at - incident.opened_at).total_seconds())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    import mlflow

    from watcher.store.database import open_engine
    from watcher.store.repository import Store

    work = Path(tempfile.mkdtemp(prefix="watcher-bench-rollback-"))
    (work / "rules").mkdir()
    (work / "artifacts").mkdir()
    registry = work / "mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{registry}")
    client.create_registered_model("fraud-detector")
    for _ in range(3):
        client.create_model_version("fraud-detector", source=str(work / "artifacts"))
    client.set_registered_model_alias("fraud-detector", "champion", "3")
    signal_db = work / "rules" / "signal.db"
    set_value(signal_db, 0.01)
    (work / "watcher.yaml").write_text(
        textwrap.dedent(f"""\
        database: sqlite:///{work / "watcher.db"}
        rules: rules/
        evaluation: {{every: 1s, timeout: 500ms}}
        http: {{listen: 127.0.0.1:{free_port()}}}
        targets:
          fraud-prod: {{adapter: mlflow, tracking_uri: "sqlite:///{registry}", model: fraud-detector}}
        safety: {{cooldown: 0s, max_rollbacks: 10000 per 1h, verify_after: 1s, stable_after: 1h}}
        """)
    )
    (work / "rules" / "fraud-detector.yaml").write_text(
        textwrap.dedent("""\
        model: fraud-detector
        target: fraud-prod
        rules:
          - name: error-rate
            signal: error_rate
            sql: {url: "sqlite:///signal.db", query: "SELECT value, samples FROM signal", window: 1m}
            above: 0.05
            for: 2s
            every: 1s
            action: rollback
        """)
    )
    log = (work / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [str(WATCHER), "run", "--config", str(work / "watcher.yaml")], stdout=log, stderr=subprocess.STDOUT
    )
    engine = open_engine(f"sqlite:///{work / 'watcher.db'}")
    store = Store(engine)
    latencies: list[float] = []
    try:
        wait_for(lambda: store.rule_states())
        for episode in range(args.episodes):
            latencies.append(run_episode(store, client, signal_db))
            print(f"episode {episode + 1:>3}: {latencies[-1] * 1000:8.1f} ms", flush=True)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        engine.dispose()
    ordered = sorted(latencies)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    print()
    print(
        f"`for` ran out -> alias moved, over {len(latencies)} episodes"
        " (MLflow on SQLite, daemon as a process)"
    )
    print(
        f"  p50 {statistics.median(latencies) * 1000:.1f} ms   p95 {p95 * 1000:.1f} ms   "
        f"max {max(latencies) * 1000:.1f} ms   target p95 < 2000 ms: {'met' if p95 < 2 else 'MISSED'}"
    )
    if os.environ.get("KEEP_BENCH_DIR") is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
