"""Conditional writes at the targets: what each adapter's target refuses when the object it read
changed before the write (the re-check as close to the write as the target allows)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.k8s_emulator import CHURN_DEPLOYMENT, CHURN_NAMESPACE, KubernetesEmulator, churn_cluster
from watcher.remediations.base import RollbackResult
from watcher.remediations.kubernetes_deployment import factory

TOKEN = "k8s-token-precondition"
NS, NAME = CHURN_NAMESPACE, CHURN_DEPLOYMENT


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[KubernetesEmulator]:
    with churn_cluster(TOKEN, tmp_path / "kubeconfig") as emulator:
        yield emulator


def _patch(cluster: KubernetesEmulator, operations: list[dict[str, object]]) -> int:
    request = urllib.request.Request(
        f"{cluster.url}/apis/apps/v1/namespaces/{NS}/deployments/{NAME}",
        data=json.dumps(operations).encode(),
        method="PATCH",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json-patch+json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_the_emulator_answers_409_to_a_patch_with_an_outdated_resource_version(
    cluster: KubernetesEmulator,
) -> None:
    read = cluster.deployment(NS, NAME)["metadata"]["resourceVersion"]
    cluster.set_image(NS, NAME, "registry.local/churn:v4")  # someone else changes it meanwhile
    before = cluster.snapshot()
    stale = [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": read},
        {"op": "replace", "path": "/spec/replicas", "value": 5},
    ]
    assert _patch(cluster, stale) == 409
    assert cluster.snapshot() == before
    current = cluster.deployment(NS, NAME)["metadata"]["resourceVersion"]
    assert _patch(cluster, [{**stale[0], "value": current}, stale[1]]) == 200


def test_a_rollback_racing_a_change_that_keeps_the_revision_is_refused_and_retried(
    cluster: KubernetesEmulator, tmp_path: Path
) -> None:
    settings = factory.settings_model.model_validate(
        {"namespace": NS, "deployment": NAME, "kubeconfig": "kubeconfig", "poll_interval": "50ms"}
    )
    adapter = factory.create(settings, base_dir=tmp_path)
    cluster.scale_before_next_patch(4)  # a scale: same revision, another resourceVersion
    outcome = adapter.rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.FAILED, outcome
    assert outcome.failure is not None and outcome.failure.retryable
    assert cluster.image(NS, NAME) == "registry.local/churn:v3"
    again = adapter.rollback(intent_key="intent-1", from_version="3", to_version="2")
    assert again.result is RollbackResult.DONE, again
    assert cluster.image(NS, NAME) == "registry.local/churn:v2"
