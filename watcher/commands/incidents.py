"""`watcher incidents` and `watcher incident ID`: read-only views of the incident table.

Neither command migrates the database: reading must never change the schema under a running
daemon, so a database that was never migrated (or is behind) is an error that says what to run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from watcher.commands.common import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    database_problem,
    load_or_report,
    reports_database_errors,
)
from watcher.incidents.json_view import incident_detail_json, incidents_json
from watcher.store import migrate
from watcher.store.database import is_sqlite, open_engine, redact_url
from watcher.store.repository import Store

TABLE_COLUMNS = ("id", "status", "rule", "target", "version", "opened", "resolved")


def add_parsers(subparsers: Any) -> None:
    listing = subparsers.add_parser("incidents", help="list incidents, newest first")
    listing.add_argument("--config")
    listing.add_argument("--open", action="store_true", help="only incidents not resolved yet")
    listing.add_argument("--json", action="store_true", help="a JSON array, as GET /api/incidents")
    listing.set_defaults(handler=cmd_incidents)
    one = subparsers.add_parser("incident", help="one incident with its timeline")
    one.add_argument("incident_id", metavar="ID", type=int)
    one.add_argument("--config")
    one.add_argument("--json", action="store_true", help="a JSON object, as GET /api/incidents/ID")
    one.set_defaults(handler=cmd_incident)


@reports_database_errors
def cmd_incidents(args: argparse.Namespace) -> int:
    config = load_or_report(args)
    if isinstance(config, int):
        return config
    database = config.database
    return list_incidents(database, open_only=args.open, as_json=args.json, out=sys.stdout)


@reports_database_errors
def cmd_incident(args: argparse.Namespace) -> int:
    config = load_or_report(args)
    if isinstance(config, int):
        return config
    database = config.database
    return show_incident(database, args.incident_id, as_json=args.json, out=sys.stdout)


# --- the work, apart from argument parsing ----------------------------------------------------------
def list_incidents(database: str, *, open_only: bool, as_json: bool, out: TextIO) -> int:
    store = open_migrated_store(database)
    if isinstance(store, int):
        return store
    try:
        documents = incidents_json(store, open_only)
    except SQLAlchemyError as error:
        return _database_failure(database, error)
    finally:
        store.engine.dispose()
    if as_json:
        print(json.dumps(documents, indent=2, ensure_ascii=False), file=out)
    else:
        print(incident_table(documents), file=out)
    return EXIT_OK


def show_incident(database: str, incident_id: int, *, as_json: bool, out: TextIO) -> int:
    store = open_migrated_store(database)
    if isinstance(store, int):
        return store
    try:
        document = incident_detail_json(store, incident_id)
    except SQLAlchemyError as error:
        return _database_failure(database, error)
    finally:
        store.engine.dispose()
    if document is None:
        print(f"no incident {incident_id}", file=sys.stderr)
        return EXIT_FINDINGS
    if as_json:
        print(json.dumps(document, indent=2, ensure_ascii=False), file=out)
    else:
        print(incident_text(document), file=out)
    return EXIT_OK


def open_migrated_store(database: str) -> Store | int:
    """A store on a database at the current schema, or EXIT_USAGE after saying why not."""
    missing = _missing_sqlite_file(database)
    if missing is not None:
        # Opening it would create an empty file where the operator expected the daemon's data.
        print(f"watcher: database file {missing} does not exist: run `watcher db upgrade`", file=sys.stderr)
        return EXIT_USAGE
    engine = open_engine(database)
    try:
        # Reached first: current_revision() reads an unreachable database as "never migrated".
        with engine.connect():
            pass
        current = migrate.current_revision(engine)
        head = migrate.head_revision(engine)
    except SQLAlchemyError as error:
        engine.dispose()
        return _database_failure(database, error)
    if current != head:
        engine.dispose()
        state = "was never migrated" if current is None else f"is at schema revision {current}, not {head}"
        print(f"watcher: database {redact_url(database)} {state}: run `watcher db upgrade`", file=sys.stderr)
        return EXIT_USAGE
    return Store(engine)


def _missing_sqlite_file(database: str) -> Path | None:
    if not is_sqlite(database):
        return None
    name = make_url(database).database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    path = Path(name)
    return None if path.exists() else path


def _database_failure(database: str, error: SQLAlchemyError) -> int:
    # The driver's message can quote the connection string; it is masked before it is shown.
    print(f"watcher: {database_problem(error)} ({redact_url(database)})", file=sys.stderr)
    return EXIT_USAGE


# --- text rendering -----------------------------------------------------------------------------------
def _short_time(iso: str | None) -> str:
    """2024-05-01T12:30:05.123Z -> 2024-05-01 12:30:05Z; '-' when not set."""
    if iso is None:
        return "-"
    return iso.replace("T", " ")[:19] + "Z"


def incident_table(documents: Sequence[dict[str, Any]]) -> str:
    if not documents:
        return "no incidents"
    rows = [TABLE_COLUMNS] + [
        (
            str(doc["id"]),
            doc["status"],
            doc["rule"],
            doc["target"] or "-",
            doc["version"] or "-",
            _short_time(doc["opened_at"]),
            _short_time(doc["resolved_at"]),
        )
        for doc in documents
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(TABLE_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def incident_text(doc: dict[str, Any]) -> str:
    rollback = doc["rollback"]
    decision = doc["decision"]
    lines = [
        f"incident {doc['id']}: {doc['summary']}",
        f"  status:    {doc['status']} ({doc['severity']})",
        f"  rule:      {doc['rule']} (model {doc['model']}, hash {doc['rule_hash'][:12]})",
        f"  target:    {doc['target'] or '-'}, version live when it opened: {doc['version'] or '-'}",
        f"  opened:    {_short_time(doc['opened_at'])}",
        f"  resolved:  {_short_time(doc['resolved_at'])}",
    ]
    if rollback is not None:
        status = rollback["status"] or "proposed"
        lines.append(f"  rollback:  {rollback['from']} -> {rollback['to']} ({status})")
    if decision["reason"]:
        lines.append(f"  decision:  {decision['reason']}: {decision['detail'] or ''}".rstrip())
    if doc["acknowledged_by"]:
        lines.append(f"  acknowledged by {doc['acknowledged_by']}")
    if doc["silenced_until"]:
        lines.append(f"  silenced until {_short_time(doc['silenced_until'])}")
    lines.append("  evidence:")
    lines.extend(f"    {key}: {_compact(value)}" for key, value in doc["evidence"].items())
    lines += _findings_lines(doc.get("findings", []))
    lines += _versions_lines(doc.get("versions"))
    lines.append("  timeline:")
    lines.extend(_timeline_line(event) for event in doc.get("timeline", []))
    return "\n".join(lines)


def _findings_lines(findings: Sequence[dict[str, Any]]) -> list[str]:
    """The rules in the incident: the one that opened it, those that joined, settling evidence."""
    if not findings:
        return []
    lines = ["  findings:"]
    for finding in findings:
        verified = f", verified {finding['verified']}" if finding.get("verified") else ""
        lines.append(
            f"    {finding['rule']:<40} {finding['kind']:<9} value {_compact(finding['value'])}"
            f" (peak {_compact(finding['peak'])}, threshold {_compact(finding['threshold'])})"
            f" at {_short_time(finding['at'])}{verified}"
        )
    return lines


def _versions_lines(versions: Sequence[dict[str, Any]] | None) -> list[str]:
    """The target's version history: which version was live when."""
    if not versions:
        return []
    lines = ["  versions of the target (which was live when):"]
    for period in versions:
        since = _short_time(period["live_from"]) if period["live_from"] else "before watcher looked"
        flag = "  (had an incident)" if period["had_incident"] else ""
        lines.append(f"    {period['version']:<12} from {since} to {_short_time(period['last_seen'])}{flag}")
    return lines


def _timeline_line(event: dict[str, Any]) -> str:
    versions = ""
    if event["from_version"] or event["to_version"]:
        versions = f" {event['from_version'] or '?'} -> {event['to_version'] or '?'}"
    detail = " ".join(f"{key}={_compact(value)}" for key, value in event["detail"].items())
    when = _short_time(event["at"])
    return f"    {when}  {event['actor']:<16} {event['kind']}{versions}  {detail}".rstrip()


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
