"""`watcher test TESTFILE…`: rule unit tests (input series, evaluation times, expected incidents).

The format and the evaluation are described in watcher.ruletest.runner. Failures, findings and the
summary line go to stdout; notes on rules no test evaluates go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from watcher.commands.common import EXIT_FINDINGS, EXIT_USAGE
from watcher.rules.config import WatcherConfig, load_config
from watcher.ruletest.runner import run_test_files


def add_parsers(subparsers: Any) -> None:
    test = subparsers.add_parser(
        "test",
        help="run rule unit tests: input series, evaluation times, expected incidents",
        description="Run rule unit tests against a throwaway local Prometheus, like `promtool test "
        "rules`. Exit 0: every test passed; 1: a test failed, or a test file or the configuration "
        "has findings; 2: a test file or the configuration cannot be read.",
    )
    test.add_argument(
        "--config",
        help="configuration for test files without `config:` (default: a built-in one that accepts "
        "every target the rule files name)",
    )
    test.add_argument("test_files", nargs="+", type=Path, metavar="TESTFILE", help="rule test files")
    test.set_defaults(handler=cmd_test)


def cmd_test(args: argparse.Namespace) -> int:
    default_config: WatcherConfig | None = None
    if args.config:
        loaded = load_config(Path(args.config))
        for finding in loaded.findings:
            print(finding, file=sys.stderr)
        if loaded.unreadable:
            print(f"watcher test: no readable configuration at {args.config}", file=sys.stderr)
            return EXIT_USAGE
        if loaded.config is None:
            return EXIT_FINDINGS
        default_config = loaded.config
    return run_test_files(args.test_files, out=sys.stdout, err=sys.stderr, default_config=default_config)
