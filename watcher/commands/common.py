"""What every command does first: read the configuration or say clearly why it cannot."""

from __future__ import annotations

import argparse
import functools
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

from watcher.rules.config import WatcherConfig, load_config

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2


def config_path(args: argparse.Namespace) -> Path:
    given = getattr(args, "config", None)
    if given:
        return Path(given)
    local = Path("watcher.yaml")
    if not local.exists() and os.environ.get("WATCHER_CONFIG"):
        return Path(os.environ["WATCHER_CONFIG"])
    return local


def load_or_report(args: argparse.Namespace) -> WatcherConfig | int:
    """The configuration, or the exit code after printing why there is none."""
    result = load_config(config_path(args))
    if result.unreadable or result.config is None:
        for finding in result.findings:
            print(finding, file=sys.stderr)
        if result.unreadable:
            return EXIT_USAGE
        return EXIT_FINDINGS
    if result.findings:
        for finding in result.findings:
            print(finding, file=sys.stderr)
        return EXIT_FINDINGS
    return result.config


Handler = Callable[[argparse.Namespace], int]


def reports_database_errors(handler: Handler) -> Handler:
    """A command whose database cannot be reached (down, refused, wrong password) says so in one
    line on stderr and exits 1, instead of a page of traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return handler(args)
        except SQLAlchemyError as error:
            print(f"watcher {args.command}: {database_problem(error)}", file=sys.stderr)
            return EXIT_FINDINGS

    return run


def database_problem(error: Exception) -> str:
    """`cannot reach the database: <the driver's first line>`, secrets masked."""
    from watcher.logs import redact

    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    reason = redact(lines[0]) if lines else type(error).__name__
    return f"cannot reach the database: {reason[:300]}"


def cli_actor() -> str:
    """Who ran the command, for the audit trail."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"cli:{user}"
