"""The incident JSON (CLI and /api share it) and the `incidents` / `incident ID` commands.

Store-backed tests run on a migrated SQLite file and on a fresh PostgreSQL schema.
"""

from __future__ import annotations

import argparse
import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import fresh_postgres_schema
from watcher.commands.incidents import add_parsers, list_incidents, show_incident
from watcher.incidents.json_view import incident_detail_json, incident_to_json, incidents_json
from watcher.model import IncidentStatus, RollbackStatus
from watcher.store.database import open_engine
from watcher.store.migrate import upgrade
from watcher.store.queue import create_intent
from watcher.store.records import AuditEvent, IncidentRecord, IntentPurpose, RollbackIntent
from watcher.store.repository import NewIncident, Store

OPENED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SQL_PASSWORD = "pg-s3cret"
SECRET_URL = f"postgresql+psycopg://analyst:{SQL_PASSWORD}@db.internal/analytics"
SPEC_KEYS = {
    "id", "rule", "model", "target", "status", "severity", "summary", "opened_at", "resolved_at",
    "version", "evidence", "rollback", "decision", "acknowledged_by", "silenced_until",
}  # fmt: skip
TIMELINE_KEYS = {"at", "actor", "kind", "from_version", "to_version", "rule", "rule_hash", "detail"}


# --- seeding, shared with tests/test_http.py ------------------------------------------------------
@dataclass(frozen=True)
class Seeded:
    resolved_id: int  # rolled back, verified, resolved; three audit events
    open_id: int  # awaiting approval, evidence quoting a SQL URL with its password


def new_incident(rule_id: str, opened_at: datetime, evidence: dict[str, Any]) -> NewIncident:
    return NewIncident(
        rule_id=rule_id,
        rule_hash="a" * 64,
        model=rule_id.split("/")[0],
        target="fraud-prod",
        signal="latency",
        severity="critical",
        action="rollback",
        summary=f"{rule_id} breached",
        opened_at=opened_at,
        live_version="7",
        evidence=evidence,
    )


def seed_incidents(store: Store) -> Seeded:
    later = OPENED + timedelta(minutes=10)
    with store.transaction() as tx:
        resolved_id = tx.open_incident(
            new_incident("fraud/p99", OPENED, {"value": 0.31, "threshold": 0.25, "query": "up == 0"})
        )
        create_intent(
            tx.connection, incident_id=resolved_id, target="fraud-prod", purpose=IntentPurpose.ROLLBACK,
            from_version="7", to_version="6", requested_by="watcher", reason="auto", now=OPENED,
        )  # fmt: skip
        tx.update_incident(
            resolved_id, later, status=IncidentStatus.MITIGATED, resolved_at=later, rollback_from="7",
            rollback_to="6", rollback_status=RollbackStatus.SUCCEEDED, decision_reason="auto_rollback",
            decision_detail="auto_rollback is on",
        )  # fmt: skip
        for minutes, kind, versions in ((0, "incident_opened", {}), (1, "rollback_requested", {"to": "6"}),
                                        (10, "incident_resolved", {})):  # fmt: skip
            tx.append_audit(
                AuditEvent(
                    at=OPENED + timedelta(minutes=minutes), actor="watcher", kind=kind,
                    incident_id=resolved_id, rule_id="fraud/p99", rule_hash="a" * 64, target="fraud-prod",
                    from_version="7" if versions else None, to_version=versions.get("to"),
                    detail={"note": f"step {minutes}"},
                )
            )  # fmt: skip
        open_id = tx.open_incident(
            new_incident(
                "fraud/accuracy",
                later,
                {"value": 0.9, "source": {"url": SECRET_URL}, "queries": [f"see {SECRET_URL}"]},
            )
        )
        tx.update_incident(
            open_id, later, status=IncidentStatus.AWAITING_APPROVAL, rollback_from="7", rollback_to="6",
            decision_reason="approval_required", decision_detail="action is approve",
        )  # fmt: skip
    return Seeded(resolved_id=resolved_id, open_id=open_id)


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'watcher.db'}"


