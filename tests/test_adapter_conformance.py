"""What every registered adapter must do, checked against a real backend of its kind.

The adapters are discovered from the installed entry points of group ``watcher.remediations``;
each needs a harness here that builds its backend (an MLflow registry on SQLite, the Kubernetes
API emulator, the signature-checking webhook receiver, real processes). An adapter registered
without a harness fails the suite.

Every backend starts at version 3, with 2 and 1 before it; rollbacks go from 3 to 2.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.support.k8s_emulator import KubernetesEmulator
from tests.support.mlflow_registry import MODEL, ActAfterIntentTag, build_registry
from tests.support.webhook_server import WebhookReceiver
from watcher.remediations.base import (
    AdapterFactory,
    LiveVersion,
    RemediationAdapter,
    RollbackResult,
    installed_adapter_names,
    load_factory,
)
from watcher.ruletest.prometheus import free_port

SECRET = "conformance-secret-8e3f1b"


@dataclass
class Harness:
    factory: AdapterFactory
    settings: dict[str, Any]
    base_dir: Path
    state: Callable[[], str]  # everything the backend holds: equal snapshots, nothing changed
    change_live: Callable[[], None]  # someone else deploys another version
    broken_settings: dict[str, Any]  # configured with SECRET, against a backend that fails
    break_backend: Callable[[], None] = lambda: None
    # Someone else deploys another version after the adapter's first read, right before its
    # write (the operator of the fencing scenario); the version then live.
    race_before_write: Callable[[RemediationAdapter], str] | None = None

    def adapter(self, settings: dict[str, Any] | None = None) -> RemediationAdapter:
        validated = self.factory.settings_model.model_validate(settings or self.settings)
        return self.factory.create(validated, base_dir=self.base_dir)


# -- harnesses, one per adapter -----------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_registry(tmp_path_factory.mktemp("conformance-mlflow"))


def mlflow_harness(factory: AdapterFactory, tmp_path: Path, stack: ExitStack, request: Any) -> Harness:
    database = tmp_path / "mlflow.db"
    shutil.copy(request.getfixturevalue("mlflow_template"), database)
    request.getfixturevalue("monkeypatch").setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

    def move_alias() -> None:
        import mlflow

        mlflow.MlflowClient(tracking_uri=f"sqlite:///{database}").set_registered_model_alias(
            MODEL, "champion", "1"
        )

    def race(adapter: RemediationAdapter) -> str:
        # The real registry client, with the operator's move made after the adapter records its
        # intent tag, i.e. between its first read of the alias and the alias write.
        client = adapter._client()  # type: ignore[attr-defined]
        adapter._client_instance = ActAfterIntentTag(client, move_alias)  # type: ignore[attr-defined]
        return "1"

    return Harness(
        factory,
        {"tracking_uri": "sqlite:///mlflow.db", "model": MODEL},
        tmp_path,
        lambda: hashlib.sha256(database.read_bytes()).hexdigest(),
        move_alias,
        {"tracking_uri": f"http://watcher:{SECRET}@127.0.0.1:{free_port()}", "model": MODEL},
        race_before_write=race,
    )


def kubernetes_harness(factory: AdapterFactory, tmp_path: Path, stack: ExitStack, request: Any) -> Harness:
    cluster = stack.enter_context(KubernetesEmulator(SECRET, rollout_delay=0.0))
    cluster.add_deployment("ml", "model", "img:1")
    cluster.set_image("ml", "model", "img:2")
    cluster.set_image("ml", "model", "img:3")
    cluster.write_kubeconfig(tmp_path / "kubeconfig")
    settings = {"namespace": "ml", "deployment": "model", "kubeconfig": "kubeconfig", "poll_interval": "50ms"}

    def race(_adapter: Any) -> str:
        cluster.set_image_before_next_patch("img:other")
        return "4"

    return Harness(
        factory,
        settings,
        tmp_path,
        cluster.snapshot,
        lambda: cluster.set_image("ml", "model", "img:other"),
        settings,
        # Every answer a 500 whose body echoes the bearer token, as a careless proxy might.
        lambda: cluster.fail_next(500, times=100),
        race_before_write=race,
    )


def webhook_harness(factory: AdapterFactory, tmp_path: Path, stack: ExitStack, request: Any) -> Harness:
    receiver = stack.enter_context(WebhookReceiver(secret=SECRET, live="3"))
    settings = {
        "url": f"{receiver.url}/rollback",
        "live_url": f"{receiver.url}/live",
        "secret": SECRET,
        "headers": {"Authorization": f"Bearer {SECRET}"},
    }

    def race(_adapter: Any) -> str:
        receiver.set_live_before_next_rollback("1")
        return "1"

    return Harness(
        factory,
        settings,
        tmp_path,
        receiver.snapshot,
        lambda: receiver.set_live("1"),
        settings,
        lambda: receiver.fail_next(502, times=100),
        race_before_write=race,
    )


_COMMAND_TOOL = r"""
import os, sys
command, state = sys.argv[1], sys.argv[2]
if command == "set":
    if os.path.exists(state + ".race"):  # someone else deploys right before this write
        os.replace(state + ".race", state)
    if len(sys.argv) > 4 and open(state).read() != sys.argv[4]:
        sys.exit(3)  # the version to replace is no longer live
    open(state, "w").write(sys.argv[3])
    open(state + ".log", "a").write(sys.argv[3] + "\n")
