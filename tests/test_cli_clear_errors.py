"""One clear line instead of a traceback or a misleading message: an unreachable database, a live
version that cannot be read, and SQL parameters that would never be bound."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from watcher.commands.check import run_check
from watcher.commands.operate import rollback_line
from watcher.incidents.operations import ManualRollbackResult
from watcher.model import RollbackStatus
from watcher.ruletest.prometheus import free_port

WATCHER = Path(sys.executable).parent / "watcher"


def _watcher(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        [str(WATCHER), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def unreachable_database(tmp_path: Path) -> Path:
    (tmp_path / "rules").mkdir()
    url = f"postgresql+psycopg://watcher:Sup3rSecretPw@127.0.0.1:{free_port()}/watcher"
    (tmp_path / "watcher.yaml").write_text(f"database: {url}\nrules: rules/\n")
    return tmp_path


@pytest.mark.parametrize(
    "argv",
    [("run", "--once"), ("incidents",), ("incident", "1"), ("pause", "--reason", "x"), ("db", "upgrade")],
    ids=" ".join,
)
def test_an_unreachable_database_is_one_clear_line(unreachable_database: Path, argv: tuple[str, ...]) -> None:
    done = _watcher(unreachable_database, *argv)
    assert done.returncode != 0
    [line] = done.stderr.splitlines()
    assert "cannot reach the database" in line and "Connection refused" in line
    assert "never migrated" not in line and "Sup3rSecretPw" not in done.stderr + done.stdout


def test_a_rollback_that_cannot_read_the_live_version_says_so(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "watcher.yaml").write_text(
        f"database: sqlite:///{tmp_path / 'w.db'}\nrules: rules/\n"
        "targets:\n  blind:\n    adapter: command\n    argv: [/bin/true]\n    live_argv: [/bin/false]\n"
    )
    done = _watcher(tmp_path, "rollback", "blind", "--reason", "drill")
    assert done.returncode == 1
    assert done.stdout.strip() == "blind: not done: cannot read the live version of blind"
    assert "None" not in done.stdout


def test_a_rollback_line_names_both_versions_when_it_has_them() -> None:
    result = ManualRollbackResult(RollbackStatus.SUCCEEDED, "3", "2", "alias moved")
    assert rollback_line("fraud-prod", result) == "fraud-prod: 3 -> 2: succeeded (alias moved)"
    nothing = ManualRollbackResult(None, "3", None, "no known-good or previous version; give --to")
    assert rollback_line("fraud-prod", nothing) == (
        "fraud-prod: not done: no known-good or previous version; give --to"
    )


RULE_WITH_QUERY = """\
model: fraud
rules:
  - name: accuracy
    signal: accuracy
    sql:
      url: "sqlite:///x.db"
      query: "SELECT 1 AS value WHERE :evil = 1 AND ts >= :window_start AND v = :version"
    below: 0.5
  - name: drift
    signal: drift
    drift:
      reference: {url: "sqlite:///x.db", query: "SELECT * FROM ref WHERE day = :day"}
      current: {url: "sqlite:///x.db", query: "SELECT * FROM cur WHERE ts >= :window_start", window: 1h}
    above: 0.3
"""


def test_check_refuses_sql_parameters_that_are_never_bound(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "watcher.yaml").write_text(f"database: sqlite:///{tmp_path / 'w.db'}\nrules: rules/\n")
    (tmp_path / "rules" / "fraud.yaml").write_text(RULE_WITH_QUERY)
    out, err = io.StringIO(), io.StringIO()
    assert run_check(tmp_path / "watcher.yaml", None, out=out, err=err, env={}) == 1
    findings = [line.split(": ", 1)[1] for line in out.getvalue().splitlines()]
    bound = "only :window_start, :window_end and :version are bound"
    assert findings == [
        "sql: the live version needs a target: set target: in the file or the rule",
        f"query: unknown parameter :evil; {bound}",
        f"query: unknown parameter :day; {bound}",
    ]
    positions = [line.split(":")[1:3] for line in out.getvalue().splitlines()]
    assert positions == [["6", "7"], ["7", "14"], ["12", "49"]]
