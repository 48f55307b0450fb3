"""A small local emulator of the Kubernetes API, for the Kubernetes adapter's tests.

There is no Kubernetes API server on this machine: the adapter is tested against this emulator,
not a real cluster. It speaks the subset of the REST API the adapter uses:

- GET/PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}
  (JSON patch with ``test`` ops, JSON merge patch, and strategic merge patch approximated as a
  merge patch whose lists of named items merge by name);
- GET /apis/apps/v1/namespaces/{ns}/replicasets?labelSelector=k=v,...;
- POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews.

It behaves like the deployment controller where it matters: a template change creates a
ReplicaSet with the next revision, or revives the one whose template matches (moving its old
number into ``deployment.kubernetes.io/revision-history``, as the controller does), updates the
Deployment's revision annotation, bumps generation, and marks the replicas available after
`rollout_delay` seconds (None: never, to test a rollout that fails). Requests need
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.local_server import LocalServer

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
HASH_LABEL = "pod-template-hash"
CREATED = "2026-01-01T00:00:00Z"


@dataclass
class _ReplicaSet:
    name: str
    uid: str
    revision: int
    template: dict[str, Any]  # with the pod-template-hash label
    history: list[int] = field(default_factory=list)
    replicas: int = 0


@dataclass
class _Deployment:
    namespace: str
    name: str
    uid: str
    doc: dict[str, Any]  # metadata + spec as a client would see them
    generation: int = 1
    ready_at: float | None = 0.0  # monotonic time the current rollout becomes available
    replica_sets: list[_ReplicaSet] = field(default_factory=list)
    resource_version: int = 0  # the store's version at this object's last change, as etcd keeps it


def _strip_hash(template: dict[str, Any]) -> dict[str, Any]:
    clean = copy.deepcopy(template)
    clean.setdefault("metadata", {}).setdefault("labels", {}).pop(HASH_LABEL, None)
    return clean


def _template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


# -- patch semantics ------------------------------------------------------------------------------


class JsonPatchError(ValueError):
    """A patch that cannot be applied (the API server answers 422)."""


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise JsonPatchError(f"bad JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        try:
            node = node[int(token)] if isinstance(node, list) else node[token]
        except (KeyError, IndexError, ValueError):
            raise JsonPatchError(f"path /{'/'.join(tokens)} does not exist") from None
    return node


def apply_json_patch(doc: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add, replace, remove and test; all or nothing."""
    result = copy.deepcopy(doc)
    for operation in operations:
        tokens = _pointer(operation["path"])
        parent, key = _parent(result, tokens), tokens[-1]
        op = operation["op"]
        if isinstance(parent, list):
            index = len(parent) if key == "-" else int(key)
            if op == "test" and parent[index] != operation["value"]:
                raise JsonPatchError(f"test failed at {operation['path']}")
            if op in ("remove", "replace"):
                del parent[index]
            if op in ("add", "replace"):
                parent.insert(index, copy.deepcopy(operation["value"]))
            continue
        if op == "test":
            if parent.get(key) != operation["value"]:
                raise JsonPatchError(f"test failed at {operation['path']}: found {parent.get(key)!r}")
        elif op in ("add", "replace"):
            if op == "replace" and key not in parent:
                raise JsonPatchError(f"replace: {operation['path']} does not exist")
            parent[key] = copy.deepcopy(operation["value"])
        elif op == "remove":
            if key not in parent:
                raise JsonPatchError(f"remove: {operation['path']} does not exist")
            del parent[key]
        else:
            raise JsonPatchError(f"unsupported op {op!r}")
    return result


def merge_patch(target: Any, patch: Any, *, merge_named_lists: bool = False) -> Any:
    """RFC 7386 merge patch; with `merge_named_lists`, lists of objects with a "name" merge by
    name, which is what a strategic merge patch does for containers, env and ports."""
    named = isinstance(patch, list) and isinstance(target, list) and merge_named_lists
    if named and all(isinstance(item, dict) and "name" in item for item in [*target, *patch]):
        merged = {item["name"]: copy.deepcopy(item) for item in target}
        for item in patch:
            merged[item["name"]] = merge_patch(merged.get(item["name"], {}), item, merge_named_lists=True)
        return list(merged.values())
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value, merge_named_lists=merge_named_lists)
    return result


