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
    config = load_or_report(args)
    if isinstance(config, int):
        return config
    try:
        at = parse_time(args.at)
    except ValueError:
        print(f"watcher eval: --at {args.at!r} is not a time (RFC 3339 or unix seconds)", file=sys.stderr)
        return EXIT_USAGE
    runtime = _runtime_rule(config, args.rule_id)
    if runtime is None:
        return EXIT_FINDINGS
    report = _evaluate(config, runtime, at)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    return EXIT_OK


def _runtime_rule(config: Any, rule_id: str) -> Any:
    """The rule bound to its source, or None (with the reason printed)."""
    from watcher.engine.bind import build_runtime_rules
    from watcher.rules.rulefmt import load_rules

    rules = load_rules(config)
    rule = rules.rules.get(rule_id)
    if rule is None:
        for finding in rules.findings:
            print(finding, file=sys.stderr)
        known = ", ".join(sorted(rules.rules)) or "none"
        print(f"watcher eval: no rule {rule_id!r} (known: {known})", file=sys.stderr)
        return None
    return build_runtime_rules({rule.id: rule}, config)[rule.id]


def _evaluate(config: Any, runtime: Any, at: datetime) -> dict[str, Any]:
    """Evaluate as the engine would (attributed, scoped to the live version), acting on nothing.
    A rule over many series reports each instance."""
    from dataclasses import replace

    from watcher.engine.tick import scope_of
    from watcher.model import SeriesValues
    from watcher.rules.instances import InstanceProblem, instance_of, is_vector_rule
    from watcher.sources.base import measure_together

    attribution = None if is_vector_rule(runtime.rule) else _attribution(config, runtime, at)
    [answer] = measure_together([runtime.source], at, [scope_of(attribution)])
    if not isinstance(answer, SeriesValues):
        return _evaluate_one(config, runtime, answer, attribution, at)
    instances: list[dict[str, Any]] = []
    for item in answer.series:
        rule = instance_of(runtime.rule, item.labels)
        if isinstance(rule, InstanceProblem):
            instances.append({"rule": rule.instance_id, "error": {"kind": "config", "message": rule.message}})
            continue
        instance = replace(runtime, rule=rule)
        instances.append(
            _evaluate_one(config, instance, item.measurement, _attribution(config, instance, at), at)
        )
    return {"rule": runtime.rule.id, "at": at.isoformat(), "instances": instances}


def _evaluate_one(
    config: Any, runtime: Any, measurement: Any, attribution: Any, at: datetime
) -> dict[str, Any]:
    from watcher.decisions.evaluation import RuleStatus, step
    from watcher.model import ErrorKind, NoData, SourceError, Value

    rule = runtime.rule
    if rule.target is not None and rule.target not in config.targets:
        measurement = SourceError(ErrorKind.CONFIG, f"target '{rule.target}' is not in watcher.yaml", False)
        attribution = None
    previous = _stored_status(config.database, rule.id, rule.state_hash) or RuleStatus()
    transition = step(previous, measurement, runtime.policy, at, attribution)
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
        "version": _version_report(attribution),
    }
    if isinstance(measurement, SourceError):
        report["error"] = {
            "kind": measurement.kind.value,
            "message": measurement.message,
            "retryable": measurement.retryable,
        }
    if isinstance(measurement, NoData):
        report["no_data"] = measurement.reason
    return report


def _attribution(config: Any, runtime: Any, at: datetime) -> Any:
    """Which version the window speaks for, from watcher's records (read-only) and the target."""
    from watcher.decisions.attribution import attribute
    from watcher.targets import TargetRegistry

    target = runtime.rule.target
    if target is None or target not in config.targets:
        return None
    live = TargetRegistry(config.targets, config.base_dir).live_version(target)
    return attribute(_stored_history(config.database, target), live, runtime.lookback, at)


def _version_report(attribution: Any) -> dict[str, Any] | None:
    if attribution is None:
        return None
    clean_at = attribution.live_since if attribution.settling else None
    return {
        "live": attribution.version,
        "attribution": attribution.kind.value,
        "live_since": attribution.live_since.isoformat() if attribution.live_since else None,
        "window_holds": attribution.previous_version if attribution.settling else None,
        "window_start": attribution.window_start.isoformat(),
        "clean_from": clean_at.isoformat() if clean_at else None,
    }


def _print_report(report: dict[str, Any]) -> None:
    if "instances" in report:
        print(f"instances: {len(report['instances'])}")
        for instance in report["instances"]:
            print(f"instance: {instance['rule']}")
            if "value" in instance:
                _print_report(instance)
            else:
                print(f"error: {instance['error']['kind']}: {instance['error']['message']}")
        return
    print(f"value: {'none' if report['value'] is None else repr(report['value'])}")
    print(f"samples: {'none' if report['samples'] is None else repr(report['samples'])}")
    print(f"outcome: {report['outcome']}")
    t = report["transition"]
    print(f"transition: {t['from']} -> {t['to']} ({t['reason']})")
    version = report["version"]
    if version is not None and version["attribution"] == "settling":
        print(
            f"version: {version['live']} (settling: the window still holds {version['window_holds']}, "
            f"went live {version['live_since']})"
        )
    elif version is not None:
        print(f"version: {version['live'] or 'unknown'} ({version['attribution']})")
    if "error" in report:
        print(f"error: {report['error']['kind']}: {report['error']['message']}")
    if "no_data" in report:
        print(f"no data: {report['no_data']}")


def _database_exists(database: str) -> bool:
    """False for a SQLite file that is not there: eval never creates a database to look into."""
    from sqlalchemy.engine import make_url

    from watcher.store.database import is_sqlite

    sqlite_file = make_url(database).database if is_sqlite(database) else None
    return sqlite_file is None or (sqlite_file not in ("", ":memory:") and Path(sqlite_file).exists())


def _stored_status(database: str, rule_id: str, state_hash: str) -> Any:
    """The rule's persisted state, read-only, if the database has one (eval changes nothing)."""
    from watcher.store.database import open_engine
    from watcher.store.repository import Store

    if not _database_exists(database):
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


def _stored_history(database: str, target: str) -> list[Any]:
    """The target's recorded version history, read-only ([] without a database or records)."""
    from watcher.store.database import open_engine
    from watcher.store.repository import Store

    if not _database_exists(database):
        return []
    try:
        engine = open_engine(database)
        try:
            return Store(engine).sightings(target)
        finally:
            engine.dispose()
    except Exception:  # no database yet, or not migrated: nothing recorded
        return []
