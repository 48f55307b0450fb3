"""The distribution: setuptools' explicit package list names every package directory, and the
built wheel puts only `watcher` on sys.path, with remediations/ and migrations/ inside it.

A subpackage missing from [tool.setuptools] packages is silently left out of the wheel while the
editable install used by the tests still finds it; these tests are what notices.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"


def listed_packages() -> set[str]:
    setuptools = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]
    return set(setuptools["packages"])


def package_directories() -> set[str]:
    """Every directory under watcher/ that holds Python modules, through the two symlinked folders."""
    found = set()
    for directory, _, files in os.walk(ROOT / "watcher", followlinks=True):
        relative = Path(directory).relative_to(ROOT)
        if "__pycache__" not in relative.parts and any(name.endswith(".py") for name in files):
            found.add(".".join(relative.parts))
    return found


def test_the_package_list_names_every_package_directory_and_nothing_else() -> None:
    on_disk, listed = package_directories(), listed_packages()
    assert {"watcher.remediations", "watcher.migrations", "watcher.migrations.versions"} <= on_disk
    assert on_disk - listed == set(), "package directories missing from [tool.setuptools] packages"
    assert listed - on_disk == set(), "listed packages with no directory"


def test_the_wheel_installs_only_watcher_with_remediations_and_migrations_inside(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info next to pyproject.toml
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for license_file in ROOT.glob("LICEN[CS]E*"):
        shutil.copy2(license_file, source / license_file.name)
    for folder in ("watcher", "remediations", "migrations"):
        shutil.copytree(
            ROOT / folder, source / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "dist", "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (source / "dist").glob("model_watcher-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [top_level] = [name for name in names if name.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["watcher"]
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"watcher"}
    assert {"watcher/remediations/base.py", "watcher/migrations/env.py"} <= set(names)
    assert "watcher/migrations/script.py.mako" in names
