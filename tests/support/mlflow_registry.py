"""A real MLflow registry on SQLite (mlflow-skinny): versions 1..3 of a model, `champion` on 3.

Creating the SQLite registry runs MLflow's migrations (seconds), so tests build it once and copy
the file for each test.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODEL = "fraud-detector"


def build_registry(directory: Path, model: str = MODEL) -> Path:
    """A registry with versions 1..3 of `model` and `champion` on 3; returns the SQLite file."""
    import mlflow

    database = directory / "mlflow.db"
    artifacts = directory / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{database}")
    client.create_registered_model(model)
    for _ in range(3):
        client.create_model_version(model, source=str(artifacts))
    client.set_registered_model_alias(model, "champion", "3")
    return database


def copy_registry(template: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "mlflow.db"
    shutil.copyfile(template, target)
    return target


def champion(database: Path, model: str = MODEL) -> str:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{database}")
    return str(client.get_registered_model(model).aliases["champion"])


class ActAfterIntentTag:
    """A real MlflowClient that lets the rest of the world act right after the adapter wrote its
    intent tag: where a holder paused inside the adapter call, or a concurrent change, would be."""

    def __init__(self, client: Any, then: Callable[[], None]) -> None:
        self._client, self._then = client, then

    def set_registered_model_tag(self, *args: Any) -> Any:
        result = self._client.set_registered_model_tag(*args)
        self._then()
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
