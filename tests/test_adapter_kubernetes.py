"""The Kubernetes adapter against the local API emulator (tests/support/k8s_emulator.py).

There is no Kubernetes API server here: these tests run the real kubernetes client, configured by
a kubeconfig file, against the emulator, not a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.support.k8s_emulator import CHURN_DEPLOYMENT, CHURN_NAMESPACE, KubernetesEmulator, churn_cluster
from watcher.remediations.base import AdapterFailure, LiveVersion, RemediationAdapter, RollbackResult
from watcher.remediations.kubernetes_deployment import INTENT_ANNOTATION, factory

TOKEN = "k8s-token-5f2c9a"
NS, NAME = CHURN_NAMESPACE, CHURN_DEPLOYMENT


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[KubernetesEmulator]:
    """churn-model at revision 3 (images v1, v2, v3), rollouts available after a short delay."""
    with churn_cluster(TOKEN, tmp_path / "kubeconfig") as emulator:
        emulator.rollout_delay = 0.3
        yield emulator


def make_adapter(tmp_path: Path, **overrides: Any) -> RemediationAdapter:
    settings = factory.settings_model.model_validate(
        {
            "namespace": NS,
            "deployment": NAME,
            "kubeconfig": "kubeconfig",
            "poll_interval": "50ms",
            **overrides,
        }
    )
    return factory.create(settings, base_dir=tmp_path)


def test_reads_revisions_newest_first(cluster: KubernetesEmulator, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path)
    assert adapter.live_version() == LiveVersion("3")
    history = adapter.history()
    assert not isinstance(history, AdapterFailure)
    assert [(info.version, info.description) for info in history] == [
        ("3", "image registry.local/churn:v3"),
        ("2", "image registry.local/churn:v2"),
        ("1", "image registry.local/churn:v1"),
    ]
    assert adapter.previous_version() == "2"


def test_rollback_restores_the_previous_template_and_waits_for_the_rollout(
    cluster: KubernetesEmulator, tmp_path: Path
) -> None:
    outcome = make_adapter(tmp_path).rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.DONE, outcome
    assert cluster.image(NS, NAME) == "registry.local/churn:v2"
    # As in Kubernetes, the revived ReplicaSet takes the next revision number.
    assert cluster.revision(NS, NAME) == "4"
    assert outcome.record["revision_before"] == "3" and outcome.record["revision_after"] == "4"
    assert outcome.record["rollout"].startswith("2/2 updated, 2/2 available")
    verified = make_adapter(tmp_path).verify("2")
    assert verified.ok, verified
    assert not make_adapter(tmp_path).verify("3").ok


def test_a_revived_template_keeps_its_version_name(cluster: KubernetesEmulator, tmp_path: Path) -> None:
    """Revision 2 comes back as 4; watcher still calls it 2, so the dispatcher sees the rollback
    done, known-good history stays one version, and rolling forward names 3 again."""
    adapter = make_adapter(tmp_path)
    adapter.rollback(intent_key="intent-1", from_version="3", to_version="2")
    live = adapter.live_version()
    assert isinstance(live, LiveVersion) and live.version == "2"
    assert adapter.previous_version() == "1"
    history = adapter.history()
    assert not isinstance(history, AdapterFailure)
    assert sorted(info.version for info in history) == ["1", "2", "3"]
    forward = adapter.rollback(intent_key="intent-2", from_version="2", to_version="3")
    assert forward.result is RollbackResult.DONE, forward
    assert cluster.image(NS, NAME) == "registry.local/churn:v3"
    live = adapter.live_version()
    assert isinstance(live, LiveVersion) and live.version == "3"


def test_the_patch_records_the_intent_and_keeps_the_hash_label_out(
    cluster: KubernetesEmulator, tmp_path: Path
) -> None:
    make_adapter(tmp_path).rollback(intent_key="intent-1", from_version="3", to_version="2")
    deployment = cluster.deployment(NS, NAME)
    assert deployment["metadata"]["annotations"][INTENT_ANNOTATION] == "intent-1"
    assert "pod-template-hash" not in deployment["spec"]["template"]["metadata"]["labels"]


def test_same_intent_twice_changes_the_deployment_once(cluster: KubernetesEmulator, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path)
    adapter.rollback(intent_key="intent-1", from_version="3", to_version="2")
    patches, snapshot = cluster.patch_count(), cluster.snapshot()
    again = adapter.rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert again.result is RollbackResult.ALREADY_DONE
    assert cluster.patch_count() == patches
    assert cluster.snapshot() == snapshot


def test_refuses_when_the_revision_changed(cluster: KubernetesEmulator, tmp_path: Path) -> None:
    cluster.set_image(NS, NAME, "registry.local/churn:v4")
    outcome = make_adapter(tmp_path).rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.VERSION_CHANGED
    assert cluster.patch_count() == 0
    assert cluster.image(NS, NAME) == "registry.local/churn:v4"


def test_a_change_racing_the_patch_is_refused_by_the_api_server(
    cluster: KubernetesEmulator, tmp_path: Path
) -> None:
    cluster.set_image_before_next_patch("registry.local/churn:v9")
    outcome = make_adapter(tmp_path).rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.VERSION_CHANGED, outcome
    assert cluster.image(NS, NAME) == "registry.local/churn:v9"


def test_a_rollout_that_never_becomes_available_fails_permanently(
    cluster: KubernetesEmulator, tmp_path: Path
) -> None:
    cluster.rollout_delay = None
    outcome = make_adapter(tmp_path, rollout_timeout="300ms").rollback(
        intent_key="intent-1", from_version="3", to_version="2"
    )
    assert outcome.result is RollbackResult.FAILED
    assert outcome.failure is not None and not outcome.failure.retryable
    assert "not available" in outcome.failure.message and "1/2 updated" in outcome.failure.message
    assert not make_adapter(tmp_path).verify("2").ok


def test_preflight_changes_nothing_and_reports_a_missing_revision(
    cluster: KubernetesEmulator, tmp_path: Path
) -> None:
    snapshot = cluster.snapshot()
    assert make_adapter(tmp_path).preflight("2").ok
    report = make_adapter(tmp_path).preflight("9")
    assert report.problems == ("revision 9 not found among the deployment's replica sets",)
    assert cluster.snapshot() == snapshot
    assert cluster.patch_count() == 0


def test_preflight_reports_a_denied_access_review(cluster: KubernetesEmulator, tmp_path: Path) -> None:
    cluster.allowed_verbs.discard("patch")
    report = make_adapter(tmp_path).preflight("2")
    assert not report.ok
    assert "not allowed to patch deployments in namespace ml" in report.problems[0]


def test_wrong_token_is_a_permanent_failure_that_does_not_show_the_token(
    cluster: KubernetesEmulator, tmp_path: Path
) -> None:
    cluster.write_kubeconfig(tmp_path / "kubeconfig", token="wrong-token-77aa")
    answer = make_adapter(tmp_path).live_version()
    assert isinstance(answer, AdapterFailure) and not answer.retryable
    assert "401" in answer.message and "wrong-token-77aa" not in answer.message


def test_server_errors_are_retryable_and_scrubbed(cluster: KubernetesEmulator, tmp_path: Path) -> None:
    cluster.fail_next(503, times=3)
    adapter = make_adapter(tmp_path)
    answer = adapter.live_version()
    assert isinstance(answer, AdapterFailure) and answer.retryable
    assert TOKEN not in answer.message
    outcome = adapter.rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert outcome.failure is not None and outcome.failure.retryable
    assert TOKEN not in repr(outcome)


def test_a_missing_deployment_is_permanent(cluster: KubernetesEmulator, tmp_path: Path) -> None:
    answer = make_adapter(tmp_path, deployment="absent").live_version()
    assert isinstance(answer, AdapterFailure) and not answer.retryable and "404" in answer.message


def test_a_missing_kubeconfig_is_a_permanent_failure(tmp_path: Path) -> None:
    answer = make_adapter(tmp_path, kubeconfig="absent-kubeconfig").live_version()
    assert isinstance(answer, AdapterFailure) and not answer.retryable


def test_in_cluster_takes_no_kubeconfig() -> None:
    with pytest.raises(ValidationError):
        factory.settings_model.model_validate(
            {"namespace": NS, "deployment": NAME, "in_cluster": True, "kubeconfig": "x"}
        )
