"""What the scenario shows while it runs: the daemon's JSON log lines made short and readable,
a compact line of evaluation outcomes per rule, and the rules' timing (`for`, `every`).

The daemon logs one JSON object per line (`ts`, `level`, `logger`, `msg`, `event` and fields);
evaluations are logged when a rule's state changes, so the per-rule outcome counts come from the
daemon's own /metrics (`watcher_rule_evaluations_total`, `watcher_rule_state`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from watcher.rules.durations import InvalidDuration, parse_duration

_RANGE = re.compile(r"\[([0-9smhdwy]+)(?::[0-9smhdwy]*)?\]")
_WINDOW = re.compile(r"^\s*window:\s*['\"]?([0-9smhdwy]+)", re.MULTILINE)
_LOUD_LEVELS = frozenset({"warning", "error", "critical"})
# Event kinds that mark a step of an incident's life; shown even at info level.
_ROLLBACK_WORDS = ("rollback", "undo", "verif", "escalat", "mitigat", "incident", "approval", "press")


def describe_log_line(line: str) -> str | None:
    """A short readable line for one line of the daemon's output, or None to leave it out."""
    text = line.rstrip()
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return text  # not a log record: a traceback or a start-up error, shown as it is
    if not isinstance(record, dict):
        return text
    return _describe_record(record)


def _describe_record(record: Mapping[str, Any]) -> str | None:
    level = str(record.get("level", "info")).lower()
    logger = str(record.get("logger", ""))
    event = str(record.get("event", ""))
    message = str(record.get("msg", ""))
    if event == "evaluation":
        return _describe_evaluation(record, loud=level in _LOUD_LEVELS)
    if event.startswith(("rollback_", "undo_")):
        return _describe_rollback(record, event)
    if level in _LOUD_LEVELS:
        first_exception_line = str(record.get("exc", "")).strip().splitlines()[-1:] or [""]
        detail = f" ({first_exception_line[0]})" if first_exception_line[0] else ""
        return f"{level.upper()} {message}{detail}"
    if not logger.startswith("watcher"):
        return None  # libraries' info lines (the scheduler's "Running job ...") are noise here
    if event or any(word in message.lower() for word in _ROLLBACK_WORDS):
        return message
    return None


def _describe_evaluation(record: Mapping[str, Any], *, loud: bool) -> str | None:
    state_from, state_to = record.get("state_from"), record.get("state_to")
    rule = record.get("rule", "?")
    outcome = record.get("outcome", "?")
    value = _number(record.get("value"))
    if state_from != state_to:
        return f"rule {rule}: {outcome} {value} → {state_from} → {state_to}"
    if loud:
        return f"rule {rule}: {outcome} ({record.get('error') or record.get('reason') or ''})"
    return None


def _describe_rollback(record: Mapping[str, Any], event: str) -> str:
    what = event.replace("_", " ")
    target = record.get("target", "?")
    return (
        f"{what}: {target} {record.get('from_version', '?')} → {record.get('to_version', '?')}"
        f" (incident #{record.get('incident', '?')})"
    )


def _number(value: object) -> str:
    if isinstance(value, int | float):
        return f"{value:.4g}"
    return "none" if value is None else str(value)


@dataclass
class OutcomeTally:
    """Evaluation counts per rule and outcome between two looks at the daemon's /metrics."""

    seen: dict[tuple[str, str], float] = field(default_factory=dict)

    def line(self, metrics_text: str) -> str | None:
        """`rule: 3 ok, 1 breach (pending)` per rule for the evaluations since the last call."""
        counts, states = _rule_metrics(metrics_text)
        parts = []
        for rule in sorted({rule for rule, _ in counts}):
            fresh = {
                outcome: value - self.seen.get((rule, outcome), 0.0)
                for (name, outcome), value in counts.items()
                if name == rule
            }
            shown = ", ".join(f"{int(n)} {outcome}" for outcome, n in sorted(fresh.items()) if n > 0)
            if shown:
                state = states.get(rule)
                parts.append(f"{rule.split('/')[-1]}: {shown}{f' ({state})' if state else ''}")
        self.seen.update(counts)
        return " · ".join(parts) if parts else None


def rule_states(metrics_text: str) -> dict[str, str]:
    """Each rule's current state (inactive, pending, firing) from the daemon's /metrics."""
    return _rule_metrics(metrics_text)[1]


def _rule_metrics(text: str) -> tuple[dict[tuple[str, str], float], dict[str, str]]:
    counts: dict[tuple[str, str], float] = {}
    states: dict[str, str] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return counts, states
    for family in families:
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "watcher_rule_evaluations_total" and "rule" in labels:
                counts[(labels["rule"], labels.get("outcome", "?"))] = sample.value
            elif sample.name == "watcher_rule_state" and sample.value == 1 and "rule" in labels:
                states[labels["rule"]] = labels.get("state", "?")
    return counts, states


@dataclass(frozen=True)
class RuleTiming:
    rule_id: str
    signal: str
    action: str
    for_: timedelta
    every: timedelta
    # The longest stretch of past data one evaluation looks at (a PromQL range, a SQL window).
    window: timedelta = timedelta(0)


def read_rule_timings(rule_file: Path, default_every: timedelta) -> list[RuleTiming] | str:
    """Each rule's `for` and `every` from a rule file; a message when the file can't be read."""
    try:
        document = yaml.safe_load(rule_file.read_text())
    except (OSError, yaml.YAMLError) as error:
        return f"{rule_file}: {error}"
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        return f"{rule_file}: no list of rules"
    model = str(document.get("model", "?"))
    timings = []
    for rule in document["rules"]:
        if not isinstance(rule, dict):
            continue
        timings.append(
            RuleTiming(
                rule_id=f"{model}/{rule.get('name', '?')}",
                signal=str(rule.get("signal", "custom")),
                action=str(rule.get("action", "notify")),
                for_=_duration(rule.get("for"), timedelta(0)),
                every=_duration(rule.get("every"), default_every),
                window=_longest_window(rule),
            )
        )
    return timings


def _longest_window(rule: dict[str, Any]) -> timedelta:
    """The longest PromQL range (`[1m]`) or `window:` anywhere in the rule."""
    text = yaml.safe_dump(rule)
    found = [_duration(match, timedelta(0)) for match in _RANGE.findall(text)]
    found += [_duration(match, timedelta(0)) for match in _WINDOW.findall(text)]
    return max(found, default=timedelta(0))


def _duration(text: object, default: timedelta) -> timedelta:
    if text is None:
        return default
    parsed = parse_duration(str(text))
    return default if isinstance(parsed, InvalidDuration) else parsed


def seconds(value: timedelta | float) -> str:
    total = value.total_seconds() if isinstance(value, timedelta) else value
    return f"{total:.0f}s"


def timing_table(timings: Iterable[RuleTiming]) -> list[str]:
    return [
        f"  {t.rule_id:<40} {t.signal:<11} for {seconds(t.for_):>5}  every {seconds(t.every):>5}  "
        f"action {t.action}"
        for t in timings
    ]