def migrated_sqlite_store(directory: Path) -> Store:
    engine = open_engine(sqlite_url(directory))
    upgrade(engine)
    return Store(engine)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a migrated, empty watcher database."""
    if request.param == "sqlite":
        migrated_sqlite_store(tmp_path).engine.dispose()
        yield sqlite_url(tmp_path)
        return
    with fresh_postgres_schema() as schema:
        upgrade(schema.engine)
        yield schema.url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    engine = open_engine(store_url)
    yield Store(engine)
    engine.dispose()


# --- pure ----------------------------------------------------------------------------------------
def record(**changes: Any) -> IncidentRecord:
    base = IncidentRecord(
        id=3, rule_id="fraud/p99", rule_hash="b" * 64, model="fraud", target="fraud-prod", signal="latency",
        severity="critical", action="rollback", status=IncidentStatus.OPEN, summary="p99 high",
        opened_at=OPENED, resolved_at=None, live_version="7", evidence={"value": 0.3},
        decision_reason=None, decision_detail=None, rollback_from=None, rollback_to=None,
        rollback_status=None, verify_due_at=None, verify_attempts=0, acknowledged_by=None,
        silenced_until=None, undone_by=None, slack_channel=None, slack_ts=None,
    )  # fmt: skip
    return replace(base, **changes)


def intent(incident_id: int, **changes: Any) -> RollbackIntent:
    base = RollbackIntent(
        id=1, key="k", incident_id=incident_id, target="fraud-prod", purpose=IntentPurpose.ROLLBACK,
        from_version="7", to_version="6", requested_by="watcher", reason="auto",
        status=RollbackStatus.RUNNING, attempts=1, next_attempt_at=OPENED, created_at=OPENED,
        result_detail=None,
    )  # fmt: skip
    return replace(base, **changes)


def test_an_open_incident_has_the_spec_keys_with_null_resolution_and_no_rollback() -> None:
    document = incident_to_json(record(), [])
    assert set(document) >= SPEC_KEYS
    assert document["status"] == "open"
    assert document["opened_at"] == "2024-05-01T12:00:00Z"
    assert document["resolved_at"] is None
    assert document["version"] == "7"
    assert document["rollback"] is None
    assert document["decision"] == {"reason": None, "detail": None}
    assert "timeline" not in document
    json.dumps(document, allow_nan=False)


def test_times_are_utc_whatever_zone_they_come_in() -> None:
    paris = datetime(2024, 5, 1, 14, 0, tzinfo=UTC).astimezone(datetime.now().astimezone().tzinfo)
    document = incident_to_json(record(opened_at=paris, silenced_until=OPENED + timedelta(hours=1)), [])
    assert document["opened_at"] == "2024-05-01T14:00:00Z"
    assert document["silenced_until"] == "2024-05-01T13:00:00Z"


def test_rollback_comes_from_the_incident_or_else_from_its_latest_intent() -> None:
    proposed = incident_to_json(record(rollback_from="7", rollback_to="6"), [])
    assert proposed["rollback"] == {"from": "7", "to": "6", "status": None}
    done = incident_to_json(
        record(rollback_from="7", rollback_to="6", rollback_status=RollbackStatus.SUCCEEDED), []
    )
    assert done["rollback"] == {"from": "7", "to": "6", "status": "succeeded"}
    only_intents = incident_to_json(record(), [intent(3, to_version="5"), intent(99, to_version="1")])
    assert only_intents["rollback"] == {"from": "7", "to": "5", "status": None}
    assert [item["to"] for item in only_intents["rollbacks"]] == ["5"]


def test_values_json_cannot_hold_become_null() -> None:
    evidence = {"value": float("nan"), "samples": float("inf"), "series": [1.0, float("-inf")]}
    document = incident_to_json(record(evidence=evidence), [])
    assert document["evidence"] == {"value": None, "samples": None, "series": [1.0, None]}
    json.dumps(document, allow_nan=False)


def test_secrets_are_masked_everywhere_in_the_document() -> None:
    evidence = {
        "source": {"url": SECRET_URL, "nested": [{"dsn": f"mysql://root:{SQL_PASSWORD}@h/db"}]},
        "note": "token xoxb-123-456-abcdef",
    }
    timeline = [
        AuditEvent(at=OPENED, actor="watcher", kind="query_failed", incident_id=3,
                   detail={"error": f"could not connect to {SECRET_URL}"}),
    ]  # fmt: skip
    document = incident_to_json(
        record(evidence=evidence, decision_detail=f"failed on {SECRET_URL}"), [], timeline
    )
    text = json.dumps(document)
    assert SQL_PASSWORD not in text
    assert "xoxb-123" not in text
    assert document["evidence"]["source"]["url"] == "postgresql+psycopg://analyst:***@db.internal/analytics"


def test_timeline_entries_carry_their_keys_in_order() -> None:
    events = [
        AuditEvent(at=OPENED + timedelta(minutes=n), actor=actor, kind=kind, incident_id=3,
                   rule_id="fraud/p99", rule_hash="b" * 64, from_version="7", to_version="6")
        for n, (actor, kind) in enumerate(
            [("watcher", "incident_opened"), ("U012ABCDEF", "rollback_approved")]
        )
    ]  # fmt: skip
    document = incident_to_json(record(), [], events)
    assert [event["kind"] for event in document["timeline"]] == ["incident_opened", "rollback_approved"]
    assert set(document["timeline"][1]) >= TIMELINE_KEYS
    assert document["timeline"][1]["actor"] == "U012ABCDEF"
    assert document["timeline"][1]["at"] == "2024-05-01T12:01:00Z"


# --- through the store -----------------------------------------------------------------------------
@pytest.mark.integration
def test_incidents_json_lists_newest_first_and_filters_open(store: Store) -> None:
    seeded = seed_incidents(store)

    everything = incidents_json(store)
    assert [doc["id"] for doc in everything] == [seeded.open_id, seeded.resolved_id]
    assert incidents_json(store, open_only=True)[0]["id"] == seeded.open_id
    assert len(incidents_json(store, open_only=True)) == 1
    resolved = everything[1]
    assert resolved["status"] == "mitigated"
    assert resolved["resolved_at"] == "2024-05-01T12:10:00Z"
    assert resolved["rollback"] == {"from": "7", "to": "6", "status": "succeeded"}
    assert resolved["rollbacks"][0]["purpose"] == "rollback"
    assert "timeline" not in resolved
    assert SQL_PASSWORD not in json.dumps(everything)


@pytest.mark.integration
def test_incident_detail_json_has_the_timeline_in_order(store: Store) -> None:
    seeded = seed_incidents(store)

    document = incident_detail_json(store, seeded.resolved_id)
    assert document is not None
    assert [event["kind"] for event in document["timeline"]] == [
        "incident_opened", "rollback_requested", "incident_resolved",
    ]  # fmt: skip
    assert document["timeline"][1]["to_version"] == "6"
    assert incident_detail_json(store, 424242) is None


# --- the commands ----------------------------------------------------------------------------------
@pytest.mark.integration
def test_incidents_command_prints_a_table_and_json(store: Store, store_url: str) -> None:
    seeded = seed_incidents(store)

    table = io.StringIO()
    assert list_incidents(store_url, open_only=False, as_json=False, out=table) == 0
    header, *rows = table.getvalue().splitlines()
    assert header.split() == ["id", "status", "rule", "target", "version", "opened", "resolved"]
    expected = [str(seeded.open_id), "awaiting_approval", "fraud/accuracy", "fraud-prod", "7"]
    assert rows[0].split()[:5] == expected
    assert "2024-05-01 12:10:00Z" in rows[1]

    as_json = io.StringIO()
    assert list_incidents(store_url, open_only=True, as_json=True, out=as_json) == 0
    assert [doc["id"] for doc in json.loads(as_json.getvalue())] == [seeded.open_id]


@pytest.mark.integration
def test_incident_command_shows_one_incident_or_says_none(
    store: Store, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seeded = seed_incidents(store)

    text = io.StringIO()
    assert show_incident(store_url, seeded.resolved_id, as_json=False, out=text) == 0
    shown = text.getvalue()
    assert "rollback:  7 -> 6 (succeeded)" in shown
    assert "rollback_requested 7 -> 6" in shown

    as_json = io.StringIO()
    assert show_incident(store_url, seeded.open_id, as_json=True, out=as_json) == 0
    document = json.loads(as_json.getvalue())
    assert document["status"] == "awaiting_approval" and document["timeline"] == []
    assert SQL_PASSWORD not in as_json.getvalue()

    assert show_incident(store_url, 999, as_json=False, out=io.StringIO()) == 1
    assert "no incident 999" in capsys.readouterr().err


def test_commands_refuse_a_database_that_was_never_migrated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sqlite3.connect(tmp_path / "watcher.db").close()  # exists, no schema
    assert list_incidents(sqlite_url(tmp_path), open_only=False, as_json=False, out=io.StringIO()) == 2
    assert "never migrated" in capsys.readouterr().err

    missing = tmp_path / "nowhere.db"
    assert show_incident(f"sqlite:///{missing}", 1, as_json=True, out=io.StringIO()) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists()  # reading never creates the database


@pytest.mark.integration
def test_commands_refuse_an_unmigrated_postgresql_schema(capsys: pytest.CaptureFixture[str]) -> None:
    with fresh_postgres_schema() as schema:
        assert list_incidents(schema.url, open_only=False, as_json=True, out=io.StringIO()) == 2
    assert "watcher db upgrade" in capsys.readouterr().err


def test_commands_are_reached_through_argparse_with_a_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seeded = seed_incidents(migrated_sqlite_store(tmp_path))
    config = tmp_path / "watcher.yaml"
    config.write_text("database: sqlite:///watcher.db\nrules: rules/\n")
    (tmp_path / "rules").mkdir()
    parser = argparse.ArgumentParser(prog="watcher")
    add_parsers(parser.add_subparsers(dest="command", required=True))

    args = parser.parse_args(["incidents", "--open", "--json", "--config", str(config)])
    assert args.handler(args) == 0
    assert [doc["id"] for doc in json.loads(capsys.readouterr().out)] == [seeded.open_id]

    args = parser.parse_args(["incident", str(seeded.resolved_id), "--config", str(config)])
    assert args.handler(args) == 0
    assert f"incident {seeded.resolved_id}: fraud/p99 breached" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["incident", "seven"])
    assert exit_info.value.code == 2
