"""The contract every remediation adapter keeps.

An adapter moves one target (a registry alias, a deployment, a switch behind a webhook, ...) from
one model version to another. Expected failures are returned as typed outcomes, never raised; an
adapter says whether a failure is worth retrying, and the retry loop lives in watcher.incidents.dispatch.

Adapters are registered under the entry point group ``watcher.remediations``: the entry point's
name is the ``adapter:`` value of a target in watcher.yaml and it loads an ``AdapterFactory``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

ENTRY_POINT_GROUP = "watcher.remediations"


class AdapterSettings(BaseModel):
    """Base of every adapter's settings: unknown keys are errors (a typo must not pass)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RollbackResult(StrEnum):
    DONE = "done"  # the target now serves the requested version
    ALREADY_DONE = "already_done"  # this intent was carried out before (idempotent replay)
    VERSION_CHANGED = "version_changed"  # the version to replace is no longer live: refused
    FAILED = "failed"


@dataclass(frozen=True)
class AdapterFailure:
    """Why a call failed. `retryable` tells the dispatcher whether to try again later."""

    message: str  # must never carry a secret (token, password, signing key)
    retryable: bool


@dataclass(frozen=True)
class VersionInfo:
    version: str
    created_at: datetime | None = None
    description: str = ""


@dataclass(frozen=True)
class LiveVersion:
    version: str


@dataclass(frozen=True)
class PreflightReport:
    """Read-only checks: the target exists, the version exists, we may change it."""

    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class RollbackOutcome:
    result: RollbackResult
    detail: str = ""
    failure: AdapterFailure | None = None
    # What the adapter did, for the audit trail (exit code, output tail, HTTP status, ...).
    record: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifyOutcome:
    ok: bool
    detail: str = ""
    failure: AdapterFailure | None = None


@runtime_checkable
class RemediationAdapter(Protocol):
    """One configured target. Every method is synchronous and bounded in time."""

    def live_version(self) -> LiveVersion | AdapterFailure:
        """The version serving now."""
        ...

    def history(self) -> Sequence[VersionInfo] | AdapterFailure:
        """Versions the target knows about, newest first."""
        ...

    def previous_version(self) -> str | AdapterFailure | None:
        """The version before the live one, by the target's own notion (fallback rollback target)."""
        ...

    def preflight(self, to_version: str) -> PreflightReport:
        """Read-only: changes nothing anywhere."""
        ...

    def rollback(self, *, intent_key: str, from_version: str, to_version: str) -> RollbackOutcome:
        """Move from `from_version` to `to_version`.

        Idempotent for one `intent_key`; refuses with VERSION_CHANGED when `from_version` is no
        longer live (unless the target already serves `to_version` for this intent).
        """
        ...

    def verify(self, version: str) -> VerifyOutcome:
        """The target serves `version` and is healthy."""
        ...


def failed_outcome(failure: AdapterFailure, record: dict[str, str] | None = None) -> RollbackOutcome:
    """A failed rollback carrying its failure, for the adapters' many early returns."""
    return RollbackOutcome(RollbackResult.FAILED, failure.message, failure, dict(record or {}))


def numeric_predecessor(adapter: RemediationAdapter) -> str | AdapterFailure | None:
    """The highest numbered version below the live one (registry versions, deployment revisions)."""
    live = adapter.live_version()
    if isinstance(live, AdapterFailure):
        return live
    versions = adapter.history()
    if isinstance(versions, AdapterFailure):
        return versions
    older = [int(info.version) for info in versions if int(info.version) < int(live.version)]
    return str(max(older)) if older else None


class AdapterFactory(Protocol):
    """What an entry point of group ``watcher.remediations`` loads."""

    settings_model: ClassVar[type[AdapterSettings]]

    def create(self, settings: AdapterSettings, *, base_dir: Path) -> RemediationAdapter:
        """Build the adapter; `base_dir` resolves relative paths (the config file's directory)."""
        ...


def load_factory(name: str) -> AdapterFactory | None:
    """The installed factory called `name`, or None: an unknown adapter is never a fallback."""
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == name:
            factory: AdapterFactory = entry_point.load()
            return factory
    return None


def installed_adapter_names() -> list[str]:
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
