"""`watcher check`: exit codes, FILE:LINE:COL output, the summary line, --config resolution."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import watcher.remediations.base
from tests.test_config import (
    CONFIG_FIXTURES,
    FIXTURE_ENV,
    FIXTURES,
    REPO,
    RULES_CONFIG,
    STAND_IN_ADAPTERS,
    expected_findings,
)
from watcher.cli import main

RULE_FIXTURES = FIXTURES / "rules"
BAD_RULES = sorted(RULE_FIXTURES.glob("*.bad.yaml"))
BAD_CONFIGS = sorted(CONFIG_FIXTURES.glob("*.bad.yaml"))


@pytest.fixture(autouse=True)
def fixture_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs see the stand-in adapters as installed and the fixtures' environment."""
    monkeypatch.setattr(watcher.remediations.base, "load_factory", STAND_IN_ADAPTERS.find)
    monkeypatch.setattr(watcher.remediations.base, "installed_adapter_names", STAND_IN_ADAPTERS.names)
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("WATCHER_CONFIG", raising=False)
    for name, value in FIXTURE_ENV.items():
        monkeypatch.setenv(name, value)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = main(["check", *argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("path", BAD_RULES, ids=lambda path: path.name)
def test_each_bad_rule_file_exits_1_with_its_findings(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    code, out, err = _run(capsys, "--config", str(RULES_CONFIG), str(path))
    assert code == 1
    assert out == [f"{_shown(path)}:{line}" for line in expected_findings(path)]
    findings = len(out)
    assert err.splitlines()[-1] == f"2 files, 0 rules, {findings} finding{'s' if findings > 1 else ''}"


@pytest.mark.parametrize("path", BAD_CONFIGS, ids=lambda path: path.name)
def test_each_bad_configuration_exits_1_with_its_findings(
    capsys: pytest.CaptureFixture[str], path: Path
) -> None:
    code, out, err = _run(capsys, "--config", str(path))
    assert code == 1
    assert out == [f"{_shown(path)}:{line}" for line in expected_findings(path)]
    assert "rule files are checked once watcher.yaml is clean" in err


def test_good_fixtures_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "--config", str(RULES_CONFIG), str(RULE_FIXTURES / "*.good.yaml"))
    assert (code, out) == (0, [])
    assert err.splitlines() == ["5 files, 9 rules, 0 findings"]


def _write_project(directory: Path) -> None:
    (directory / "rules").mkdir()
    (directory / "watcher.yaml").write_text(
        "prometheus: {url: 'http://127.0.0.1:9090'}\n"
        "targets: {fraud-prod: {adapter: mlflow, tracking_uri: 'sqlite:///m.db', model: fraud}}\n"
    )
    (directory / "rules" / "good.yaml").write_text(
        "model: fraud\ntarget: fraud-prod\nrules:\n"
        "  - {name: a, signal: latency, prometheus: p99, above: 1, action: rollback}\n"
        "  - {name: b, signal: error_rate, prometheus: errors, above: 0.1}\n"
    )
    (directory / "rules" / "bad.yaml").write_text(
        "model: churn\ntarget: churn-prod\nrules:\n"
        "  - {name: a, signal: latncy, prometheus: p99}\n"
        "  - {name: a, signal: latency, prometheus: p99, below: 1, every: 5s}\n"
    )


def test_a_bad_file_next_to_a_good_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_project(tmp_path)
    code, out, err = _run(capsys, "--config", str(tmp_path / "watcher.yaml"))
    assert code == 1
    bad = tmp_path / "rules" / "bad.yaml"
    assert out == [
        f"{bad}:2:9: target 'churn-prod' is not in watcher.yaml: its targets are fraud-prod",
        f"{bad}:4:5: the rule needs a threshold: one of above or below",
        f"{bad}:4:23: unknown signal 'latncy' (did you mean 'latency'?): expected one of latency, "
        "error_rate, accuracy, drift, feedback, custom",
        f"{bad}:5:12: duplicate rule name 'a' (first at line 4)",
        f"{bad}:5:66: every: must be longer than evaluation.timeout (10s)",
    ]
    assert err.splitlines()[-1] == "3 files, 2 rules, 5 findings"


def test_paths_are_shown_relative_to_the_working_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(capsys)
    assert code == 1
    assert out[0].startswith("rules/bad.yaml:2:9: ")


def test_findings_are_sorted_by_file_then_position(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [RULE_FIXTURES / "unknown-target.bad.yaml", RULE_FIXTURES / "bad-durations.bad.yaml"]
    code, out, _ = _run(capsys, "--config", str(RULES_CONFIG), *map(str, paths))
    assert code == 1
    keys = [(line.split(":")[0], int(line.split(":")[1]), int(line.split(":")[2])) for line in out]
    assert keys == sorted(keys) and len({key[0] for key in keys}) == 2


def test_paths_are_still_checked_against_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rule = tmp_path / "model.yaml"
    rule.write_text(
        "model: m\ntarget: ranker-prod\nrules:\n  - {name: r, signal: custom, prometheus: x, above: 1}\n"
    )
    code, out, _ = _run(capsys, "--config", str(RULES_CONFIG), str(rule))
    assert code == 1
    assert out == [
        f"{rule}:2:9: target 'ranker-prod' is not in watcher.yaml: its targets are churn-prod, fraud-prod"
    ]


def test_an_unreadable_configuration_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "--config", str(tmp_path / "missing.yaml"))
    assert (code, out) == (2, [])
    assert "cannot read file: No such file or directory" in err
    assert "no readable configuration" in err
    assert main(["check", "--config", str(tmp_path)]) == 2


def test_config_defaults_to_the_working_directory_then_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _write_project(elsewhere)
    (elsewhere / "rules" / "bad.yaml").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert _run(capsys)[0] == 2  # no ./watcher.yaml and no $WATCHER_CONFIG
    monkeypatch.setenv("WATCHER_CONFIG", str(elsewhere / "watcher.yaml"))
    assert _run(capsys)[0] == 0  # $WATCHER_CONFIG when ./watcher.yaml is absent
    (empty / "watcher.yaml").write_text("rules: [nowhere/]\n")
    code, out, _ = _run(capsys)
    assert code == 1 and out == [
        "watcher.yaml:1:9: rules[0]: 'nowhere' does not exist"
    ]  # ./watcher.yaml first


@pytest.mark.parametrize(
    ("argv", "code"), [([], 2), (["no-such-command"], 2), (["check", "--bogus"], 2), (["--help"], 0)]
)
def test_usage(argv: list[str], code: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == code
    capsys.readouterr()


def test_every_registered_command_takes_config() -> None:
    from watcher.cli import build_parser

    parser = build_parser()
    commands = {
        name: sub
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, sub in action.choices.items()
    }
    assert "check" in commands
    for name, sub in commands.items():
        options = {option for action in sub._actions for option in action.option_strings}
        if name != "db":  # `db` only groups its own subcommands
            assert "--config" in options, name


def test_the_installed_command_checks_the_example_project() -> None:
    """The real entry point, real adapters, no environment: the shipped examples are clean."""
    watcher = Path(sys.executable).parent / "watcher"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")}
    done = subprocess.run(
        [str(watcher), "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout) == (0, ""), done.stderr
    assert done.stderr.splitlines()[-1] == "5 files, 11 rules, 0 findings"


def test_the_installed_command_reports_findings_and_exit_1(tmp_path: Path) -> None:
    _write_project(tmp_path)
    watcher = Path(sys.executable).parent / "watcher"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")}
    done = subprocess.run(
        [str(watcher), "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stdout.splitlines()[0].startswith(
        "rules/bad.yaml:2:9: target 'churn-prod' is not in watcher.yaml"
    )
