"""The README's main command, end to end: the live local scenario runs to its summary (a bad
release caught, rolled back and verified) and a signed `Undo rollback` press rolls forward again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


def test_live_scenario_rolls_back_verifies_and_undoes(tmp_path: Path) -> None:
    run_dir = tmp_path / "scenario-run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scenario.run",
            "--run-dir",
            str(run_dir),
            "--press-undo",
            "--bad-after",
            "30",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    print(output[-4000:])
    assert done.returncode == 0, output[-4000:]
    assert "alias is back on 3" in output
    leftovers = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "the scenario left processes running"
