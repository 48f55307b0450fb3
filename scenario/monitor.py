"""Watching the scenario from outside, as an operator would: the daemon's /api/incidents and
/metrics and the registry's alias; then the summary of how fast each step came.

Step times come from the incident's own timeline (audit events `rollback_succeeded`,
`rollback_verified`, `escalated`) when it has them, else from when this monitor saw the change.
The alias is read from the registry itself: the rollback counts when the registry shows it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from scenario.progress import Console
from scenario.registry import Registry, RegistryFailure, champion_version
from scenario.timeline import OutcomeTally, RuleTiming, rule_states, seconds

_TALLY_EVERY_S = 15.0


@dataclass
class Observations:
    bad_release_at: datetime
    bad_version: str
    incident_id: int | None = None
    incident_rule: str | None = None
    incident_opened_at: datetime | None = None
    incident_rolled_back: bool = False  # the followed incident is the one whose rollback happened
    rolled_back_at: datetime | None = None
    rolled_back_to: str | None = None
    verified_at: datetime | None = None
    escalated_at: datetime | None = None
    breaching_since: dict[str, datetime] = field(default_factory=dict)  # rule id -> first seen breaching
    missing: list[str] = field(default_factory=list)
    incidents: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (opening rule, version)
    findings: list[tuple[str, str]] = field(default_factory=list)  # the followed incident's (rule, kind)

    def incidents_on(self, version: str) -> list[int]:
        return sorted(number for number, (_rule, on) in self.incidents.items() if on == version)

    @property
    def finished(self) -> bool:
        return self.escalated_at is not None or (
            self.verified_at is not None and self.rolled_back_at is not None
        )

    @property
    def succeeded(self) -> bool:
        return self.verified_at is not None and self.rolled_back_at is not None and self.escalated_at is None


class Monitor:
    def __init__(
        self,
        console: Console,
        registry: Registry,
        watcher_url: str,
        bad_release_at: datetime,
        *,
        bad_version: str,
    ) -> None:
        self.console = console
        self.registry = registry
        self.watcher_url = watcher_url
        self.observations = Observations(bad_release_at=bad_release_at, bad_version=bad_version)
        self._statuses: dict[int, str] = {}
        self._alias: str | None = None
        self._tally = OutcomeTally()
        self._next_tally = console.elapsed_s() + _TALLY_EVERY_S
        self._announced_bad = False

    def poll(self) -> None:
        now = datetime.now(UTC)
        if not self._announced_bad and now >= self.observations.bad_release_at:
            self._announced_bad = True
            self.console.say(
                self.console.red(f"version {self.observations.bad_version} has gone bad"), stamp=True
            )
        self._poll_alias(now)
        incidents = _get_json(f"{self.watcher_url}/api/incidents")
        if isinstance(incidents, list):
            for incident in reversed(incidents):  # oldest first
                if isinstance(incident, dict):
                    self._on_incident(incident)
        self._poll_timeline()
        metrics = _get_text(f"{self.watcher_url}/metrics")
        if metrics is None:
            return
        self._note_breaching(rule_states(metrics), now)
        if self.console.elapsed_s() >= self._next_tally:
            self._next_tally = self.console.elapsed_s() + _TALLY_EVERY_S
            line = self._tally.line(metrics)
            if line:
                self.console.say(self.console.dim(f"evaluations  {line}"), stamp=True)

    def _note_breaching(self, states: dict[str, str], now: datetime) -> None:
        """When each rule first breached after the release went bad (pending, or firing at once)."""
        if now < self.observations.bad_release_at:
            return
        for rule, state in states.items():
            if state in ("pending", "firing"):
                self.observations.breaching_since.setdefault(rule, now)

    def _poll_alias(self, now: datetime) -> None:
        version = champion_version(self.registry)
        previous = self._alias
        if isinstance(version, RegistryFailure) or version == previous:
            return
        if previous is not None:
            self.console.say(f"registry: {self.registry.alias} {previous} → {version}", stamp=True)
        self._alias = version
        seen = self.observations
        if previous == seen.bad_version and seen.rolled_back_at is None and now >= seen.bad_release_at:
            seen.rolled_back_at, seen.rolled_back_to = now, version

    def _on_incident(self, incident: dict[str, Any]) -> None:
        number, status = incident.get("id"), str(incident.get("status"))
        if not isinstance(number, int) or self._statuses.get(number) == status:
            return
        previous = self._statuses.get(number)
        self._statuses[number] = status
        self.observations.incidents[number] = (str(incident.get("rule")), str(incident.get("version")))
        if previous is None:
            self.console.say(
                self.console.bold(
                    f"incident #{number} opened: {incident.get('rule')} "
                    f"on version {incident.get('version')} ({status})"
                ),
                stamp=True,
            )
        else:
            self.console.say(f"incident #{number}: {previous} → {status}", stamp=True)
        seen = self.observations
        rollback = incident.get("rollback")
        rolled_back = isinstance(rollback, dict) and rollback.get("status") is not None
        # Several rules may fire on one bad release; the story to follow is the one that rolled back.
        follow = seen.incident_id is None or (rolled_back and not seen.incident_rolled_back)
        if follow and incident.get("model") == self.registry.model:
            seen.incident_id, seen.incident_rule = number, str(incident.get("rule"))
            seen.incident_rolled_back = rolled_back
            opened = _parse_time(incident.get("opened_at")) or datetime.now(UTC)
            seen.incident_opened_at = min(seen.incident_opened_at or opened, opened)
        if number == seen.incident_id and status == "mitigated" and seen.verified_at is None:
            seen.verified_at = datetime.now(UTC)
        if number == seen.incident_id and status == "escalated" and seen.escalated_at is None:
            seen.escalated_at = datetime.now(UTC)

    def _poll_timeline(self) -> None:
        """Exact step times from the incident's audit events (they beat a 1 s poll)."""
        seen = self.observations
        if seen.incident_id is None:
            return
        detail = _get_json(f"{self.watcher_url}/api/incidents/{seen.incident_id}")
        findings = detail.get("findings") if isinstance(detail, dict) else None
        if isinstance(findings, list):
            seen.findings = [
                (str(f.get("rule")), str(f.get("kind"))) for f in findings if isinstance(f, dict)
            ]
        events = detail.get("timeline") if isinstance(detail, dict) else None
        for event in events if isinstance(events, list) else []:
            kind, at = event.get("kind"), _parse_time(event.get("at"))
            if at is None:
                continue
            if kind == "rollback_succeeded" and seen.rolled_back_at is not None:
                seen.rolled_back_at = min(seen.rolled_back_at, at)
            elif kind == "rollback_verified":
                seen.verified_at = at
            elif kind == "escalated":
                seen.escalated_at = at


