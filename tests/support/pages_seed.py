"""Incidents for the web pages' tests and bench: one told story with a rollback, and bulk rows.

The story (times relative to `at`, the moment the incident opened):
fraud-prod runs v2, v3 goes live 4 minutes before, p99 latency rises over 0.3 right after, the
incident opens, v3 is rolled back to v2 a minute later, verified 5 minutes after that, resolved.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert

from tests.support.prometheus import Series
from watcher.decisions.evaluation import RuleStatus
from watcher.model import IncidentStatus, Outcome, RollbackStatus, RuleState
from watcher.store import tables as t
from watcher.store.records import AuditEvent
from watcher.store.repository import NewIncident, Store

LATENCY_RULE = "fraud-detector/p99-latency"
DRIFT_RULE = "fraud-detector/input-drift"
LATENCY_METRIC = "fraud_latency_p99_seconds"
RULES_YAML = f"""model: fraud-detector
target: fraud-prod
rules:
  - name: p99-latency
    signal: latency
    prometheus: max({LATENCY_METRIC}{{model="fraud-detector"}})
    above: 0.3
    for: 1m
    every: 15s
    action: rollback
  - name: error-rate
    signal: error_rate
    prometheus: max(fraud_error_ratio{{model="fraud-detector"}})
    above: 0.05
    for: 1m
    every: 15s
"""


@dataclass(frozen=True)
class Story:
    incident_id: int
    drift_id: int
    open_id: int
    opened_at: datetime


def latency_series(at: datetime) -> list[Series]:
    """p99 latency around the story: calm, high while v3 is live, calm again after the rollback."""
    points: list[tuple[datetime | float, float]] = []
    start = at - timedelta(minutes=30)
    for i in range(0, 60 * 50, 15):
        moment = start + timedelta(seconds=i)
        bad = at - timedelta(minutes=1, seconds=30) <= moment < at + timedelta(minutes=1, seconds=20)
        wobble = 0.02 * ((i // 15) % 7) / 7
        points.append((moment, (0.42 if bad else 0.12) + wobble))
    errors = [
        (
            moment,
            0.01 + (0.04 if isinstance(moment, datetime) and abs((moment - at).total_seconds()) < 60 else 0),
        )
        for moment, _ in points
    ]
    return [
        Series(LATENCY_METRIC, {"model": "fraud-detector"}, points),
        Series("fraud_error_ratio", {"model": "fraud-detector"}, errors),
    ]


def _audit(tx: Any, at: datetime, kind: str, incident_id: int, rule_id: str, **kw: Any) -> None:
    tx.append_audit(
        AuditEvent(
            at=at,
            actor=kw.pop("actor", "watcher"),
            kind=kind,
            incident_id=incident_id,
            rule_id=rule_id,
            target=kw.pop("target", "fraud-prod"),
            from_version=kw.pop("from_version", None),
            to_version=kw.pop("to_version", None),
            detail=kw,
        )
    )


def seed_story(store: Store, at: datetime) -> Story:
    with store.transaction() as tx:
        tx.record_live_version("fraud-prod", "v2", at - timedelta(hours=3))
        tx.record_live_version("fraud-prod", "v2", at - timedelta(minutes=4, seconds=30))
        tx.record_live_version("fraud-prod", "v3", at - timedelta(minutes=4))
        tx.record_live_version("fraud-prod", "v3", at + timedelta(seconds=50))
        tx.record_live_version("fraud-prod", "v2", at + timedelta(minutes=1))
        tx.record_live_version("fraud-prod", "v2", at + timedelta(hours=1))
        evidence = {
            "value": 0.42,
            "threshold": 0.3,
            "comparison": "above",
            "evaluated_at": at.isoformat(),
            "outcome": "breach",
            "query": f'max({LATENCY_METRIC}{{model="fraud-detector"}})',
            "samples": 1200.0,
            "rule_hash": "ab12cd34ef56",
        }
        incident_id = tx.open_incident(
            NewIncident(
                LATENCY_RULE,
                "ab12cd34ef56",
                "fraud-detector",
                "fraud-prod",
                "latency",
                "critical",
                "rollback",
                "p99 latency 0.42s is over 0.3s",
                at,
                "v3",
                evidence,
            )
        )
        _audit(tx, at, "incident_opened", incident_id, LATENCY_RULE, value=0.42, threshold=0.3)
        _audit(tx, at, "rollback_requested", incident_id, LATENCY_RULE, from_version="v3", to_version="v2")
        rolled = at + timedelta(minutes=1)
        _audit(
            tx, rolled, "rollback_succeeded", incident_id, LATENCY_RULE, from_version="v3", to_version="v2"
        )
        verified = rolled + timedelta(minutes=5)
        _audit(tx, verified, "rollback_verified", incident_id, LATENCY_RULE, outcome="ok")
        tx.update_incident(
            incident_id,
            verified,
            status=IncidentStatus.MITIGATED,
            resolved_at=verified,
            rollback_from="v3",
            rollback_to="v2",
            rollback_status=RollbackStatus.SUCCEEDED,
            decision_reason="auto_rollback",
            decision_detail="automatic rollback allowed",
        )
        drift_evidence = {
            "value": 0.5,
            "threshold": 0.3,
            "comparison": "above",
            "evaluated_at": at.isoformat(),
            "columns": {
                "amount": {"score": 0.001, "threshold": 0.05, "method": "K-S p_value", "drifted": True},
                "hour": {"score": 0.2, "threshold": 0.05, "method": "K-S p_value", "drifted": False},
            },
        }
        drift_id = tx.open_incident(
            NewIncident(
                DRIFT_RULE,
                "dd11",
                "fraud-detector",
                None,
                "drift",
                "warning",
                "notify",
                "input drift: 1 of 2 columns",
                at + timedelta(minutes=2),
                None,
                drift_evidence,
            )
        )
        _audit(tx, at + timedelta(minutes=2), "incident_opened", drift_id, DRIFT_RULE, target=None, value=0.5)
        open_id = tx.open_incident(
            NewIncident(
                "churn/error-rate",
                "ee22",
                "churn",
                "churn-prod",
                "error_rate",
                "warning",
                "approve",
                "error rate 0.09 over 0.05",
                at + timedelta(minutes=3),
                "c7",
                {"value": 0.09, "threshold": 0.05, "comparison": "above"},
            )
        )
        _audit(
            tx, at + timedelta(minutes=3), "incident_opened", open_id, "churn/error-rate", target="churn-prod"
        )
        last = at + timedelta(minutes=20)
        tx.save_rule_status(
            LATENCY_RULE,
            "s",
            "c",
            RuleStatus(
                state=RuleState.INACTIVE, last_evaluated_at=last, last_outcome=Outcome.OK, last_value=0.13
            ),
            last,
        )
        tx.save_rule_status(
            DRIFT_RULE,
            "s",
            "c",
            RuleStatus(
                state=RuleState.FIRING,
                last_evaluated_at=last,
                last_outcome=Outcome.BREACH,
                last_value=0.5,
                fired_at=at,
            ),
            last,
        )
    return Story(incident_id, drift_id, open_id, at)


_STATUSES = [s.value for s in IncidentStatus]


def bulk_rows(count: int, end: datetime, seed: int = 7) -> Iterator[dict[str, Any]]:
    """`count` incidents over the 90 days before `end`: a few open, the rest resolved."""
    rng = random.Random(seed)
    for n in range(count):
        opened = end - timedelta(days=90) + timedelta(seconds=n * 90 * 86400 / count)
        is_open = n >= count - 12
        status = (
            rng.choice(["open", "rolling_back", "awaiting_approval"])
            if is_open
            else rng.choice(["resolved", "mitigated", "resolved", "escalated"])
        )
        number = n % 40 if is_open else rng.randrange(40)  # open ones on distinct rules
        target = f"model-{number:02d}-prod"
        yield {
            "rule_id": f"{target[:-5]}/p99-latency",
            "rule_hash": "h" * 12,
            "model": target[:-5],
            "target": target,
            "signal": "latency",
            "severity": "critical",
            "action": "rollback",
            "status": status,
            "summary": f"p99 latency over 0.3s on {target}",
            "opened_at": opened,
            "resolved_at": None if is_open else opened + timedelta(minutes=20),
            "live_version": f"v{n % 9 + 1}",
            "evidence": {"value": 0.4, "threshold": 0.3, "query": "max(latency)", "labels": {"x": "y" * 200}},
            "rollback_from": f"v{n % 9 + 1}",
            "rollback_to": f"v{n % 9}" if n % 3 else None,
            "rollback_status": "succeeded" if n % 3 else None,
            "verify_attempts": 0,
            "updated_at": opened,
        }


def seed_bulk(store: Store, count: int, end: datetime) -> None:
    rows = list(bulk_rows(count, end))
    with store.transaction() as tx:
        for chunk in range(0, len(rows), 1000):
            tx.connection.execute(insert(t.incidents), rows[chunk : chunk + 1000])
