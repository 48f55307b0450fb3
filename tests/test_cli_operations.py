"""The operator commands through the real `watcher` executable: eval, run --once, rollback,
pause/resume, drill, db upgrade, incidents; each against a real MLflow registry and SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.workspace import DEFAULT_RULES, Workspace, make_workspace
from watcher.store.database import open_engine
from watcher.store.repository import Store

pytestmark = pytest.mark.integration

WATCHER = Path(sys.executable).parent / "watcher"


@pytest.fixture
def ws(tmp_path: Path, registry_template: Path) -> Workspace:
    rules = DEFAULT_RULES.replace("for: 2m", "for: 0s")
    return make_workspace(tmp_path / "ws", registry_template, f"sqlite:///{tmp_path / 'w.db'}", rules=rules)


def watcher(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WATCHER), *args, "--config", str(ws.config_path)], capture_output=True, text=True, timeout=120
    )


def _audit_kinds(ws: Workspace) -> list[str]:
    engine = open_engine(ws.config().database)
    try:
        return [e.kind for e in Store(engine).audit_events()]
    finally:
        engine.dispose()


def test_eval_prints_value_and_acts_on_nothing(ws: Workspace, tmp_path: Path) -> None:
    ws.set_value(0.2)
    done = watcher(ws, "eval", "fraud-detector/error-rate")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "value: 0.2"
    assert "outcome: breach" in lines and any(
        line.startswith("transition: inactive -> firing") for line in lines
    )
    assert not (tmp_path / "w.db").exists()  # no database created, nothing recorded
    assert ws.champion() == "3"
    as_json = json.loads(watcher(ws, "eval", "fraud-detector/error-rate", "--json").stdout)
    assert as_json["value"] == 0.2 and as_json["outcome"] == "breach"
    # The live version it speaks for: never recorded before, so live since before watcher looked.
    assert as_json["version"]["live"] == "3" and as_json["version"]["attribution"] == "attributed"
    assert "version: 3 (attributed)" in lines
    ws.break_source()
    failed = watcher(ws, "eval", "fraud-detector/error-rate")
    assert failed.stdout.splitlines()[0] == "value: none" and "outcome: error" in failed.stdout
    assert watcher(ws, "eval", "no/such-rule").returncode == 1
    assert watcher(ws, "eval", "fraud-detector/error-rate", "--at", "yesterday-ish").returncode == 2


def test_run_once_fires_rolls_back_and_lists_the_incident(ws: Workspace) -> None:
    ws.set_value(0.2)
    assert watcher(ws, "run", "--once").returncode == 0
    assert ws.champion() == "2"
    listed = json.loads(watcher(ws, "incidents", "--json").stdout)
    assert [i["rollback"]["to"] for i in listed] == ["2"]
    detail = json.loads(watcher(ws, "incident", str(listed[0]["id"]), "--json").stdout)
    assert [e["kind"] for e in detail["timeline"]][:2] == ["incident_opened", "rollback_requested"]
    assert [(f["rule"], f["kind"]) for f in detail["findings"]] == [("fraud-detector/error-rate", "opened")]
    assert [v["version"] for v in detail["versions"]] == ["3", "2"]
    text = watcher(ws, "incident", str(listed[0]["id"])).stdout
    assert "findings:" in text and "fraud-detector/error-rate" in text
    assert "versions of the target" in text and "before watcher looked" in text


def test_dry_run_records_and_changes_nothing(ws: Workspace) -> None:
    ws.set_value(0.2)
    assert watcher(ws, "run", "--once", "--dry-run").returncode == 0
    assert ws.champion() == "3"
    assert json.loads(watcher(ws, "incidents", "--json").stdout) == []


def test_manual_rollback_pause_and_resume_are_audited(ws: Workspace) -> None:
    assert watcher(ws, "db", "upgrade").returncode == 0
    done = watcher(ws, "rollback", "fraud-prod", "--reason", "bad canary")  # no --to: the previous version
    assert done.returncode == 0, done.stdout + done.stderr
    assert ws.champion() == "2"
    assert watcher(ws, "rollback", "nowhere", "--reason", "x").returncode == 2
    assert watcher(ws, "rollback", "fraud-prod").returncode == 2  # --reason is required
    assert watcher(ws, "pause", "--reason", "maintenance window").returncode == 0
    ws.set_value(0.2)
    assert watcher(ws, "run", "--once").returncode == 0
    listed = json.loads(watcher(ws, "incidents", "--json").stdout)
    assert listed[0]["status"] == "awaiting_approval" and listed[0]["decision"]["reason"] == "paused"
    assert watcher(ws, "resume").returncode == 0
    assert watcher(ws, "rollback", "fraud-prod", "--to", "1", "--reason", "go further back").returncode == 0
    assert ws.champion() == "1"
    nothing_below = watcher(ws, "rollback", "fraud-prod", "--reason", "nothing older than 1")
    assert nothing_below.returncode == 1 and "give --to" in nothing_below.stdout
    kinds = _audit_kinds(ws)
    for kind in ("manual_rollback_requested", "rollback_succeeded", "paused", "resumed"):
        assert kind in kinds
    engine = open_engine(ws.config().database)
    try:
        actors = {e.actor for e in Store(engine).audit_events() if e.kind in ("paused", "resumed")}
    finally:
        engine.dispose()
    assert all(actor.startswith("cli:") for actor in actors)


@pytest.mark.parametrize(
    ("wait", "reason", "champion"), [(0.0, "cooldown", "2"), (25.0, "auto_rollback", "1")]
)
def test_a_command_line_rollback_holds_automatic_ones_for_the_cooldown(
    ws: Workspace, wait: float, reason: str, champion: str
) -> None:
    """The commands read the wall clock; the cooldown (20 s here) runs from the manual rollback.

    Real processes on the real clock: freezegun's clock, moved in this process, would stay in the
    modules the commands import while it is frozen, and spoil every later test."""
    ws.config_path.write_text(ws.config_path.read_text().replace("cooldown: 30m", "cooldown: 20s"))
    assert watcher(ws, "rollback", "fraud-prod", "--reason", "bad canary").returncode == 0
    assert ws.champion() == "2"
    time.sleep(wait)
    ws.set_value(0.2)
    assert watcher(ws, "run", "--once").returncode == 0
    engine = open_engine(ws.config().database)
    try:
        [incident] = Store(engine).incidents()
    finally:
        engine.dispose()
    assert incident.decision_reason == reason
    assert ws.champion() == champion


def test_drill_rolls_back_and_forward_and_leaves_the_target_as_found(ws: Workspace) -> None:
    done = watcher(ws, "drill", "fraud-prod")
    assert done.returncode == 0, done.stdout + done.stderr
    for step in ("preflight", "roll back", "verify rollback", "roll forward", "verify roll forward"):
        assert step in done.stdout
    assert ws.champion() == "3"
    assert {"drill_started", "drill_finished"} <= set(_audit_kinds(ws))


def test_a_drill_with_no_version_to_go_back_to_fails_at_that_step_and_moves_nothing(ws: Workspace) -> None:
    assert watcher(ws, "rollback", "fraud-prod", "--to", "1", "--reason", "oldest").returncode == 0
    done = watcher(ws, "drill", "fraud-prod")
    assert done.returncode == 1
    assert "[FAIL] choose rollback version" in done.stdout and "FAILED" in done.stdout
    assert ws.champion() == "1"
    assert "drill_started" not in _audit_kinds(ws)


def test_unreadable_config_is_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(WATCHER), "run", "--config", str(tmp_path / "absent.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
