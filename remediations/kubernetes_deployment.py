"""Roll a Kubernetes Deployment back to an earlier revision, as `kubectl rollout undo --to-revision`.

Versions are the Deployment's revision numbers (``deployment.kubernetes.io/revision``) as strings.
A rollback copies the pod template of the target revision's ReplicaSet (without its
``pod-template-hash`` label) into the Deployment with one JSON patch that also records the intent
key in the annotation ``model-watcher.io/last-intent`` and carries a ``test`` operation on the
revision annotation, so the API server itself refuses the patch when the revision moved in the
meantime, and sets ``metadata.resourceVersion`` to the one it read: the API server's optimistic
concurrency precondition, so any change to the Deployment since that read (a new release, a
scale, another watcher) makes it answer 409 Conflict instead of applying. Then it waits for the
rollout (observedGeneration >= generation, every replica updated and available) up to
``rollout_timeout``.

As in Kubernetes, rolling back to revision 2 from 3 revives revision 2's ReplicaSet under the next
number (4) and keeps 2 in its ``deployment.kubernetes.io/revision-history`` annotation: after the
rollback the live version reads "4", and this adapter still finds "2" there (verify, replays).

The adapter is tested against a local emulator of the Kubernetes API
(tests/support/k8s_emulator.py), not a real cluster: there is none where it is developed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import model_validator

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
from watcher.remediations.templating import Scrubber
from watcher.rules.durations import PositiveDuration, format_duration

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
HASH_LABEL = "pod-template-hash"
INTENT_ANNOTATION = "model-watcher.io/last-intent"
TARGET_ANNOTATION = "model-watcher.io/rolled-back-to"
_RETRYABLE_STATUSES = frozenset({408, 409, 429})

T = TypeVar("T")


class KubernetesSettings(AdapterSettings):
    namespace: str
    deployment: str
    context: str | None = None
    kubeconfig: Path | None = None
    in_cluster: bool = False
    rollout_timeout: PositiveDuration = timedelta(minutes=5)
    container: str | None = None
    # Extensions: the bound of one API call, and how often a rollout's progress is read.
    request_timeout: PositiveDuration = timedelta(seconds=10)
    poll_interval: PositiveDuration = timedelta(seconds=2)

    @model_validator(mode="after")
    def _one_way_in(self) -> KubernetesSettings:
        if self.in_cluster and (self.kubeconfig or self.context):
            raise ValueError("in_cluster: true takes no kubeconfig or context")
        return self


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _revisions(replica_set: Any) -> set[str]:
    """Every revision number a ReplicaSet has served under (current and revived-from)."""
    annotations = replica_set.metadata.annotations or {}
    numbers = {annotations.get(REVISION, "")}
    numbers.update(annotations.get(REVISION_HISTORY, "").split(","))
    return {number for number in numbers if number}


def _first_revision(replica_set: Any) -> str:
    return min(_revisions(replica_set), key=int, default=_revision(replica_set))


def _revision(obj: Any) -> str:
    return str((obj.metadata.annotations or {}).get(REVISION, ""))


@dataclass(frozen=True)
class _ApiFailure(AdapterFailure):
    """A failure answered by the API server, with its HTTP status."""

    status: int = 0


@dataclass(frozen=True)
class _Apis:
    client: Any  # kubernetes.client.ApiClient
    apps: Any  # kubernetes.client.AppsV1Api
    authorization: Any  # kubernetes.client.AuthorizationV1Api


class KubernetesDeploymentAdapter:
    def __init__(self, settings: KubernetesSettings, *, kubeconfig: Path | None) -> None:
        self._settings = settings
        self._kubeconfig = kubeconfig
        self._apis: _Apis | None = None
        self._scrub = Scrubber()

    # -- plumbing -------------------------------------------------------------------------------

    def _connect(self) -> _Apis | AdapterFailure:
        if self._apis is not None:
            return self._apis
        from kubernetes import client, config

        try:
            configuration = client.Configuration()
            if self._settings.in_cluster:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                path = str(self._kubeconfig) if self._kubeconfig else None
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=path,
                    context=self._settings.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
        except Exception as error:  # the loaders raise ConfigException, OSError, YAML errors
            return AdapterFailure(f"cannot load Kubernetes credentials: {error}", retryable=False)
        token = str(
            configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken") or ""
        )
        self._scrub = Scrubber.of([token, token.split(" ", 1)[-1], configuration.password])
        api_client = client.ApiClient(configuration)
        self._apis = _Apis(api_client, client.AppsV1Api(api_client), client.AuthorizationV1Api(api_client))
        return self._apis

    def _call(self, what: str, action: Callable[[_Apis], T]) -> T | AdapterFailure:
        apis = self._connect()
        if isinstance(apis, AdapterFailure):
            return apis
        from kubernetes.client.exceptions import ApiException

        try:
            return action(apis)
        except ApiException as error:
            status = int(error.status or 0)
            retryable = status >= 500 or status in _RETRYABLE_STATUSES or status == 0
            message = self._scrub(f"{what}: HTTP {status} {error.reason}: {_status_message(error)}")
            return _ApiFailure(message[:1000], retryable, status)
        except Exception as error:  # transport errors: unreachable, timed out, reset
            return self._failure(f"{what}: {type(error).__name__}: {error}", retryable=True)

    def _failure(self, message: str, retryable: bool) -> AdapterFailure:
        return AdapterFailure(self._scrub(message)[:1000], retryable=retryable)

    @property
    def _timeout(self) -> float:
        return self._settings.request_timeout.total_seconds()

    def _read(self) -> Any | AdapterFailure:
        name, namespace = self._settings.deployment, self._settings.namespace
        return self._call(
            f"reading deployment {namespace}/{name}",
            lambda a: a.apps.read_namespaced_deployment(name, namespace, _request_timeout=self._timeout),
        )

    def _replica_sets(self, deployment: Any) -> list[Any] | AdapterFailure:
        labels = (deployment.spec.selector.match_labels or {}) if deployment.spec.selector else {}
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        found = self._call(
            f"listing replica sets of {self._settings.namespace}/{self._settings.deployment}",
            lambda a: a.apps.list_namespaced_replica_set(
                self._settings.namespace, label_selector=selector, _request_timeout=self._timeout
            ),
        )
        if isinstance(found, AdapterFailure):
            return found
        owned = [
            rs
            for rs in found.items
            if any(ref.uid == deployment.metadata.uid for ref in (rs.metadata.owner_references or []))
        ]
        return sorted(owned, key=lambda rs: int(_revision(rs) or 0), reverse=True)

    def _find(self, replica_sets: list[Any], version: str) -> Any | None:
        return next((rs for rs in replica_sets if version in _revisions(rs)), None)

    def _template(self, template: Any) -> dict[str, Any]:
        """A pod template as JSON, without the label only ReplicaSets carry."""
        assert self._apis is not None, "templates are read after connecting"
        data: dict[str, Any] = self._apis.client.sanitize_for_serialization(template)
        labels = (data.get("metadata") or {}).get("labels") or {}
        labels.pop(HASH_LABEL, None)
        return data

    def _image(self, template: Any) -> str:
        containers = template.spec.containers or []
        wanted = (
            [c for c in containers if c.name == self._settings.container] if self._settings.container else []
        )
        chosen = wanted or containers[:1]
        return str(chosen[0].image) if chosen else ""

    # -- protocol -------------------------------------------------------------------------------

    def live_version(self) -> LiveVersion | AdapterFailure:
        deployment = self._read()
        if isinstance(deployment, AdapterFailure):
            return deployment
        if not _revision(deployment):
            return AdapterFailure(f"deployment has no {REVISION} annotation yet", retryable=True)
        replica_sets = self._replica_sets(deployment)
        if isinstance(replica_sets, AdapterFailure):
            return replica_sets
        return LiveVersion(self._identity(deployment, replica_sets))

    def _identity(self, deployment: Any, replica_sets: list[Any]) -> str:
        """A version's stable name: the revision at which its pod template first went live.

        Kubernetes gives a template a new revision number each time it comes back (rolling back
        to 2 makes it 4, as `kubectl rollout undo` does); the first number stays the same, so
        rollbacks, known-good history and reconciliation all speak of one version.
        """
        raw = _revision(deployment)
        serving = self._find(replica_sets, raw)
        return _first_revision(serving) if serving is not None else raw

    def history(self) -> Sequence[VersionInfo] | AdapterFailure:
        deployment = self._read()
        if isinstance(deployment, AdapterFailure):
            return deployment
        replica_sets = self._replica_sets(deployment)
        if isinstance(replica_sets, AdapterFailure):
            return replica_sets
        return [
            VersionInfo(
                _first_revision(rs), rs.metadata.creation_timestamp, f"image {self._image(rs.spec.template)}"
            )
            for rs in replica_sets
        ]

    def previous_version(self) -> str | AdapterFailure | None:
        return numeric_predecessor(self)

    def preflight(self, to_version: str) -> PreflightReport:
        deployment = self._read()
        if isinstance(deployment, AdapterFailure):
            return PreflightReport((deployment.message,))
        problems: list[str] = []
        replica_sets = self._replica_sets(deployment)
        if isinstance(replica_sets, AdapterFailure):
            problems.append(replica_sets.message)
        elif self._find(replica_sets, to_version) is None:
            problems.append(f"revision {to_version} not found among the deployment's replica sets")
        denied = self._patch_denied()
        if denied is not None:
            problems.append(denied)
        return PreflightReport(tuple(problems))

    def rollback(self, *, intent_key: str, from_version: str, to_version: str) -> RollbackOutcome:
        deployment = self._read()
        if isinstance(deployment, AdapterFailure):
            return failed_outcome(deployment, {})
        replica_sets = self._replica_sets(deployment)
        if isinstance(replica_sets, AdapterFailure):
            return failed_outcome(replica_sets, {})
        raw = _revision(deployment)
        live = self._identity(deployment, replica_sets)
        record = {
            "deployment": f"{self._settings.namespace}/{self._settings.deployment}",
            "revision_before": raw,
        }
        target = self._find(replica_sets, to_version)
        if self._done_for(intent_key, deployment, target):
            return self._finish(RollbackResult.ALREADY_DONE, record)
        if live != from_version:
            detail = f"live revision is {live}, not {from_version}: refused"
            return RollbackOutcome(RollbackResult.VERSION_CHANGED, detail, None, record)
        if target is None:
            failure = AdapterFailure(f"revision {to_version} not found among the replica sets", False)
            return failed_outcome(failure, record)
        resource_version = str(deployment.metadata.resource_version or "")
        return self._patch(intent_key, raw, to_version, target, record, resource_version)

    def verify(self, version: str) -> VerifyOutcome:
        deployment = self._read()
        if isinstance(deployment, AdapterFailure):
            return VerifyOutcome(False, deployment.message, deployment)
        replica_sets = self._replica_sets(deployment)
        if isinstance(replica_sets, AdapterFailure):
            return VerifyOutcome(False, replica_sets.message, replica_sets)
        target = self._find(replica_sets, version)
        if target is None:
            return VerifyOutcome(False, f"revision {version} not found among the replica sets")
        if self._template(deployment.spec.template) != self._template(target.spec.template):
            return VerifyOutcome(False, f"the deployment's template is not revision {version}'s")
        complete, summary = _rollout_state(deployment)
        return VerifyOutcome(complete, summary if not complete else f"revision {version} live and available")

    # -- rollback steps -------------------------------------------------------------------------

    def _patch(
        self,
        intent_key: str,
        from_version: str,
        to_version: str,
        target: Any,
        record: dict[str, str],
        resource_version: str,
    ) -> RollbackOutcome:
        revision_path = f"/metadata/annotations/{_pointer(REVISION)}"
        precondition = [{"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version}]
        patch = [
            # The API server applies all or nothing: if the revision moved since we read it, it refuses.
            {"op": "test", "path": revision_path, "value": from_version},
            # ...and if anything changed since our read, the resourceVersion precondition: 409.
            *(precondition if resource_version else []),
            {"op": "replace", "path": "/spec/template", "value": self._template(target.spec.template)},
            {
                "op": "add",
                "path": f"/metadata/annotations/{_pointer(INTENT_ANNOTATION)}",
                "value": intent_key,
            },
            {
                "op": "add",
                "path": f"/metadata/annotations/{_pointer(TARGET_ANNOTATION)}",
                "value": to_version,
            },
        ]
        name, namespace = self._settings.deployment, self._settings.namespace
        patched = self._call(
            f"patching deployment {namespace}/{name}",
            lambda a: a.apps.patch_namespaced_deployment(
                name,
                namespace,
                patch,
                _content_type="application/json-patch+json",
                _request_timeout=self._timeout,
            ),
        )
        if isinstance(patched, _ApiFailure) and patched.status in (409, 422):
            return self._explain_refusal(patched, from_version, record)
        if isinstance(patched, AdapterFailure):
            return failed_outcome(patched, record)
        return self._finish(RollbackResult.DONE, record)

    def _done_for(self, intent_key: str, deployment: Any, target: Any | None) -> bool:
        """This intent patched the deployment and its template is still the target's."""
        annotations = deployment.metadata.annotations or {}
        if target is None or annotations.get(INTENT_ANNOTATION) != intent_key:
            return False
        return self._template(deployment.spec.template) == self._template(target.spec.template)

    def _explain_refusal(
        self, refusal: AdapterFailure, from_version: str, record: dict[str, str]
    ) -> RollbackOutcome:
        """409 (the Deployment changed since our read) or 422 (our test operation failed, or the
        patch is invalid): refused when the revision moved; a 409 on an unchanged revision (a
        scale, an annotation) is worth another try on a fresh read."""
        deployment = self._read()
        if isinstance(deployment, AdapterFailure):
            return failed_outcome(deployment, record)
        live = _revision(deployment)
        if live != from_version:
            detail = f"revision changed to {live} while rolling back from {from_version}: refused"
            return RollbackOutcome(RollbackResult.VERSION_CHANGED, detail, None, record)
        conflict = isinstance(refusal, _ApiFailure) and refusal.status == 409
        return failed_outcome(AdapterFailure(refusal.message, retryable=conflict), record)

    def _finish(self, result: RollbackResult, record: dict[str, str]) -> RollbackOutcome:
        """Wait for the rollout, then report `result`, or a permanent failure if it never completes."""
        deadline = time.monotonic() + self._settings.rollout_timeout.total_seconds()
        while True:
            deployment = self._read()
            if isinstance(deployment, AdapterFailure):
                return failed_outcome(deployment, record)
            complete, summary = _rollout_state(deployment)
            record.update(revision_after=_revision(deployment), image=self._image(deployment.spec.template))
            record["rollout"] = summary
            if complete:
                return RollbackOutcome(
                    result, f"revision {_revision(deployment)} rolled out: {summary}", None, record
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timeout = format_duration(self._settings.rollout_timeout)
                message = f"rollout not available after {timeout}: {summary} (the new template stays applied)"
                return failed_outcome(AdapterFailure(message, retryable=False), record)
            time.sleep(min(self._settings.poll_interval.total_seconds(), remaining))

    def _patch_denied(self) -> str | None:
        from kubernetes import client

        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace=self._settings.namespace,
                    verb="patch",
                    group="apps",
                    resource="deployments",
                    name=self._settings.deployment,
                )
            )
        )
        answer = self._call(
            "asking whether we may patch deployments",
            lambda a: a.authorization.create_self_subject_access_review(
                review, _request_timeout=self._timeout
            ),
        )
        if isinstance(answer, AdapterFailure):
            return answer.message
        if answer.status is None or not answer.status.allowed:
            reason = (answer.status.reason if answer.status else "") or "no reason given"
            return f"not allowed to patch deployments in namespace {self._settings.namespace}: {reason}"
        return None


