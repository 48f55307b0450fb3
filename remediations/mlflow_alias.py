"""Roll a model back by moving an MLflow registry alias (``champion`` by default).

Versions are the registry's version numbers as strings. The live version is the one the alias
points at; a rollback points the alias at an older version and records the intent key in the
registered model's tag ``watcher.last_intent``, so a replay of the same intent is recognised and
changes nothing. MLflow keeps no history of an alias: watcher keeps it in its own database.

MLflow is imported only when a call needs it: importing it costs the daemon seconds and memory it
must not pay unless such a target is configured.

Write rights cannot be probed without writing: `preflight` checks the model, the alias and the
version, and that the registry can be read; for a local SQLite registry it also checks that the
file and its directory are writable, but against a tracking server a missing permission only shows
when the rollback itself is refused (a permanent failure, reported as such).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from watcher.failpoints import stop_if_armed
from watcher.remediations.base import (
    AdapterFailure,
    AdapterSettings,
    LiveVersion,
    PreflightReport,
    RemediationAdapter,
    RollbackOutcome,
    RollbackResult,
    VerifyOutcome,
    VersionInfo,
    failed_outcome,
    numeric_predecessor,
)
from watcher.remediations.templating import Scrubber, uri_secrets

INTENT_TAG = "watcher.last_intent"

# MLflow error codes worth another try later; every other code means the request itself is wrong.
_RETRYABLE_CODES = frozenset(
    {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED", "ABORTED"}
)
# MLflow's own HTTP retries default to 7 with exponential back-off (minutes). The dispatcher owns
# retrying, so a call here is kept short unless the operator set these variables.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

T = TypeVar("T")


class MlflowAliasSettings(AdapterSettings):
    tracking_uri: str
    registry_uri: str | None = None
    model: str
    alias: str = "champion"


def resolve_sqlite_uri(uri: str, base_dir: Path) -> str:
    """A relative ``sqlite:///file.db`` made absolute against the config file's directory."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri
    path = uri[len(prefix) :]
    if not path or path.startswith("/") or path == ":memory:":
        return uri
    return prefix + str((base_dir / path).resolve())


def _sqlite_path(uri: str | None) -> Path | None:
    if uri is None or not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


@dataclass(frozen=True)
class _Registered:
    """What one read of the registered model tells: where the alias points and the last intent."""

    aliases: dict[str, str]
    last_intent: str | None


