"""`watcher drill TARGET`: a timed rollback drill, printed step by step."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from watcher.commands.common import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    cli_actor,
    load_or_report,
    reports_database_errors,
)


def add_parsers(subparsers: Any) -> None:
    drill = subparsers.add_parser("drill", help="roll a (staging) target back and forward again")
    drill.add_argument("target")
    drill.add_argument("--config")
    drill.set_defaults(handler=cmd_drill)


@reports_database_errors
def cmd_drill(args: argparse.Namespace) -> int:
    from watcher.commands.operate import _open_store
    from watcher.engine.tick import utc_now
    from watcher.incidents.drill import DrillStep, run_drill
    from watcher.targets import TargetRegistry

    config = load_or_report(args)
    if isinstance(config, int):
        return config
    if args.target not in config.targets:
        print(f"watcher drill: no target {args.target!r} in the configuration", file=sys.stderr)
        return EXIT_USAGE

    def emit(step: DrillStep) -> None:
        mark = "ok  " if step.ok else "FAIL"
        print(f"[{mark}] {step.name:<26} {step.seconds:7.2f}s  {step.detail}", flush=True)

    store = _open_store(config)
    report = run_drill(
        store,
        TargetRegistry(config.targets, config.base_dir),
        args.target,
        cli_actor(),
        config.safety.stable_after,
        utc_now(),
        emit,
    )
    total = sum(step.seconds for step in report.steps)
    print(f"drill of {args.target}: {'passed' if report.ok else 'FAILED'} in {total:.2f}s")
    return EXIT_OK if report.ok else EXIT_FINDINGS
