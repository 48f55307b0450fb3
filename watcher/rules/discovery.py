"""Which files are rule files: the configuration's `rules:` (or the paths given to `watcher check`)
walked and expanded, with symbolic links kept inside the place that names them.

A rules directory is often writable by more hands than watcher.yaml (a repository, a ConfigMap).
A link in it that leads out of it (`rules/x.yaml -> /etc/shadow`) would make watcher read, and its
findings repeat, a file nobody meant to be a rule file: such a link is not read, and is reported by
its own name, never by its target's. Links that stay inside (a ConfigMap's `x.yaml -> ..data/x.yaml`)
are followed. Links to directories are not descended into. A file named explicitly in `rules:` or
on the command line is read as named: whoever writes watcher.yaml chose it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from watcher.rules.config import GLOB_CHARACTERS, WatcherConfig
from watcher.rules.findings import Finding

RULE_FILE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class RuleFiles:
    readable: list[Path] = field(default_factory=list)  # to load, in order
    refused: list[Finding] = field(default_factory=list)  # links leading out of their directory

    @property
    def watched(self) -> list[Path]:
        """Every file whose change is a reason to reload, the refused links included (removing
        one must clear its finding)."""
        return [*self.readable, *(finding.file for finding in self.refused)]


def discover_rule_files(config: WatcherConfig, paths: Sequence[Path] | None = None) -> RuleFiles:
    """The rule files named by `paths` (or the configuration's `rules:`): directories walked for
    *.yaml and *.yml, globs expanded; a named file that does not exist is kept, to be reported."""
    found: list[Path] = []
    refused: dict[Path, Finding] = {}
    for entry in config.rules if paths is None else paths:
        if not GLOB_CHARACTERS.isdisjoint(str(entry)):
            matches = [Path(match) for match in sorted(glob.glob(str(entry), recursive=True))]
            found.extend(_kept_inside(matches, _glob_base(entry), refused))
        elif entry.is_dir():
            found.extend(_kept_inside(_walk(entry), entry, refused))
        else:
            found.append(entry)
    config_file = config.path.absolute()
    unique = dict.fromkeys(path for path in found if path.absolute() != config_file)
    readable = [path for path in unique if not path.is_dir()]
    return RuleFiles(readable, [finding for path, finding in refused.items() if path not in unique])


def _walk(directory: Path) -> list[Path]:
    """Rule files below `directory`; hidden entries and `*.test.yaml` (`watcher test` files may
    live beside the rules) left out; links to directories not descended into."""
    found = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        for name in files:
            path = Path(root) / name
            if (
                path.suffix in RULE_FILE_SUFFIXES
                and not name.startswith(".")
                and not path.stem.endswith(".test")
                and (path.is_file() or path.is_symlink())
            ):
                found.append(path)
    return sorted(found)


def _glob_base(pattern: Path) -> Path:
    """The directory part of a glob before its first wildcard: what its matches must stay in."""
    parts: list[str] = []
    for part in pattern.parts:
        if not GLOB_CHARACTERS.isdisjoint(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _kept_inside(candidates: list[Path], base: Path, refused: dict[Path, Finding]) -> list[Path]:
    """The candidates whose real file lies inside `base`; the others are noted in `refused`."""
    inside = base.resolve()
    kept = []
    for path in candidates:
        real = path.resolve()
        if not real.exists():
            message = "symbolic link that leads nowhere: not read"
        elif real.is_relative_to(inside):
            kept.append(path)
            continue
        else:
            message = f"symbolic link to a file outside {base}: not read (links may only point inside it)"
        refused[path] = Finding(path, 1, 1, message)
    return kept