def print_summary(
    console: Console, seen: Observations, timings: list[RuleTiming], *, verify_after: timedelta
) -> int:
    """The summary and the exit code: 0 when the rollback and its verification happened."""
    say = console.say
    say()
    say(console.bold("Summary"))
    say(f"  version {seen.bad_version} went bad at {seen.bad_release_at:%H:%M:%S} UTC")
    rule = next((t for t in timings if t.rule_id == seen.incident_rule), None)
    if seen.incident_opened_at is not None:
        say(
            f"  incident #{seen.incident_id} ({seen.incident_rule}) opened "
            f"{_after(seen.incident_opened_at, seen.bad_release_at)} after it went bad"
        )
        breaching = seen.breaching_since.get(seen.incident_rule or "")
        if rule is not None and breaching is not None:
            say(console.dim(
                f"    first breaching evaluation {_after(breaching, seen.bad_release_at)} after it went bad "
                f"(one every {seconds(rule.every)}, over a {seconds(rule.window)} window), then `for` "
                f"{seconds(rule.for_)}: fired {_after(seen.incident_opened_at, breaching)} later"
            ))  # fmt: skip
        elif rule is not None:
            say(console.dim(f"    the rule: `for` {seconds(rule.for_)}, every {seconds(rule.every)}"))
    if seen.rolled_back_at is not None:
        say(
            f"  rollback: {seen.bad_version} → {seen.rolled_back_to}, "
            f"{_after(seen.rolled_back_at, seen.bad_release_at)} after it went bad"
            + (
                f" ({_after(seen.rolled_back_at, seen.incident_opened_at)} after the incident)"
                if seen.incident_opened_at
                else ""
            )
        )
    if seen.verified_at is not None:
        say(
            f"  verified (mitigated) {_after(seen.verified_at, seen.bad_release_at)} after it went bad"
            + (
                f" ({_after(seen.verified_at, seen.rolled_back_at)} after the rollback; verify_after "
                f"{seconds(verify_after)})"
                if seen.rolled_back_at
                else ""
            )
        )
    if seen.escalated_at is not None:
        say(
            console.red(
                f"  escalated {_after(seen.escalated_at, seen.bad_release_at)} after it went bad: "
                "the rule still breached when re-checked after the rollback"
            )
        )
    _say_grouping(console, seen)
    missing = list(seen.missing)
    if seen.rolled_back_to is not None and seen.incidents_on(seen.rolled_back_to):
        restored = ", ".join(f"#{n}" for n in seen.incidents_on(seen.rolled_back_to))
        missing.append(f"incident {restored} blamed version {seen.rolled_back_to}, the one restored")
    if seen.incident_opened_at is None:
        missing.append("no incident was opened")
    if seen.rolled_back_at is None:
        missing.append(f"the alias never moved away from version {seen.bad_version}")
    if seen.verified_at is None:
        missing.append("the rollback was never verified (incident not mitigated)")
    if seen.succeeded:
        say(console.green("  ✓ rolled back and verified"))
        return 0
    for item in missing:
        say(console.red(f"  ✗ {item}"))
    return 1


_FINDING_WORDS = {
    "opened": "opened it",
    "joined": "fired on the same version and joined it",
    "settling": "breached on a window still holding the bad version: evidence, not a new incident",
}


def _say_grouping(console: Console, seen: Observations) -> None:
    """One bad release, one incident: how many there were, on which versions, which rules joined."""
    counts = f"{len(seen.incidents_on(seen.bad_version))} on version {seen.bad_version}"
    if seen.rolled_back_to:
        restored = len(seen.incidents_on(seen.rolled_back_to))
        counts += f", {restored} on version {seen.rolled_back_to}, the one restored"
    console.say(f"  incidents: {len(seen.incidents)} ({counts})")
    for rule, kind in seen.findings:
        console.say(console.dim(f"    {rule}: {_FINDING_WORDS.get(kind, kind)}"))


def _after(moment: datetime, since: datetime | None) -> str:
    if since is None:
        return "?"
    return f"{(moment - since).total_seconds():.0f}s"


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _get_text(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            text: str = response.read().decode("utf-8", errors="replace")
            return text
    except (OSError, urllib.error.URLError):
        return None


def _get_json(url: str) -> Any:
    text = _get_text(url)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