CHURN_NAMESPACE, CHURN_DEPLOYMENT = "ml", "churn-model"


@contextmanager
def churn_cluster(token: str, kubeconfig: Path) -> Iterator[KubernetesEmulator]:
    """An emulator with churn-model at revision 3 (images v1, v2, v3) and its kubeconfig written;
    rollouts complete at once until the test sets `rollout_delay`."""
    with KubernetesEmulator(token, rollout_delay=0.0) as emulator:
        emulator.add_deployment(CHURN_NAMESPACE, CHURN_DEPLOYMENT, "registry.local/churn:v1")
        emulator.set_image(CHURN_NAMESPACE, CHURN_DEPLOYMENT, "registry.local/churn:v2")
        emulator.set_image(CHURN_NAMESPACE, CHURN_DEPLOYMENT, "registry.local/churn:v3")
        emulator.write_kubeconfig(kubeconfig)
        yield emulator


class KubernetesEmulator(LocalServer):
    """Start with `start()` (or use as a context manager); `url` is then http://127.0.0.1:PORT."""

    def __init__(self, token: str, *, rollout_delay: float | None = 0.0) -> None:
        self.token = token
        self.rollout_delay = rollout_delay
        self.allowed_verbs: set[str] = {"get", "list", "watch", "patch", "update"}
        self.requests: list[tuple[str, str]] = []
        self._deployments: dict[tuple[str, str], _Deployment] = {}
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._uid = 0
        self._resource_version = 100
        self._race_image: str | None = None
        self._race_replicas: int | None = None
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(_Handler):
            pass

        Handler.emulator = emulator
        return Handler

    def write_kubeconfig(self, path: Path, *, token: str | None = None, context: str = "emulator") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "watcher", "user": {"token": token or self.token}}],
            "contexts": [{"name": context, "context": {"cluster": "emulator", "user": "watcher"}}],
            "current-context": context,
        }
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    # -- arranging state ------------------------------------------------------------------------

    def add_deployment(self, namespace: str, name: str, image: str, *, replicas: int = 2) -> None:
        labels = {"app": name}
        doc = {
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels), "annotations": {}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": dict(labels)},
                "template": {
                    "metadata": {"labels": dict(labels)},
                    "spec": {"containers": [{"name": "model", "image": image}]},
                },
            },
        }
        with self._lock:
            deployment = _Deployment(namespace, name, self._next_uid(), doc)
            self._deployments[(namespace, name)] = deployment
            self._roll_out(deployment)

    def set_image(self, namespace: str, name: str, image: str) -> None:
        """What `kubectl set image` does: a new template, hence a new revision."""
        with self._lock:
            self._set_image(self._deployments[(namespace, name)], image)

    def scale_before_next_patch(self, replicas: int) -> None:
        """Someone scales the deployment just before the next PATCH: the object changes, its
        revision does not (only a resourceVersion precondition notices)."""
        with self._lock:
            self._race_replicas = replicas

    def set_image_before_next_patch(self, image: str) -> None:
        """Someone else changes the image just before the next PATCH arrives: a race."""
        with self._lock:
            self._race_image = image

    def _set_image(self, deployment: _Deployment, image: str) -> None:
        deployment.doc["spec"]["template"]["spec"]["containers"][0]["image"] = image
        deployment.generation += 1
        self._roll_out(deployment)

    def fail_next(self, status: int, times: int = 1) -> None:
        """The next `times` requests get `status`, with a body echoing the request's credentials
        (as a careless proxy might), so tests can check nothing secret escapes the adapter."""
        with self._lock:
            self._failures.extend([status] * times)

    def revision(self, namespace: str, name: str) -> str:
        with self._lock:
            return str(self._deployments[(namespace, name)].doc["metadata"]["annotations"][REVISION])

    def image(self, namespace: str, name: str) -> str:
        with self._lock:
            doc = self._deployments[(namespace, name)].doc
            return str(doc["spec"]["template"]["spec"]["containers"][0]["image"])

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        """The Deployment as the API would return it."""
        with self._lock:
            return self._deployment_json(self._deployments[(namespace, name)])

    def snapshot(self) -> str:
        """Everything the emulator holds, as text: equal snapshots mean nothing changed."""
        with self._lock:
            return json.dumps(
                {f"{ns}/{n}": self._deployment_json(d) for (ns, n), d in self._deployments.items()}
                | {"rs": [self._rs_json(d, rs) for d in self._deployments.values() for rs in d.replica_sets]},
                sort_keys=True,
                default=str,
            )

    def patch_count(self) -> int:
        return sum(1 for method, _ in self.requests if method == "PATCH")

    # -- controller -----------------------------------------------------------------------------

    def _next_uid(self) -> str:
        self._uid += 1
        return f"00000000-0000-0000-0000-{self._uid:012d}"

    def _roll_out(self, deployment: _Deployment) -> None:
        template = _strip_hash(deployment.doc["spec"]["template"])
        top = max((rs.revision for rs in deployment.replica_sets), default=0)
        matching = [rs for rs in deployment.replica_sets if _strip_hash(rs.template) == template]
        if matching:
            current = matching[0]
            if current.revision != top:  # an old ReplicaSet revived: its number moves on
                current.history.append(current.revision)
                current.revision = top + 1
        else:
            pod_hash = _template_hash(template)
            labelled = copy.deepcopy(template)
            labelled["metadata"]["labels"][HASH_LABEL] = pod_hash
            current = _ReplicaSet(f"{deployment.name}-{pod_hash}", self._next_uid(), top + 1, labelled)
            deployment.replica_sets.append(current)
        for rs in deployment.replica_sets:
            rs.replicas = deployment.doc["spec"]["replicas"] if rs is current else 0
        deployment.doc["metadata"]["annotations"][REVISION] = str(current.revision)
        delay = self.rollout_delay
        deployment.ready_at = None if delay is None else time.monotonic() + delay
        self._touch(deployment)

    def _touch(self, deployment: _Deployment) -> None:
        self._resource_version += 1
        deployment.resource_version = self._resource_version

    def _available(self, deployment: _Deployment) -> bool:
        return deployment.ready_at is not None and time.monotonic() >= deployment.ready_at

    # -- JSON views -----------------------------------------------------------------------------

    def _deployment_json(self, deployment: _Deployment) -> dict[str, Any]:
        doc = copy.deepcopy(deployment.doc)
        replicas = int(doc["spec"]["replicas"])
        available = self._available(deployment)
        doc["apiVersion"], doc["kind"] = "apps/v1", "Deployment"
        doc["metadata"].update(
            uid=deployment.uid,
            generation=deployment.generation,
            resourceVersion=str(deployment.resource_version),
            creationTimestamp=CREATED,
        )
        doc["status"] = {
            "observedGeneration": deployment.generation,
            "replicas": replicas if available else replicas + 1,
            "updatedReplicas": replicas if available else 1,
            "readyReplicas": replicas,
            "availableReplicas": replicas if available else replicas - 1,
            "conditions": [{"type": "Available", "status": "True" if available else "False"}],
        }
        return doc

    def _rs_json(self, deployment: _Deployment, rs: _ReplicaSet) -> dict[str, Any]:
        annotations = {REVISION: str(rs.revision)}
        if rs.history:
            annotations[REVISION_HISTORY] = ",".join(str(number) for number in rs.history)
        labels = dict(rs.template["metadata"]["labels"])
        return {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": rs.name,
                "namespace": deployment.namespace,
                "uid": rs.uid,
                "labels": labels,
                "annotations": annotations,
                "creationTimestamp": CREATED,
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": deployment.name,
                        "uid": deployment.uid,
                        "controller": True,
                    }
                ],
            },
            "spec": {"replicas": rs.replicas, "selector": {"matchLabels": labels}, "template": rs.template},
            "status": {"replicas": rs.replicas},
        }

    # -- request handling (called by the handler, under the lock) -------------------------------

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        self.requests.append((method, path))
        if self._failures:
            status = self._failures.pop(0)
            echoed = headers.get("authorization", "")
            return status, _status(status, f"upstream trouble (request had Authorization: {echoed})")
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, _status(401, "Unauthorized")
        parts = urlsplit(path)
        segments = parts.path.strip("/").split("/")
        if method == "POST" and parts.path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews":
            return 201, self._review(json.loads(body))
        in_apps = segments[:4] == ["apis", "apps", "v1", "namespaces"]
        if in_apps and len(segments) == 6 and segments[5] == "replicasets" and method == "GET":
            return 200, self._list_replica_sets(segments[4], parse_qs(parts.query))
        if in_apps and len(segments) == 7 and segments[5] == "deployments":
            return self._deployment_request(method, segments[4], segments[6], headers, body)
        return 404, _status(404, f"the server could not find the requested resource ({path})")

    def _review(self, review: dict[str, Any]) -> dict[str, Any]:
        verb = review.get("spec", {}).get("resourceAttributes", {}).get("verb")
        allowed = verb in self.allowed_verbs
        review["status"] = {"allowed": allowed, "reason": "" if allowed else f"RBAC: {verb} not granted"}
        return review

    def _list_replica_sets(self, namespace: str, query: dict[str, list[str]]) -> dict[str, Any]:
        selector = query.get("labelSelector", [""])[0]
        wanted = dict(pair.split("=", 1) for pair in selector.split(",") if pair)
        items = [
            self._rs_json(deployment, rs)
            for deployment in self._deployments.values()
            if deployment.namespace == namespace
            for rs in deployment.replica_sets
            if all(rs.template["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        ]
        return {"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {}, "items": items}

    def _deployment_request(
        self, method: str, namespace: str, name: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        deployment = self._deployments.get((namespace, name))
        if deployment is None:
            return 404, _status(404, f'deployments.apps "{name}" not found')
        if method == "GET":
            return 200, self._deployment_json(deployment)
        if method != "PATCH":
            return 405, _status(405, "method not allowed")
        if "patch" not in self.allowed_verbs:
            return 403, _status(403, f'deployments.apps "{name}" is forbidden: cannot patch')
        if self._race_image is not None:
            self._set_image(deployment, self._race_image)
            self._race_image = None
        if self._race_replicas is not None:
            deployment.doc["spec"]["replicas"] = self._race_replicas
            deployment.generation += 1
            self._touch(deployment)
            self._race_replicas = None
        return self._patch(deployment, headers.get("content-type", ""), json.loads(body))

    def _patch(self, deployment: _Deployment, content_type: str, patch: Any) -> tuple[int, Any]:
        # The patch applies to the object as stored, resourceVersion included; a resourceVersion
        # the patched object ends up with is a precondition, as in the real API server.
        current = str(deployment.resource_version)
        before = copy.deepcopy(deployment.doc)
        before["metadata"]["resourceVersion"] = current
        try:
            if content_type.startswith("application/json-patch+json"):
                patched = apply_json_patch(before, patch)
            elif "merge-patch+json" in content_type:
                strategic = content_type.startswith("application/strategic-merge-patch+json")
                patched = merge_patch(before, patch, merge_named_lists=strategic)
            else:
                return 415, _status(415, f"unsupported patch type {content_type}")
        except JsonPatchError as error:
            return 422, _status(422, str(error))
        if str(patched["metadata"].pop("resourceVersion", current)) != current:
            message = (
                f'Operation cannot be fulfilled on deployments.apps "{deployment.name}": the object has '
                "been modified; please apply your changes to the latest version and try again"
            )
            return 409, _status(409, message) | {"reason": "Conflict"}
        before["metadata"].pop("resourceVersion", None)
        if patched["spec"] != deployment.doc["spec"]:
            deployment.generation += 1
        template_changed = _strip_hash(patched["spec"]["template"]) != _strip_hash(
            deployment.doc["spec"]["template"]
        )
        deployment.doc = patched
        if template_changed:
            self._roll_out(deployment)
        elif patched != before:
            self._touch(deployment)
        return 200, self._deployment_json(deployment)


def _status(code: int, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}


class _Handler(BaseHTTPRequestHandler):
    emulator: KubernetesEmulator

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        with self.emulator._lock:
            status, payload = self.emulator._handle(self.command, self.path, headers, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass
