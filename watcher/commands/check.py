"""`watcher check [--config watcher.yaml] [PATH…]`: validate the configuration and rule files,
like `promtool check rules`. Every problem goes to stdout as FILE:LINE:COL: message, sorted by
file and position; a summary line goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from watcher.commands.common import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, config_path
from watcher.rules.config import load_config
from watcher.rules.findings import Finding, sorted_findings
from watcher.rules.rulefmt import load_rules


def add_parsers(subparsers: Any) -> None:
    check = subparsers.add_parser(
        "check",
        help="validate watcher.yaml and the rule files",
        description="Validate watcher.yaml and its rule files (or only the PATHs given, still "
        "against the configuration's targets and timeout). Exit 0: clean; 1: findings; "
        "2: no readable configuration.",
    )
    check.add_argument("--config", help="configuration file (default ./watcher.yaml, then $WATCHER_CONFIG)")
    check.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="rule files, directories or globs")
    check.set_defaults(handler=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    return run_check(config_path(args), args.paths or None, out=sys.stdout, err=sys.stderr)


def run_check(
    config_file: Path,
    paths: Sequence[Path] | None,
    *,
    out: TextIO,
    err: TextIO,
    env: Mapping[str, str] | None = None,
) -> int:
    loaded = load_config(config_file, env)
    if loaded.unreadable:
        for finding in loaded.findings:
            print(_shown(finding), file=err)
        print(f"watcher check: no readable configuration at {config_file}", file=err)
        return EXIT_USAGE
    findings = list(loaded.findings)
    files, rules = 1, 0
    if loaded.config is not None:
        result = load_rules(loaded.config, paths, env)
        findings.extend(result.findings)
        files, rules = files + len(result.files), len(result.rules)
    for finding in sorted_findings(findings):
        print(_shown(finding), file=out)
    summary = f"{_count(files, 'file')}, {_count(rules, 'rule')}, {_count(len(findings), 'finding')}"
    if loaded.config is None:
        summary += " (rule files are checked once watcher.yaml is clean)"
    print(summary, file=err)
    return EXIT_FINDINGS if findings else EXIT_OK


def _shown(finding: Finding) -> str:
    """The finding with its file relative to the working directory when it lies below it."""
    path = finding.file.absolute()
    try:
        shown = path.relative_to(Path.cwd())
    except ValueError:
        shown = path
    return f"{shown}:{finding.line}:{finding.column}: {finding.message}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
