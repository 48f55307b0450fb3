"""`watcher run` and `watcher eval`."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watcher.commands.common import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    load_or_report,
    reports_database_errors,
)


def add_parsers(subparsers: Any) -> None:
    run = subparsers.add_parser("run", help="run the daemon")
    run.add_argument("--config")
    run.add_argument("--once", action="store_true", help="evaluate every rule once and exit")
    run.add_argument("--dry-run", action="store_true", help="evaluate and log; record and change nothing")
    run.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="debug shows every evaluation (default: info, state changes only)",
    )
    run.set_defaults(handler=cmd_run)
    ev = subparsers.add_parser("eval", help="evaluate one rule now; acts on nothing")
    ev.add_argument("rule_id")
    ev.add_argument("--config")
    ev.add_argument("--at", help="evaluation time (RFC 3339, or unix seconds); default now")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(handler=cmd_eval)


@reports_database_errors
def cmd_run(args: argparse.Namespace) -> int:
    from watcher.logs import setup_logging

    config = load_or_report(args)
    if isinstance(config, int):
        return config
    setup_logging(args.log_level)
    # The scheduler's per-job chatter drowns what matters; missed runs are logged by the daemon.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from watcher.engine.daemon import Daemon, SingleReplicaError, run_forever, run_once

    daemon = Daemon(config, dry_run=args.dry_run)
    try:
        return run_once(daemon) if args.once else run_forever(daemon)
    except SingleReplicaError as error:
        print(f"watcher: {error}", file=sys.stderr)
        return EXIT_USAGE


def parse_time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def cmd_eval(args: argparse.Namespace) -> int:
    from watcher.decisions.evaluation import RuleStatus, step
    from watcher.engine.bind import build_runtime_rules
    from watcher.model import NoData, SourceError, Value
    from watcher.rules.rulefmt import load_rules

    config = load_or_report(args)
    if isinstance(config, int):
        return config
    try:
        at = parse_time(args.at)
    except ValueError:
        print(f"watcher eval: --at {args.at!r} is not a time (RFC 3339 or unix seconds)", file=sys.stderr)
        return EXIT_USAGE
    rules = load_rules(config)
    rule = rules.rules.get(args.rule_id)
    if rule is None:
        for finding in rules.findings:
            print(finding, file=sys.stderr)
        print(
            f"watcher eval: no rule {args.rule_id!r} (known: {', '.join(sorted(rules.rules)) or 'none'})",
            file=sys.stderr,
        )
        return EXIT_FINDINGS
    runtime = build_runtime_rules({rule.id: rule}, config)[rule.id]
    previous = _stored_status(config.database, rule.id, rule.state_hash) or RuleStatus()
    measurement = runtime.source.measure(at)
    transition = step(previous, measurement, runtime.policy, at)
    value = measurement.value if isinstance(measurement, Value) else None
    samples = measurement.samples if isinstance(measurement, Value) else None
    report: dict[str, Any] = {
        "rule": rule.id,
        "at": at.isoformat(),
        "value": _number(value),
        "samples": _number(samples),
        "outcome": transition.outcome.value,
        "transition": {
            "from": previous.state.value,
            "to": transition.current.state.value,
            "reason": transition.reason.value,
        },
    }
    if isinstance(measurement, SourceError):
        report["error"] = {
            "kind": measurement.kind.value,
            "message": measurement.message,
            "retryable": measurement.retryable,
        }
    if isinstance(measurement, NoData):
        report["no_data"] = measurement.reason
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(f"value: {'none' if report['value'] is None else repr(report['value'])}")
    print(f"samples: {'none' if report['samples'] is None else repr(report['samples'])}")
    print(f"outcome: {report['outcome']}")
    t = report["transition"]
    print(f"transition: {t['from']} -> {t['to']} ({t['reason']})")
    if "error" in report:
        print(f"error: {report['error']['kind']}: {report['error']['message']}")
    if "no_data" in report:
        print(f"no data: {report['no_data']}")
    return EXIT_OK


def _stored_status(database: str, rule_id: str, state_hash: str) -> Any:
    """The rule's persisted state, read-only, if the database has one (eval changes nothing)."""
    from sqlalchemy.engine import make_url

    from watcher.store.database import is_sqlite, open_engine
    from watcher.store.repository import Store

    sqlite_file = make_url(database).database if is_sqlite(database) else None
    if sqlite_file is not None and (sqlite_file in ("", ":memory:") or not Path(sqlite_file).exists()):
        return None  # never create a database just to look into it
    try:
        engine = open_engine(database)
        try:
            stored = Store(engine).rule_states().get(rule_id)
        finally:
            engine.dispose()
    except Exception:  # no database yet, or not migrated: evaluate from a fresh state
        return None
    if stored is None or stored.state_hash != state_hash:
        return None
    return stored.status
