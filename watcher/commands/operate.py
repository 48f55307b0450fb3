"""`watcher rollback`, `pause`, `resume` and `db upgrade`: operator actions, all audited."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from watcher.commands.common import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    cli_actor,
    database_problem,
    load_or_report,
    reports_database_errors,
)
from watcher.rules.config import WatcherConfig

if TYPE_CHECKING:
    from watcher.incidents.operations import ManualRollbackResult


def add_parsers(subparsers: Any) -> None:
    rollback = subparsers.add_parser("rollback", help="roll a target back now (audited)")
    rollback.add_argument("target")
    rollback.add_argument("--to", dest="to_version", help="version to go to (default: last known-good)")
    rollback.add_argument("--reason", required=True)
    rollback.add_argument("--config")
    rollback.set_defaults(handler=cmd_rollback)
    pause = subparsers.add_parser("pause", help="stop automatic rollbacks (approval asked instead)")
    pause.add_argument("--reason", required=True)
    pause.add_argument("--config")
    pause.set_defaults(handler=cmd_pause)
    resume = subparsers.add_parser("resume", help="allow automatic rollbacks again")
    resume.add_argument("--config")
    resume.set_defaults(handler=cmd_resume)
    db = subparsers.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply migrations")
    upgrade.add_argument("--config")
    upgrade.set_defaults(handler=cmd_db_upgrade)


def _open_store(config: WatcherConfig) -> Any:
    from watcher.store import migrate
    from watcher.store.database import open_engine
    from watcher.store.repository import Store

    engine = open_engine(config.database)
    migrate.upgrade(engine)
    return Store(engine)


@reports_database_errors
def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from watcher.store import migrate
    from watcher.store.database import open_engine, redact_url

    config = load_or_report(args)
    if isinstance(config, int):
        return config
    engine = open_engine(config.database)
    try:
        migrate.upgrade(engine)
        print(f"{redact_url(config.database)}: at revision {migrate.current_revision(engine)}")
    except SQLAlchemyError as error:
        print(f"watcher db upgrade: {database_problem(error)}", file=sys.stderr)
        return EXIT_FINDINGS
    finally:
        engine.dispose()
    return EXIT_OK


@reports_database_errors
def cmd_pause(args: argparse.Namespace) -> int:
    return _set_pause(args, paused=True, reason=args.reason)


@reports_database_errors
def cmd_resume(args: argparse.Namespace) -> int:
    return _set_pause(args, paused=False, reason=None)


def _set_pause(args: argparse.Namespace, *, paused: bool, reason: str | None) -> int:
    from watcher.engine.tick import utc_now
    from watcher.incidents.operations import set_paused

    config = load_or_report(args)
    if isinstance(config, int):
        return config
    store = _open_store(config)
    set_paused(store, paused=paused, reason=reason, actor=cli_actor(), now=utc_now())
    print("automatic rollbacks paused" if paused else "automatic rollbacks resumed")
    return EXIT_OK


@reports_database_errors
def cmd_rollback(args: argparse.Namespace) -> int:
    from watcher.engine.daemon import replica_id
    from watcher.engine.tick import utc_now
    from watcher.incidents.dispatch import RollbackDispatcher
    from watcher.incidents.operations import manual_rollback
    from watcher.model import RollbackStatus
    from watcher.targets import TargetRegistry

    config = load_or_report(args)
    if isinstance(config, int):
        return config
    if args.target not in config.targets:
        print(
            f"watcher rollback: no target {args.target!r} in the configuration "
            f"(known: {', '.join(sorted(config.targets)) or 'none'})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    store = _open_store(config)
    targets = TargetRegistry(config.targets, config.base_dir)
    dispatcher = RollbackDispatcher(store, targets, replica_id(), config.safety.verify_after)
    result = manual_rollback(
        store,
        targets,
        dispatcher,
        target=args.target,
        to_version=args.to_version,
        reason=args.reason,
        actor=cli_actor(),
        stable_after=config.safety.stable_after,
        now=utc_now(),
    )
    print(rollback_line(args.target, result))
    return EXIT_OK if result.status is RollbackStatus.SUCCEEDED else EXIT_FINDINGS


def rollback_line(target: str, result: ManualRollbackResult) -> str:
    """`fraud-prod: 3 -> 2: succeeded (...)`; when nothing was done for want of a version, the
    reason alone, never `None -> None`."""
    outcome = result.status.value if result.status else "not done"
    if result.from_version is None or result.to_version is None:
        return f"{target}: {outcome}: {result.detail}"
    return f"{target}: {result.from_version} -> {result.to_version}: {outcome} ({result.detail})"
