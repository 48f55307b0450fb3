"""Enums and frozen value types shared by every module.

Statuses are enums, never strings; a measurement is exactly one of Value, NoData or SourceError,
so a failed query can never be mistaken for a breach.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

# incidents.id is an SQLAlchemy Integer: 32-bit in PostgreSQL, so no larger id can exist. Ids read
# from outside (a URL, a button value) above this are unknown incidents, not database errors.
MAX_INCIDENT_ID = 2**31 - 1


class Signal(StrEnum):
    LATENCY = "latency"
    ERROR_RATE = "error_rate"
    ACCURACY = "accuracy"
    DRIFT = "drift"
    FEEDBACK = "feedback"
    CUSTOM = "custom"


class Action(StrEnum):
    ROLLBACK = "rollback"
    APPROVE = "approve"
    NOTIFY = "notify"


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class NoDataPolicy(StrEnum):
    KEEP = "keep"
    RESOLVE = "resolve"
    ALERT = "alert"


class DriftMethod(StrEnum):
    AUTO = "auto"
    KS = "ks"
    PSI = "psi"
    WASSERSTEIN = "wasserstein"
    JENSENSHANNON = "jensenshannon"
    CHISQUARE = "chisquare"


class Outcome(StrEnum):
    OK = "ok"
    BREACH = "breach"
    NO_DATA = "no_data"
    ERROR = "error"


class RuleState(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


class IncidentStatus(StrEnum):
    OPEN = "open"
    AWAITING_APPROVAL = "awaiting_approval"
    ROLLING_BACK = "rolling_back"
    VERIFYING = "verifying"
    MITIGATED = "mitigated"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    SILENCED = "silenced"
    RESOLVED = "resolved"


class RollbackStatus(StrEnum):
    PENDING = "pending"  # intent written, not yet claimed
    RUNNING = "running"  # claimed by one replica, adapter being called
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"  # the version to replace was no longer live


class ErrorKind(StrEnum):
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    BAD_QUERY = "bad_query"
    BAD_ANSWER = "bad_answer"
    CONFIG = "config"


@dataclass(frozen=True)
class Value:
    """A measured number. `samples` is how many observations stand behind it, when known."""

    value: float
    samples: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # Extra evidence kept with an incident (per-column drift scores, the series returned, ...).
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NoData:
    reason: str


@dataclass(frozen=True)
class SourceError:
    kind: ErrorKind
    message: str
    retryable: bool


Measurement = Value | NoData | SourceError


@dataclass(frozen=True)
class SeriesMeasurement:
    """One series of a query's answer: what its rule instance measured."""

    labels: Mapping[str, str]
    measurement: Measurement


@dataclass(frozen=True)
class SeriesValues:
    """A query's answer of several series (or of a rule built per series): one measurement per
    series, each for its own instance of the rule (SPEC.md section 2, rules over many series)."""

    series: tuple[SeriesMeasurement, ...]


# What a source answers: one measurement, or one per series.
SourceAnswer = Measurement | SeriesValues


@dataclass(frozen=True)
class TimeWindow:
    """The window a SQL or drift query covers, bound as :window_start / :window_end (UTC)."""

    start: datetime
    end: datetime
