"""The scenario's real MLflow model registry, on SQLite in the run directory.

It holds the registered model `fraud-detector`, versions 1..3 (each a local directory standing in
for a model), with the alias `champion` on version 3: the release that will go bad.

Creating an MLflow SQLite store runs all of MLflow's Alembic migrations, about 2 s on this kind of
machine; opening an existing one takes about 0.7 s. The freshly migrated, still empty database is
therefore kept once per MLflow version in a cache directory and copied for each run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

MODEL = "fraud-detector"
ALIAS = "champion"
VERSIONS = 3
BAD_VERSION = "3"


@dataclass(frozen=True)
class Registry:
    db_path: Path
    model: str = MODEL
    alias: str = ALIAS

    @property
    def tracking_uri(self) -> str:
        return sqlite_uri(self.db_path)


@dataclass(frozen=True)
class RegistryFailure:
    message: str


def sqlite_uri(path: Path) -> str:
    """The SQLAlchemy URL of an SQLite file, absolute so it means the same from any directory."""
    return f"sqlite:///{path.resolve()}"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "model-watcher-scenario"


def create_registry(
    run_dir: Path,
    *,
    model: str = MODEL,
    alias: str = ALIAS,
    versions: int = VERSIONS,
    champion: str = BAD_VERSION,
    cache_dir: Path | None = None,
) -> Registry:
    """Create `<run_dir>/mlflow.db` with `versions` versions of `model` and `alias` on `champion`."""
    from mlflow import MlflowClient

    registry = Registry(db_path=(run_dir / "mlflow.db").resolve(), model=model, alias=alias)
    _copy_empty_store(registry.db_path, cache_dir if cache_dir is not None else default_cache_dir())
    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
    client.create_registered_model(model, description="Scripted stand-in for a fraud model.")
    for number in range(1, versions + 1):
        source = _model_directory(run_dir, model, number)
        client.create_model_version(model, source=str(source), description=f"release {number}")
    client.set_registered_model_alias(model, alias, champion)
    return registry


def champion_version(registry: Registry) -> str | RegistryFailure:
    """The version the alias points at now."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
    try:
        return str(client.get_model_version_by_alias(registry.model, registry.alias).version)
    except MlflowException as error:
        return RegistryFailure(f"alias {registry.alias!r} of {registry.model!r}: {error.message}")


def move_alias(registry: Registry, version: str) -> None:
    """Point the alias at `version` (what a release or a manual rollback does)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
    client.set_registered_model_alias(registry.model, registry.alias, version)


def version_numbers(registry: Registry) -> list[str]:
    """Every version of the model, oldest first."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
    found = client.search_model_versions(f"name='{registry.model}'")
    return sorted((str(v.version) for v in found), key=int)


def _model_directory(run_dir: Path, model: str, number: int) -> Path:
    # No real model: a directory with a note is enough for a registry version's source.
    directory = (run_dir / "models" / model / f"v{number}").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "README.txt").write_text(f"{model} release {number}: scripted by scenario.model_service\n")
    return directory


def _copy_empty_store(target: Path, cache_dir: Path) -> None:
    template = _empty_store_template(cache_dir)
    if template is None:
        _migrate_empty_store(target)
    else:
        shutil.copyfile(template, target)


def _empty_store_template(cache_dir: Path) -> Path | None:
    """The cached migrated empty store for this MLflow version; None when no cache can be written."""
    import mlflow

    template = cache_dir / f"mlflow-{mlflow.__version__}-empty.db"
    if template.exists():
        return template
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(dir=cache_dir, suffix=".db")
        os.close(handle)
        os.unlink(scratch)  # MLflow must create the file itself to run its migrations
        _migrate_empty_store(Path(scratch))
        os.replace(scratch, template)  # atomic: two runs building at once both end up correct
    except OSError:
        return None
    return template


def _migrate_empty_store(path: Path) -> None:
    from mlflow import MlflowClient

    uri = sqlite_uri(path)
    # The registry store creates and migrates every MLflow table on first use.
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models(max_results=1)
