"""The command adapter, running real processes (a small Python tool written per test)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from watcher.remediations.base import AdapterFailure, LiveVersion, RemediationAdapter, RollbackResult
from watcher.remediations.command import factory

TOOL = r"""
import json, os, subprocess, sys, time
command = sys.argv[1]
if command == "record":
    with open(sys.argv[2], "w") as out:
        json.dump({"argv": sys.argv[3:], "env": dict(os.environ)}, out)
elif command == "fail":
    print("about to fail", flush=True)
    print("deploy refused: quota", file=sys.stderr)
    sys.exit(int(sys.argv[2]))
elif command == "hang":
    child = subprocess.Popen(["sleep", "60"])
    with open(sys.argv[2], "w") as out:
        out.write(str(child.pid))
    time.sleep(60)
elif command == "chatty":
    sys.stdout.write("x" * 10000 + "\nusing " + os.environ["DEPLOY_TOKEN"] + "\n")
    sys.stderr.write("token=" + os.environ["DEPLOY_TOKEN"] + "\n")
elif command == "set":
    with open(sys.argv[2], "w") as out:
        out.write(sys.argv[3])
    with open(sys.argv[2] + ".log", "a") as log:
        log.write(sys.argv[3] + "\n")
elif command == "get":
    with open(sys.argv[2]) as state:
        print(state.read())
"""


@pytest.fixture
def tool(tmp_path: Path) -> list[str]:
    path = tmp_path / "tool.py"
    path.write_text(TOOL)
    return [sys.executable, str(path)]


def make_adapter(tmp_path: Path, **settings: Any) -> RemediationAdapter:
    return factory.create(factory.settings_model.model_validate(settings), base_dir=tmp_path)


def rollback(adapter: RemediationAdapter, intent: str = "intent-1") -> Any:
    return adapter.rollback(intent_key=intent, from_version="3", to_version="2")


def test_templated_arguments_stay_single_literal_arguments(
    tool: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-not-for-children")
    out = tmp_path / "out.json"
    argv = [
        *tool,
        "record",
        str(out),
        "--to={{ to_version }}",
        "x; rm -rf {{ from_version }}",
        "$(id)",
        "{{ intent }}",
    ]
    adapter = make_adapter(tmp_path, argv=argv, target="fraud-prod", env={"REGION": "eu-1"})
    outcome = rollback(adapter)
    assert outcome.result is RollbackResult.DONE, outcome
    seen = json.loads(out.read_text())
    assert seen["argv"] == ["--to=2", "x; rm -rf 3", "$(id)", "intent-1"]
    env = seen["env"]
    assert env["WATCHER_INTENT"] == "intent-1" and env["WATCHER_TARGET"] == "fraud-prod"
    assert env["WATCHER_FROM_VERSION"] == "3" and env["WATCHER_TO_VERSION"] == "2"
    assert env["REGION"] == "eu-1"
    assert "SLACK_BOT_TOKEN" not in env  # watcher's own secrets are not handed to commands
    assert outcome.record["exit_code"] == "0"
    assert float(outcome.record["duration_seconds"]) >= 0


def test_a_failing_command_is_a_permanent_failure_with_its_output(tool: list[str], tmp_path: Path) -> None:
    outcome = rollback(make_adapter(tmp_path, argv=[*tool, "fail", "1"]))
    assert outcome.result is RollbackResult.FAILED
    assert outcome.failure is not None and not outcome.failure.retryable
    assert "exited with 1: deploy refused: quota" in outcome.failure.message
    assert outcome.record["exit_code"] == "1"
    assert outcome.record["stdout_tail"] == "about to fail\n"
    assert "deploy refused" in outcome.record["stderr_tail"]


def test_configured_exit_codes_are_retryable(tool: list[str], tmp_path: Path) -> None:
    outcome = rollback(make_adapter(tmp_path, argv=[*tool, "fail", "75"], retry_exit_codes=[75]))
    assert outcome.failure is not None and outcome.failure.retryable


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_a_timeout_kills_the_whole_process_group(tool: list[str], tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    outcome = rollback(make_adapter(tmp_path, argv=[*tool, "hang", str(pid_file)], timeout="3s"))
    assert outcome.result is RollbackResult.FAILED
    assert outcome.failure is not None and outcome.failure.retryable
    assert outcome.record["exit_code"] == "timeout"
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10  # bounded wait for the kernel to finish the kill, not a timing check
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_output_tail_is_bounded_and_secret_values_are_scrubbed(tool: list[str], tmp_path: Path) -> None:
    token = "tok-4b6d0e1a"
    outcome = rollback(make_adapter(tmp_path, argv=[*tool, "chatty"], env={"DEPLOY_TOKEN": token}))
    assert outcome.result is RollbackResult.DONE
    assert len(outcome.record["stdout_tail"]) <= 2048
    assert outcome.record["stdout_tail"].endswith("using ***\n")
    assert outcome.record["stderr_tail"] == "token=***\n"
    assert token not in repr(outcome)


def test_live_argv_guards_the_rollback(tool: list[str], tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("3")
    settings = {
        "argv": [*tool, "set", str(state), "{{ to_version }}"],
        "live_argv": [*tool, "get", str(state)],
    }
    adapter = make_adapter(tmp_path, **settings)
    assert adapter.live_version() == LiveVersion("3")
    assert rollback(adapter).result is RollbackResult.DONE
    assert state.read_text() == "2"
    assert rollback(adapter).result is RollbackResult.ALREADY_DONE
    state.write_text("5")
    refused = rollback(adapter, intent="intent-2")
    assert refused.result is RollbackResult.VERSION_CHANGED
    assert state.read_text() == "5"
    assert (tmp_path / "state.log").read_text() == "2\n"


def test_verify_runs_verify_argv_or_compares_the_live_version(tool: list[str], tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("2")
    by_live = make_adapter(tmp_path, argv=["true"], live_argv=[*tool, "get", str(state)])
    assert by_live.verify("2").ok and not by_live.verify("3").ok
    by_command = make_adapter(tmp_path, argv=["true"], verify_argv=[*tool, "fail", "{{ version }}"])
    assert not by_command.verify("3").ok
    assert make_adapter(tmp_path, argv=["true"], verify_argv=["true", "{{ version }}"]).verify("3").ok
    neither = make_adapter(tmp_path, argv=["true"]).verify("2")
    assert not neither.ok and neither.failure is not None


def test_without_live_argv_the_live_version_is_a_permanent_failure(tmp_path: Path) -> None:
    answer = make_adapter(tmp_path, argv=["true"]).live_version()
    assert isinstance(answer, AdapterFailure) and not answer.retryable


def test_a_missing_program_is_found_by_preflight_and_fails_permanently(tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path, argv=["no-such-program-xyz", "{{ to_version }}"])
    assert "not found on PATH" in adapter.preflight("2").problems[0]
    outcome = rollback(adapter)
    assert outcome.failure is not None and not outcome.failure.retryable
    assert make_adapter(tmp_path, argv=["true"]).preflight("2").ok


@pytest.mark.parametrize(
    "settings",
    [
        {"argv": "deploy --to {{ to_version }}"},  # a string would need a shell: refused
        {"argv": []},
        {"argv": ["deploy", "{{ version }}"]},  # not a rollback variable
        {"argv": ["deploy", "{{ to_version "]},
        {"argv": ["true"], "live_argv": ["get", "{{ to_version }}"]},
        {"argv": ["true"], "timeout": "0s"},
        {"argv": ["true"], "shell": True},
    ],
)
def test_bad_settings_are_rejected(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        factory.settings_model.model_validate(settings)
