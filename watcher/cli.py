"""`watcher`: the command line of SPEC.md section 4, thin over the modules that do the work."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import cast

from watcher.commands import COMMAND_MODULES

EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="watcher",
        description="Watch ML models in production; roll them back when they go bad.",
        epilog="Every command takes --config (default ./watcher.yaml, then $WATCHER_CONFIG).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules:
        importlib.import_module(name).add_parsers(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse's own exits: 0 for --help, 2 for bad usage
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    handler = cast(Handler, args.handler)
    return handler(args)