elif command == "get":
    print(open(state).read())
elif command == "leak":
    print("token is", os.environ["DEPLOY_TOKEN"])
    print("token is", os.environ["DEPLOY_TOKEN"], file=sys.stderr)
    sys.exit(1)
"""


def command_harness(factory: AdapterFactory, tmp_path: Path, stack: ExitStack, request: Any) -> Harness:
    (tmp_path / "tool.py").write_text(_COMMAND_TOOL)
    state = tmp_path / "state"
    state.write_text("3")
    tool = [sys.executable, str(tmp_path / "tool.py")]
    settings = {
        "argv": [*tool, "set", str(state), "{{ to_version }}", "{{ from_version }}"],
        "live_argv": [*tool, "get", str(state)],
        "verify_argv": [*tool, "get", str(state)],
        "env": {"DEPLOY_TOKEN": SECRET},
        "version_changed_exit_code": 3,
    }
    broken = {"argv": [*tool, "leak", str(state)], "env": {"DEPLOY_TOKEN": SECRET}}
    broken |= {"live_argv": broken["argv"], "verify_argv": broken["argv"]}

    def deploy_elsewhere() -> None:
        state.write_text("1")

    def snapshot() -> str:
        log = Path(f"{state}.log")
        return state.read_text() + "|" + (log.read_text() if log.exists() else "")

    def race(_adapter: RemediationAdapter) -> str:
        Path(f"{state}.race").write_text("1")
        return "1"

    return Harness(factory, settings, tmp_path, snapshot, deploy_elsewhere, broken, race_before_write=race)


HARNESSES: dict[str, Callable[[AdapterFactory, Path, ExitStack, Any], Harness]] = {
    "mlflow": mlflow_harness,
    "kubernetes": kubernetes_harness,
    "webhook": webhook_harness,
    "command": command_harness,
}


@pytest.fixture(params=installed_adapter_names())
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    name = request.param
    factory = load_factory(name)
    assert factory is not None
    build = HARNESSES.get(name)
    if build is None:
        pytest.fail(f"adapter {name!r} is registered but has no conformance harness in this file")
    with ExitStack() as stack:
        yield build(factory, tmp_path, stack, request)


# -- the contract -------------------------------------------------------------------------------


def test_every_builtin_adapter_is_registered() -> None:
    assert set(HARNESSES) <= set(installed_adapter_names())


def test_keeps_the_protocol(harness: Harness) -> None:
    assert isinstance(harness.adapter(), RemediationAdapter)


def test_settings_forbid_unknown_keys(harness: Harness) -> None:
    harness.factory.settings_model.model_validate(harness.settings)
    with pytest.raises(ValidationError):
        harness.factory.settings_model.model_validate({**harness.settings, "rollback_everything": True})


def test_preflight_changes_nothing(harness: Harness) -> None:
    before = harness.state()
    report = harness.adapter().preflight("2")
    assert report.ok, report
    assert harness.state() == before


def test_same_intent_twice_changes_the_target_once(harness: Harness) -> None:
    adapter = harness.adapter()
    before = harness.state()
    first = adapter.rollback(intent_key="conformance-1", from_version="3", to_version="2")
    assert first.result is RollbackResult.DONE, first
    after_first = harness.state()
    assert after_first != before
    assert adapter.verify("2").ok
    second = adapter.rollback(intent_key="conformance-1", from_version="3", to_version="2")
    assert second.result is RollbackResult.ALREADY_DONE, second
    assert harness.state() == after_first


def test_refuses_when_the_live_version_changed(harness: Harness) -> None:
    harness.change_live()
    before = harness.state()
    outcome = harness.adapter().rollback(intent_key="conformance-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.VERSION_CHANGED, outcome
    assert harness.state() == before


def test_a_version_moved_right_before_the_write_is_never_overwritten(harness: Harness) -> None:
    """The live version is checked again as close to the write as the target allows."""
    assert harness.race_before_write is not None, "every adapter re-checks the live version"
    adapter = harness.adapter()
    raced = harness.race_before_write(adapter)
    outcome = adapter.rollback(intent_key="conformance-1", from_version="3", to_version="2")
    assert outcome.result is RollbackResult.VERSION_CHANGED, outcome
    live = harness.adapter().live_version()
    assert isinstance(live, LiveVersion) and live.version == raced


def test_failures_carry_no_secret(harness: Harness) -> None:
    adapter = harness.adapter(harness.broken_settings)
    harness.break_backend()
    answers: list[object] = [
        adapter.live_version(),
        adapter.history(),
        adapter.previous_version(),
        adapter.preflight("2"),
        adapter.rollback(intent_key="conformance-1", from_version="3", to_version="2"),
        adapter.verify("2"),
    ]
    text = "\n".join(repr(answer) for answer in answers)
    assert "Failure" in text or "failed" in text.lower()  # the backend really failed
    assert SECRET not in text
