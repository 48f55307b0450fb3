"""The incident message, built once from incident facts and rendered per channel.

Nothing here knows Slack: text is a tuple of spans (plain text, a user, a link, code, a time) so
each renderer can escape and format them its own way. Everything is pure; `now` is passed in.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal
from urllib.parse import quote

from watcher.incidents.lifecycle import IncidentView
from watcher.incidents.lifecycle import available_actions as lifecycle_actions
from watcher.model import IncidentStatus, RollbackStatus, Severity, Signal


@dataclass(frozen=True)
class DriftColumn:
    """One column of a drift check. `drifted` is the source's verdict: for p-value tests a low score
    means drift, for distances a high one, so the direction cannot be guessed from the score."""

    name: str
    score: float
    threshold: float
    method: str  # the statistical test actually used, e.g. "ks", "psi", "K-S p_value"
    drifted: bool


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    actor: str  # "watcher", a Slack user id, or a CLI user
    kind: str  # the audit event's kind, e.g. "rollback_succeeded"
    text: str


@dataclass(frozen=True)
class FindingFact:
    """Another rule of the incident: one that fired on the same version, or settling evidence."""

    rule_id: str
    value: float | None
    threshold: float
    settling: bool  # breached on a window that still held the version rolled away from


@dataclass(frozen=True)
class IncidentFacts:
    """What the store knows about one incident, in the shape the message needs."""

    id: int
    rule_id: str
    model: str
    rule_name: str
    target: str | None
    signal: Signal
    severity: Severity
    status: IncidentStatus
    summary: str
    value: float | None
    threshold: float
    comparison: Literal["above", "below"]
    samples: float | None
    live_version: str | None  # live when the incident opened
    rollback_to: str | None  # the rollback target, proposed or done
    rolled_back_from: str | None  # set once a rollback succeeded
    rollback_status: RollbackStatus | None
    decision_reason: str | None  # the safety policy's typed reason, e.g. "cooldown"
    decision_detail: str | None
    query: str | None
    prometheus_url: str | None
    drift_columns: tuple[DriftColumn, ...]
    report_url: str | None
    opened_at: datetime
    resolved_at: datetime | None
    acknowledged_by: str | None
    silenced_until: datetime | None
    undone_by: str | None
    timeline: tuple[TimelineEntry, ...]
    findings: tuple[FindingFact, ...] = ()  # the rules besides the one that opened it


class ButtonAction(StrEnum):
    ROLLBACK = "rollback"
    UNDO = "undo"
    ACK = "ack"
    SILENCE = "silence"

    @property
    def label(self) -> str:
        return _BUTTON_LABELS[self]


_BUTTON_LABELS = {
    ButtonAction.ROLLBACK: "Roll back",
    ButtonAction.UNDO: "Undo rollback",
    ButtonAction.ACK: "Acknowledge",
    ButtonAction.SILENCE: "Silence 1h",
}


@dataclass(frozen=True)
class UserRef:
    id: str


@dataclass(frozen=True)
class Link:
    text: str
    url: str


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Time:
    at: datetime


Span = str | UserRef | Link | Code | Time
Text = tuple[Span, ...]


@dataclass(frozen=True)
class ActionButton:
    action: ButtonAction
    confirm: str | None  # the question asked before the press counts; None: no confirmation


@dataclass(frozen=True)
class IncidentMessage:
    incident_id: int
    severity: Severity
    status: IncidentStatus
    title: str
    headline: str  # value against threshold, with the signal's unit
    summary: str
    fields: tuple[tuple[str, str], ...]
    activity: Text  # what watcher did or proposes, and why
    evidence: tuple[Text, ...]
    actions: tuple[ActionButton, ...]
    footer: tuple[Text, ...]  # who did what, and when


STATUS_LABELS = {
    IncidentStatus.OPEN: "Open",
    IncidentStatus.AWAITING_APPROVAL: "Awaiting approval",
    IncidentStatus.ROLLING_BACK: "Rolling back",
    IncidentStatus.VERIFYING: "Verifying",
    IncidentStatus.MITIGATED: "Mitigated",
    IncidentStatus.ESCALATED: "Escalated",
    IncidentStatus.ACKNOWLEDGED: "Acknowledged",
    IncidentStatus.SILENCED: "Silenced",
    IncidentStatus.RESOLVED: "Resolved",
}

# Plain words for the safety policy's reasons; an unknown reason is shown as its own value.
_REASONS = {
    "approval_required": "the rule asks for approval before a rollback",
    "auto_rollback_off": "automatic rollbacks are off (safety.auto_rollback)",
    "cooldown": "the target was rolled back within the cooldown",
    "max_rollbacks": "the target reached its limit of rollbacks (safety.max_rollbacks)",
    "paused": "automatic rollbacks are paused (watcher pause)",
    "no_known_good": "no known-good version to roll back to",
    "notify_only": "the rule only notifies",
}

_SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_TOP_DRIFT_COLUMNS = 5


def available_actions(facts: IncidentFacts, now: datetime) -> tuple[ButtonAction, ...]:
    """The buttons that make sense for this incident at `now`, in display order: the incident
    lifecycle decides, so a button is shown exactly while its press would act."""
    view = IncidentView(
        status=facts.status,
        resolved=facts.resolved_at is not None,
        rollback_status=facts.rollback_status,
        rolled_back_from=facts.rolled_back_from,
        undone=facts.undone_by is not None,
        acknowledged=facts.acknowledged_by is not None,
        silenced=is_silenced(facts, now),
    )
    return tuple(ButtonAction(action.value) for action in lifecycle_actions(view))


def is_silenced(facts: IncidentFacts, now: datetime) -> bool:
    return facts.silenced_until is not None and facts.silenced_until > now


def build_message(facts: IncidentFacts, now: datetime) -> IncidentMessage:
    return IncidentMessage(
        incident_id=facts.id,
        severity=facts.severity,
        status=facts.status,
        title=f"#{facts.id} {facts.model} · {facts.rule_name} — {STATUS_LABELS[facts.status]}",
        headline=headline(facts),
        summary=facts.summary,
        fields=_fields(facts),
        activity=activity(facts, now),
        evidence=evidence(facts),
        actions=tuple(ActionButton(a, _confirmation(facts, a)) for a in available_actions(facts, now)),
        footer=_footer(facts, now),
    )


def headline(facts: IncidentFacts) -> str:
    operator = ">" if facts.comparison == "above" else "<"
    threshold = format_measure(facts.signal, facts.threshold)
    if facts.value is None:
        return f"no value ({operator} {threshold} breaches)"
    value, threshold = _distinct_pair(facts.signal, facts.value, facts.threshold)
    if facts.signal is Signal.DRIFT:
        return f"{value} of columns drifted {operator} {threshold}"
    return f"{value} {operator} {threshold}"


def _distinct_pair(signal: Signal, value: float, threshold: float) -> tuple[str, str]:
    # "250 ms > 250 ms" reads as a bug: show more digits until the two numbers differ.
    for digits in range(3, 8):
        pair = format_measure(signal, value, digits), format_measure(signal, threshold, digits)
        if pair[0] != pair[1]:
            return pair
    return pair


def format_measure(signal: Signal, x: float, digits: int = 3) -> str:
    """A number in the unit people think of for this signal."""
    if signal is Signal.LATENCY:  # Prometheus convention: seconds
        return f"{significant(x * 1000, digits)} ms" if abs(x) < 1 else f"{significant(x, digits)} s"
    if signal in (Signal.ERROR_RATE, Signal.ACCURACY, Signal.FEEDBACK, Signal.DRIFT):
        return f"{significant(x * 100, digits)}%"
    return significant(x, digits)


def significant(x: float, digits: int = 3) -> str:
    """`x` with `digits` significant digits, never in exponent notation, trailing zeros dropped."""
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - magnitude)
    text = f"{round(x, decimals):,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _fields(facts: IncidentFacts) -> tuple[tuple[str, str], ...]:
    fields = [
        ("Model", facts.model),
        ("Rule", facts.rule_id),
        ("Severity", facts.severity.value),
        ("Status", STATUS_LABELS[facts.status]),
        ("Target", facts.target or "none"),
        ("Live version", _live_version_text(facts)),
        ("Rollback target", facts.rollback_to or "none known"),
    ]
    if facts.samples is not None:
        fields.append(("Samples", significant(facts.samples, 6)))
    drifted = [c for c in facts.drift_columns if c.drifted]
    if facts.drift_columns:
        fields.append(("Drifted columns", f"{len(drifted)} of {len(facts.drift_columns)}"))
    return tuple(fields)


def _live_version_text(facts: IncidentFacts) -> str:
    if _rolled_back(facts):
        return f"{facts.rollback_to} (rolled back from {facts.rolled_back_from})"
    return facts.live_version or "unknown"


def _rolled_back(facts: IncidentFacts) -> bool:
    return facts.rolled_back_from is not None and facts.undone_by is None


def activity(facts: IncidentFacts, now: datetime) -> Text:
    """What watcher did or proposes, and why, as one paragraph."""
    parts: list[Span] = list(_rollback_story(facts))
    if facts.undone_by is not None:
        parts += [" Rollback undone by ", actor_span(facts.undone_by), f": back to {facts.rolled_back_from}."]
    parts += _status_note(facts, now)
    why = reason_text(facts.decision_reason, facts.decision_detail)
    if why and facts.status is not IncidentStatus.RESOLVED:
        parts.append(f" Why: {why}.")
    return tuple(parts)


def _rollback_story(facts: IncidentFacts) -> Text:
    target = facts.target or "the target"
    moves = f"{target} from {facts.live_version or 'the live version'} to {facts.rollback_to}"
    status = facts.rollback_status
    if facts.status is IncidentStatus.AWAITING_APPROVAL and facts.rollback_to:
        return (f"Proposes rolling back {moves}; waiting for an approver to press Roll back.",)
    if facts.status is IncidentStatus.AWAITING_APPROVAL:
        return ("Waiting for an approver; no known-good version to roll back to.",)
    if status in (RollbackStatus.PENDING, RollbackStatus.RUNNING):
        return (f"Rolling back {moves}.",)
    if facts.rolled_back_from is not None:
        return (f"Rolled back {target} from {facts.rolled_back_from} to {facts.rollback_to}.",)
    if status is RollbackStatus.FAILED:
        return (f"Rollback of {moves} failed.",)
    if status is RollbackStatus.REFUSED:
        return (f"Rollback of {moves} refused: that version was no longer live.",)
    return ("No rollback made.",)


def _status_note(facts: IncidentFacts, now: datetime) -> list[Span]:
    status = facts.status
    if status is IncidentStatus.VERIFYING:
        return [" Re-checking the rule before calling it mitigated."]
    if status is IncidentStatus.MITIGATED:
        return [" The rule is back within its threshold."]
    if status is IncidentStatus.ESCALATED:
        return [" Still breaching: no further automatic rollback, a human is needed."]
    if status is IncidentStatus.RESOLVED and facts.resolved_at is not None:
        return [" Resolved at ", Time(facts.resolved_at), ": the rule is back to inactive."]
    if is_silenced(facts, now) and facts.silenced_until is not None:
        return [" Notifications silenced until ", Time(facts.silenced_until), "."]
    return []


def reason_text(reason: str | None, detail: str | None) -> str:
    words = _REASONS.get(reason, reason.replace("_", " ")) if reason else ""
    if words and detail:
        return f"{words}: {detail}"
    return words or (detail or "")


def evidence(facts: IncidentFacts) -> tuple[Text, ...]:
    lines: list[Text] = []
    if facts.query:
        graph = prometheus_graph_url(facts.prometheus_url, facts.query)
        lines.append(("Query: ", Code(facts.query), *((" ", Link("graph", graph)) if graph else ())))
    for column in top_drifted_columns(facts.drift_columns):
        score = f"score {significant(column.score, 3)} (threshold {significant(column.threshold, 3)})"
        lines.append((Code(column.name), f" {score}, {column.method}"))
    if facts.report_url:
        lines.append((Link("Drift report", facts.report_url),))
    lines += [_finding_line(facts, finding) for finding in facts.findings]
    return tuple(lines)


def _finding_line(facts: IncidentFacts, finding: FindingFact) -> Text:
    shown = "no value" if finding.value is None else significant(finding.value, 4)
    said = f"{shown} (threshold {significant(finding.threshold, 4)})"
    if finding.settling:
        return ("Also breached on a window still holding this version: ", Code(finding.rule_id), f" {said}")
    return ("Also fired on this version: ", Code(finding.rule_id), f" {said}")


def prometheus_graph_url(prometheus_url: str | None, query: str) -> str | None:
    if not prometheus_url:
        return None
    return f"{prometheus_url.rstrip('/')}/graph?g0.expr={quote(query, safe='')}&g0.tab=0"


def top_drifted_columns(columns: tuple[DriftColumn, ...]) -> list[DriftColumn]:
    """The drifted columns furthest past their threshold, most drifted first."""
    return sorted((c for c in columns if c.drifted), key=_drift_strength, reverse=True)[:_TOP_DRIFT_COLUMNS]


def _drift_strength(column: DriftColumn) -> float:
    # p-value tests drift when the score falls below the threshold; distances when it rises above.
    if _is_p_value(column.method):
        return column.threshold / column.score if column.score > 0 else math.inf
    return column.score / column.threshold if column.threshold > 0 else column.score


def _is_p_value(method: str) -> bool:
    lowered = method.lower()
    return "p_value" in lowered or lowered in ("ks", "chisquare", "z")


def _confirmation(facts: IncidentFacts, action: ButtonAction) -> str | None:
    target = facts.target or "the target"
    if action is ButtonAction.ROLLBACK:
        return f"Roll {target} back from {facts.live_version or 'the live version'} to {facts.rollback_to}?"
    if action is ButtonAction.UNDO:
        return f"Move {target} back from {facts.rollback_to} to {facts.rolled_back_from}?"
    return None


def _footer(facts: IncidentFacts, now: datetime) -> tuple[Text, ...]:
    footer: list[Text] = [(f"Incident #{facts.id} opened ", Time(facts.opened_at))]
    if facts.acknowledged_by is not None:
        footer.append(("Acknowledged by ", actor_span(facts.acknowledged_by)))
    if is_silenced(facts, now) and facts.silenced_until is not None:
        footer.append(("Silenced until ", Time(facts.silenced_until)))
    if facts.undone_by is not None:
        footer.append(("Undone by ", actor_span(facts.undone_by)))
    if facts.resolved_at is not None:
        footer.append(("Resolved ", Time(facts.resolved_at)))
    return tuple(footer)


def timeline_text(entry: TimelineEntry) -> Text:
    """One step of the incident, as a line of its thread."""
    return (Time(entry.at), " · ", actor_span(entry.actor), " · ", entry.text)


def actor_span(actor: str) -> Span:
    return UserRef(actor) if _SLACK_USER_ID.match(actor) else actor
