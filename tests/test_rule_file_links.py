"""Rule files that are symbolic links, and what a finding may repeat of a file's content.

A link in the rules directory that leads out of it is never read (`rules/x.yaml -> /etc/shadow`
must not print the password file as `unknown key` findings, at the terminal or in the daemon's
log); a link that stays inside is followed; a finding quotes at most a short escaped fragment.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from watcher.commands.check import run_check
from watcher.engine.ruleset import RuleBook
from watcher.rules.config import WatcherConfig, load_config
from watcher.rules.findings import FRAGMENT_LIMIT, Finding, fragment
from watcher.rules.rulefmt import load_rules

SECRET_LINES = (
    "root:$6$Zq8secretsalt$Xy1hashhashhashhashhashhashhash:19000:0:99999:7:::\n"
    "daemon:*:19000:0:99999:7:::\n"
    "aws_secret_access_key: wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY\n"
)
SECRETS = ("Zq8secretsalt", "Xy1hash", "wJalrXUtnFEMI", "19000:0:99999")
RULE = """\
model: fraud
rules:
  - name: errors
    signal: error_rate
    sql: {url: "sqlite:///x.db", query: "SELECT 1 AS value"}
    above: 0.5
"""


def _workspace(tmp_path: Path) -> tuple[Path, Path]:
    rules = tmp_path / "conf" / "rules"
    rules.mkdir(parents=True)
    config = tmp_path / "conf" / "watcher.yaml"
    config.write_text(f"database: sqlite:///{tmp_path / 'w.db'}\nrules: rules/\n")
    secret = tmp_path / "elsewhere" / "shadow"
    secret.parent.mkdir()
    secret.write_text(SECRET_LINES)
    return config, secret


def _config(path: Path) -> WatcherConfig:
    loaded = load_config(path, {})
    assert loaded.config is not None, loaded.findings
    return loaded.config


def _check(config: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_check(config, None, out=out, err=err, env={})
    return code, out.getvalue() + err.getvalue()


def test_a_link_out_of_the_rules_directory_is_a_finding_that_never_shows_the_target(tmp_path: Path) -> None:
    config, secret = _workspace(tmp_path)
    (config.parent / "rules" / "shadow.yaml").symlink_to(secret)
    code, output = _check(config)
    assert code == 1
    assert "rules/shadow.yaml:1:1: symbolic link to a file outside" in output
    assert not any(secret_text in output for secret_text in SECRETS)
    assert str(secret) not in output  # not even where it points


def test_the_daemon_log_holds_no_line_of_a_linked_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, secret = _workspace(tmp_path)
    (config.parent / "rules" / "fraud.yaml").write_text(RULE)
    (config.parent / "rules" / "shadow.yaml").symlink_to(secret)
    with caplog.at_level(logging.DEBUG):
        loaded = RuleBook(_config(config), {}).load()
    assert list(loaded.runtime) == ["fraud/errors"]  # the other rules keep running
    logged = caplog.text + " ".join(str(record.__dict__) for record in caplog.records)
    assert "shadow.yaml" in logged
    assert not any(secret_text in logged for secret_text in SECRETS)


def test_a_glob_keeps_its_matches_inside_its_directory(tmp_path: Path) -> None:
    config, secret = _workspace(tmp_path)
    config.write_text(f"database: sqlite:///{tmp_path / 'w.db'}\nrules: ['rules/*.yaml']\n")
    (config.parent / "rules" / "fraud.yaml").write_text(RULE)
    (config.parent / "rules" / "shadow.yaml").symlink_to(secret)
    result = load_rules(_config(config), env={})
    assert list(result.rules) == ["fraud/errors"]
    assert [f.message.split(":")[0] for f in result.findings] == [
        "symbolic link to a file outside " + str(config.parent / "rules")
    ]


def test_a_link_that_stays_inside_is_followed_as_a_configmap_mounts_files(tmp_path: Path) -> None:
    config, _ = _workspace(tmp_path)
    rules = config.parent / "rules"
    (rules / "..2024_01_01").mkdir()
    (rules / "..2024_01_01" / "fraud.yaml").write_text(RULE)
    (rules / "..data").symlink_to("..2024_01_01")
    (rules / "fraud.yaml").symlink_to("..data/fraud.yaml")
    result = load_rules(_config(config), env={})
    assert (list(result.rules), result.findings) == (["fraud/errors"], [])


def test_a_link_that_leads_nowhere_is_a_finding(tmp_path: Path) -> None:
    config, _ = _workspace(tmp_path)
    (config.parent / "rules" / "gone.yaml").symlink_to(tmp_path / "nothing-here.yaml")
    result = load_rules(_config(config), env={})
    assert [(f.file.name, f.message) for f in result.findings] == [
        ("gone.yaml", "symbolic link that leads nowhere: not read")
    ]


def test_a_directory_link_is_not_descended_into(tmp_path: Path) -> None:
    config, secret = _workspace(tmp_path)
    (secret.parent / "more.yaml").write_text(SECRET_LINES)
    (config.parent / "rules" / "elsewhere").symlink_to(secret.parent, target_is_directory=True)
    result = load_rules(_config(config), env={})
    assert (result.rules, result.findings, result.files) == ({}, [], [])


def test_a_file_named_on_the_command_line_is_read_as_named(tmp_path: Path) -> None:
    config, _ = _workspace(tmp_path)
    real = tmp_path / "elsewhere" / "fraud.yaml"
    real.write_text(RULE)
    link = tmp_path / "fraud-link.yaml"
    link.symlink_to(real)
    result = load_rules(_config(config), [link], env={})
    assert list(result.rules) == ["fraud/errors"]


def test_an_unknown_key_is_quoted_as_a_short_escaped_fragment(tmp_path: Path) -> None:
    config, _ = _workspace(tmp_path)
    long_key = "k" * 30 + "\x1b[31mSECRET-PART-THAT-MUST-NOT-SHOW" + "z" * 200
    (config.parent / "rules" / "odd.yaml").write_text(f'"{long_key.replace(chr(27), chr(92) + "e")}": 1\n')
    result = load_rules(_config(config), env={})
    [unknown] = [f for f in result.findings if f.message.startswith("unknown key")]
    quoted = unknown.message.split("'")[1]
    assert len(quoted) <= FRAGMENT_LIMIT and quoted.endswith("…")
    assert "\x1b" not in unknown.message and "MUST-NOT-SHOW" not in unknown.message


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("short", "short"),
        ("tab\there", "tab\\there"),
        ("x" * 41, "x" * 39 + "…"),
        ("x" * 40, "x" * 40),
        ("\x1b" * 30, ("\\x1b" * 10)[:39] + "…"),
    ],
)
def test_fragment_escapes_and_cuts(text: str, shown: str) -> None:
    assert fragment(text) == shown


def test_every_finding_message_is_bounded_and_printable() -> None:
    finding = Finding(Path("x.yaml"), 1, 1, "bad\x07 " + "y" * 5000)
    assert len(finding.message) <= 400 and "\x07" not in finding.message


def test_a_rules_directory_that_is_itself_a_link_is_read(tmp_path: Path) -> None:
    config, _ = _workspace(tmp_path)
    real_rules = tmp_path / "real-rules"
    real_rules.mkdir()
    (real_rules / "fraud.yaml").write_text(RULE)
    os.rmdir(config.parent / "rules")
    (config.parent / "rules").symlink_to(real_rules, target_is_directory=True)
    result = load_rules(_config(config), env={})
    assert (list(result.rules), result.findings) == (["fraud/errors"], [])
