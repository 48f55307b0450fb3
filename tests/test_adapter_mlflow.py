"""The MLflow alias adapter against a real MLflow registry (mlflow-skinny on SQLite).

`mlflow server` cannot run here (mlflow-skinny ships without Flask), so the HTTP transport is
exercised against a closed port and a local server answering 503.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.mlflow_registry import MODEL
from tests.support.slow_server import CannedHttpServer
from watcher.remediations.base import AdapterFailure, LiveVersion, RemediationAdapter, RollbackResult
from watcher.remediations.mlflow_alias import INTENT_TAG, factory, resolve_sqlite_uri
from watcher.ruletest.prometheus import free_port

pytestmark = pytest.mark.integration


@dataclass
class Registry:
    database: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.database}"

    def client(self) -> Any:
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.uri)

    def alias(self) -> str:
        return str(self.client().get_registered_model(MODEL).aliases["champion"])

    def fingerprint(self) -> str:
        """The database's bytes: any write changes them, reads do not."""
        return hashlib.sha256(self.database.read_bytes()).hexdigest()

    def adapter(self, **overrides: Any) -> RemediationAdapter:
        settings = factory.settings_model.model_validate(
            {"tracking_uri": self.uri, "model": MODEL, **overrides}
        )
        return factory.create(settings, base_dir=self.database.parent)


@pytest.fixture
def registry(registry_template: Path, tmp_path: Path) -> Registry:
    database = tmp_path / "mlflow.db"
    shutil.copy(registry_template, database)
    return Registry(database)


def test_reads_live_version_history_and_previous(registry: Registry) -> None:
    adapter = registry.adapter()
    assert adapter.live_version() == LiveVersion("3")
    history = adapter.history()
    assert not isinstance(history, AdapterFailure)
    assert [info.version for info in history] == ["3", "2", "1"]
    assert all(info.created_at is not None and info.created_at.tzinfo is not None for info in history)
    assert adapter.previous_version() == "2"


def test_rollback_moves_the_alias_and_records_the_intent(registry: Registry) -> None:
    outcome = registry.adapter().rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.DONE
    assert registry.alias() == "2"
    assert registry.client().get_registered_model(MODEL).tags[INTENT_TAG] == "intent-1"
    assert registry.adapter().verify("2").ok
    assert not registry.adapter().verify("3").ok


def test_same_intent_twice_writes_nothing_the_second_time(registry: Registry) -> None:
    adapter = registry.adapter()
    adapter.rollback(intent_key="intent-1", from_version="3", to_version="2")
    after_first = registry.fingerprint()
    again = adapter.rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert again.result is RollbackResult.ALREADY_DONE
    assert registry.fingerprint() == after_first


def test_refuses_when_the_alias_moved_in_between(registry: Registry) -> None:
    registry.client().set_registered_model_alias(MODEL, "champion", "1")
    before = registry.fingerprint()
    outcome = registry.adapter().rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.VERSION_CHANGED
    assert registry.alias() == "1"
    assert registry.fingerprint() == before


def test_alias_already_at_target_by_someone_else_is_refused(registry: Registry) -> None:
    registry.client().set_registered_model_alias(MODEL, "champion", "2")
    outcome = registry.adapter().rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.VERSION_CHANGED


def test_crash_after_recording_the_intent_is_finished_by_a_retry(registry: Registry) -> None:
    # The tag is written before the alias moves: a crash in between leaves the tag alone.
    registry.client().set_registered_model_tag(MODEL, INTENT_TAG, "intent-1")
    outcome = registry.adapter().rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.DONE
    assert registry.alias() == "2"


def test_rollback_to_a_missing_version_fails_permanently_without_writing(registry: Registry) -> None:
    before = registry.fingerprint()
    outcome = registry.adapter().rollback(intent_key="intent-1", from_version="3", to_version="9")
    assert outcome.result is RollbackResult.FAILED
    assert outcome.failure is not None and not outcome.failure.retryable
    assert "RESOURCE_DOES_NOT_EXIST" in outcome.failure.message
    assert registry.fingerprint() == before


def test_preflight_checks_and_changes_nothing(registry: Registry) -> None:
    before = registry.fingerprint()
    assert registry.adapter().preflight("2").ok
    assert "9" in " ".join(registry.adapter().preflight("9").problems)
    assert not registry.adapter(alias="canary").preflight("2").ok
    assert not registry.adapter(model="no-such-model").preflight("2").ok
    assert registry.fingerprint() == before


def test_preflight_reports_a_deleted_version(registry: Registry) -> None:
    registry.client().delete_model_version(MODEL, "1")
    report = registry.adapter().preflight("1")
    assert not report.ok


def test_relative_sqlite_path_is_resolved_against_the_config_directory(registry: Registry) -> None:
    adapter = registry.adapter(tracking_uri="sqlite:///mlflow.db")
    assert adapter.live_version() == LiveVersion("3")
    assert resolve_sqlite_uri("sqlite:///x.db", Path("/etc/watcher")) == "sqlite:////etc/watcher/x.db"
    assert resolve_sqlite_uri("sqlite:////abs/x.db", Path("/etc")) == "sqlite:////abs/x.db"


def test_a_missing_registry_file_is_reported_not_created(tmp_path: Path) -> None:
    settings = factory.settings_model.model_validate({"tracking_uri": "sqlite:///absent.db", "model": MODEL})
    adapter = factory.create(settings, base_dir=tmp_path)
    answer = adapter.live_version()
    assert isinstance(answer, AdapterFailure) and not answer.retryable
    assert not (tmp_path / "absent.db").exists()


@pytest.fixture
def quick_mlflow_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def test_unreachable_server_is_retryable_and_hides_credentials(
    tmp_path: Path, quick_mlflow_http: None
) -> None:
    port = free_port()  # nobody listens there
    uri = f"http://watcher:s3cret-pw@127.0.0.1:{port}"
    settings = factory.settings_model.model_validate({"tracking_uri": uri, "model": MODEL})
    adapter = factory.create(settings, base_dir=tmp_path)
    answer = adapter.live_version()
    assert isinstance(answer, AdapterFailure) and answer.retryable
    assert "s3cret-pw" not in answer.message
    outcome = adapter.rollback(intent_key="i", from_version="3", to_version="2")
    assert (
        outcome.result is RollbackResult.FAILED and outcome.failure is not None and outcome.failure.retryable
    )
    assert "s3cret-pw" not in repr(outcome)


def test_server_errors_are_retryable(canned_http_server: CannedHttpServer, quick_mlflow_http: None) -> None:
    canned_http_server.answer(503, b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}')
    settings = factory.settings_model.model_validate({"tracking_uri": canned_http_server.url, "model": MODEL})
    answer = factory.create(settings, base_dir=Path(".")).live_version()
    assert isinstance(answer, AdapterFailure) and answer.retryable
    assert canned_http_server.requests[0].path == "/api/2.0/mlflow/registered-models/get"


def test_importing_the_adapter_does_not_import_mlflow(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from watcher.remediations.mlflow_alias import factory;"
        "s = factory.settings_model.model_validate({'tracking_uri': 'sqlite:///m.db', 'model': 'm'});"
        "factory.create(s, base_dir=Path('.'));"
        "print('mlflow' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert result.stdout.strip() == "False"