class MlflowAliasAdapter:
    def __init__(self, settings: MlflowAliasSettings, *, tracking_uri: str, registry_uri: str) -> None:
        self._settings = settings
        self._tracking_uri = tracking_uri
        self._registry_uri = registry_uri
        self._scrub = Scrubber.of(
            [*uri_secrets(tracking_uri), *uri_secrets(registry_uri)]
            + [os.environ.get(name) for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD")]
        )
        self._client_instance: Any = None

    # -- plumbing -------------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._client_instance is None:
            import mlflow

            self._client_instance = mlflow.MlflowClient(
                tracking_uri=self._tracking_uri, registry_uri=self._registry_uri
            )
        return self._client_instance

    def _missing_database(self) -> AdapterFailure | None:
        # Opening a SQLite registry that does not exist would create an empty one: refuse instead.
        path = _sqlite_path(self._registry_uri)
        if path is not None and not path.is_file():
            return AdapterFailure(f"MLflow registry database {path} does not exist", retryable=False)
        return None

    def _call(self, what: str, action: Callable[[Any], T]) -> T | AdapterFailure:
        missing = self._missing_database()
        if missing is not None:
            return missing
        from mlflow.exceptions import MlflowException

        try:
            return action(self._client())
        except MlflowException as error:
            retryable = error.error_code in _RETRYABLE_CODES
            return self._failure(f"{what}: {error.error_code}: {error.message}", retryable)
        except Exception as error:  # transport and database driver errors: the registry is unreachable
            return self._failure(f"{what}: {type(error).__name__}: {error}", retryable=True)

    def _failure(self, message: str, retryable: bool) -> AdapterFailure:
        return AdapterFailure(self._scrub(message)[:1000], retryable=retryable)

    def _registered(self) -> _Registered | AdapterFailure:
        def read(client: Any) -> _Registered:
            model = client.get_registered_model(self._settings.model)
            aliases = {str(name): str(version) for name, version in (model.aliases or {}).items()}
            return _Registered(aliases, (model.tags or {}).get(INTENT_TAG))

        return self._call(f"reading registered model {self._settings.model!r}", read)

    def _alias_target(self, registered: _Registered) -> str | AdapterFailure:
        version = registered.aliases.get(self._settings.alias)
        if version is None:
            message = f"alias {self._settings.alias!r} is not set on model {self._settings.model!r}"
            return AdapterFailure(message, retryable=False)
        return version

    # -- protocol -------------------------------------------------------------------------------

    def live_version(self) -> LiveVersion | AdapterFailure:
        registered = self._registered()
        if isinstance(registered, AdapterFailure):
            return registered
        version = self._alias_target(registered)
        return version if isinstance(version, AdapterFailure) else LiveVersion(version)

    def history(self) -> Sequence[VersionInfo] | AdapterFailure:
        name = self._settings.model
        quoted = f'"{name}"' if "'" in name else f"'{name}'"

        def search(client: Any) -> list[VersionInfo]:
            found = client.search_model_versions(f"name = {quoted}")
            infos = [_version_info(version) for version in found]
            return sorted(infos, key=lambda info: int(info.version), reverse=True)

        return self._call(f"listing versions of {name!r}", search)

    def previous_version(self) -> str | AdapterFailure | None:
        return numeric_predecessor(self)

    def preflight(self, to_version: str) -> PreflightReport:
        registered = self._registered()
        if isinstance(registered, AdapterFailure):
            return PreflightReport((registered.message,))
        problems: list[str] = []
        alias = self._alias_target(registered)
        if isinstance(alias, AdapterFailure):
            problems.append(alias.message)
        target = self._version_failure(to_version)
        if target is not None:
            problems.append(target.message)
        problems.extend(self._sqlite_write_problems())
        return PreflightReport(tuple(problems))

    def rollback(self, *, intent_key: str, from_version: str, to_version: str) -> RollbackOutcome:
        registered = self._registered()
        if isinstance(registered, AdapterFailure):
            return failed_outcome(registered)
        live = registered.aliases.get(self._settings.alias)
        record = {"model": self._settings.model, "alias": self._settings.alias, "live_before": str(live)}
        if live == to_version and registered.last_intent == intent_key:
            return RollbackOutcome(
                RollbackResult.ALREADY_DONE, f"alias already at {to_version}", None, record
            )
        if live != from_version:
            detail = f"alias {self._settings.alias!r} points at {live}, not {from_version}: refused"
            return RollbackOutcome(RollbackResult.VERSION_CHANGED, detail, None, record)
        return self._move_alias(intent_key, from_version, to_version, record)

    def verify(self, version: str) -> VerifyOutcome:
        live = self.live_version()
        if isinstance(live, AdapterFailure):
            return VerifyOutcome(False, live.message, live)
        if live.version != version:
            return VerifyOutcome(
                False, f"alias {self._settings.alias!r} points at {live.version}, not {version}"
            )
        problem = self._version_failure(version)
        if problem is not None:
            return VerifyOutcome(False, problem.message, problem)
        return VerifyOutcome(True, f"alias {self._settings.alias!r} points at {version}")

    # -- helpers --------------------------------------------------------------------------------

    def _move_alias(
        self, intent_key: str, from_version: str, to_version: str, record: dict[str, str]
    ) -> RollbackOutcome:
        name, alias = self._settings.model, self._settings.alias
        missing = self._version_failure(to_version)
        if missing is not None:
            return failed_outcome(missing, record)
        # The tag is written first: a crash before the alias moves leaves the alias at from_version,
        # so a retry simply moves it; a crash after leaves both written. Reconciliation treats an
        # alias already at to_version as done, and a replay then finds tag and alias in agreement.
        tagged = self._call(
            "recording the intent", lambda c: c.set_registered_model_tag(name, INTENT_TAG, intent_key)
        )
        if isinstance(tagged, AdapterFailure):
            return failed_outcome(tagged, record)
        stop_if_armed("mlflow_before_alias_write")
        # MLflow has no conditional write: read the alias again right before moving it, so a
        # version moved on meanwhile (an operator, another replica) is never overwritten.
        recheck = self._registered()
        if isinstance(recheck, AdapterFailure):
            return failed_outcome(recheck, record)
        live = recheck.aliases.get(alias)
        if live != from_version:
            record["live_before_write"] = str(live)
            detail = f"alias {alias!r} moved to {live} meanwhile, not {from_version}: refused"
            return RollbackOutcome(RollbackResult.VERSION_CHANGED, detail, None, record)
        moved = self._call(
            f"pointing alias {alias!r} at version {to_version}",
            lambda c: c.set_registered_model_alias(name, alias, to_version),
        )
        if isinstance(moved, AdapterFailure):
            return failed_outcome(moved, record)
        record["live_after"] = to_version
        return RollbackOutcome(
            RollbackResult.DONE, f"alias {alias!r} now points at {to_version}", None, record
        )

    def _version_failure(self, version: str) -> AdapterFailure | None:
        found = self._call(
            f"reading version {version} of {self._settings.model!r}",
            lambda c: c.get_model_version(self._settings.model, version),
        )
        if isinstance(found, AdapterFailure):
            return found
        status = str(getattr(found, "status", "READY") or "READY")
        if status != "READY":
            return AdapterFailure(
                f"version {version} of {self._settings.model!r} is {status}, not READY", False
            )
        return None

    def _sqlite_write_problems(self) -> list[str]:
        path = _sqlite_path(self._registry_uri)
        if path is None:
            return []
        problems = []
        if not os.access(path, os.W_OK):
            problems.append(f"registry database {path} is not writable")
        if not os.access(path.parent, os.W_OK):
            problems.append(f"directory {path.parent} of the registry database is not writable")
        return problems


def _version_info(version: Any) -> VersionInfo:
    created = getattr(version, "creation_timestamp", None)
    created_at = datetime.fromtimestamp(created / 1000, tz=UTC) if created else None
    parts = [f"source {version.source}" if getattr(version, "source", None) else ""]
    if getattr(version, "run_id", None):
        parts.append(f"run {version.run_id}")
    if getattr(version, "description", None):
        parts.append(str(version.description))
    return VersionInfo(str(version.version), created_at, "; ".join(part for part in parts if part))


class MlflowAliasFactory:
    settings_model: ClassVar[type[AdapterSettings]] = MlflowAliasSettings

    def create(self, settings: AdapterSettings, *, base_dir: Path) -> RemediationAdapter:
        if not isinstance(settings, MlflowAliasSettings):
            raise TypeError(f"expected MlflowAliasSettings, got {type(settings).__name__}")
        tracking_uri = resolve_sqlite_uri(settings.tracking_uri, base_dir)
        registry_uri = (
            resolve_sqlite_uri(settings.registry_uri, base_dir) if settings.registry_uri else tracking_uri
        )
        if any(uri.startswith(("http://", "https://")) for uri in (tracking_uri, registry_uri)):
            for name, value in _HTTP_DEFAULTS.items():
                os.environ.setdefault(name, value)
        return MlflowAliasAdapter(settings, tracking_uri=tracking_uri, registry_uri=registry_uri)


factory = MlflowAliasFactory()