def _rollout_state(deployment: Any) -> tuple[bool, str]:
    """Whether the rollout is complete, as `kubectl rollout status` judges it, and a summary."""
    wanted = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    status = deployment.status
    observed = (status.observed_generation or 0) if status else 0
    updated = (status.updated_replicas or 0) if status else 0
    total = (status.replicas or 0) if status else 0
    available = (status.available_replicas or 0) if status else 0
    complete = (
        observed >= (deployment.metadata.generation or 0)
        and updated == wanted
        and total == wanted
        and available == wanted
    )
    summary = f"{updated}/{wanted} updated, {available}/{wanted} available, {total} total"
    return complete, summary


def _status_message(error: Any) -> str:
    try:
        return str(json.loads(error.body).get("message", ""))[:300]
    except (TypeError, ValueError, AttributeError):
        return str(error.body or "")[:300]


class KubernetesDeploymentFactory:
    settings_model: ClassVar[type[AdapterSettings]] = KubernetesSettings

    def create(self, settings: AdapterSettings, *, base_dir: Path) -> RemediationAdapter:
        if not isinstance(settings, KubernetesSettings):
            raise TypeError(f"expected KubernetesSettings, got {type(settings).__name__}")
        kubeconfig = settings.kubeconfig
        if kubeconfig is not None and not kubeconfig.is_absolute():
            kubeconfig = base_dir / kubeconfig
        return KubernetesDeploymentAdapter(settings, kubeconfig=kubeconfig)


factory = KubernetesDeploymentFactory()
