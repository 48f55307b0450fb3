"""The rule files' change check the daemon runs every two seconds: files edited, added, removed,
in new directories, behind a ConfigMap's swapped link or a glob, all seen; other files are not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from watcher.engine.rule_watch import RuleFilesWatch
from watcher.rules.config import WatcherConfig, load_config

RULE = (
    "model: {name}\nrules:\n  - name: r\n    signal: latency\n    prometheus: sum(up)\n    above: {above}\n"
)


def config(root: Path, rules: str = "rules/") -> WatcherConfig:
    (root / "watcher.yaml").write_text(
        f"database: sqlite:///watcher.db\nrules: {rules}\nprometheus: {{url: 'http://127.0.0.1:9'}}\n"
    )
    loaded = load_config(root / "watcher.yaml").config
    assert loaded is not None
    return loaded


def write(path: Path, name: str, above: int = 1, mtime: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(RULE.format(name=name, above=above))
    if mtime is not None:
        os.utime(path, ns=(mtime, mtime))


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    for index in range(20):
        write(tmp_path / "rules" / f"m{index}.yaml", f"m{index}")
    return tmp_path / "rules"


def watching(root: Path, rules: str = "rules/") -> RuleFilesWatch:
    watch = RuleFilesWatch(config(root, rules))
    watch.snapshot()
    assert not watch.changed()
    return watch


def test_a_file_edited_in_place_is_a_change_until_the_next_snapshot(rules: Path) -> None:
    watch = watching(rules.parent)
    write(rules / "m3.yaml", "m3", above=2, mtime=1_000_000_000)  # same size, another mtime

    assert watch.changed()
    watch.snapshot()
    assert not watch.changed()


def test_files_added_or_removed_are_changes_and_other_files_are_not(rules: Path) -> None:
    watch = watching(rules.parent)
    (rules / "notes.txt").write_text("not a rule file")
    (rules / "m1.test.yaml").write_text("a watcher test file")
    assert not watch.changed() and not watch.changed()

    write(rules / "deeper" / "new.yaml", "new")
    assert watch.changed() and watch.changed()  # still a change until reloaded
    watch.snapshot()
    (rules / "m5.yaml").unlink()
    assert watch.changed()


def test_a_configmap_swapping_its_data_link_is_a_change(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    write(rules / "..2026_01" / "a.yaml", "a")
    write(rules / "..2026_02" / "a.yaml", "a", above=2)
    (rules / "..data").symlink_to("..2026_01")
    (rules / "a.yaml").symlink_to("..data/a.yaml")
    watch = watching(tmp_path)

    (rules / "..data_tmp").symlink_to("..2026_02")
    os.replace(rules / "..data_tmp", rules / "..data")  # as the kubelet swaps it

    assert watch.changed()


def test_a_glob_sees_a_new_match(rules: Path) -> None:
    watch = watching(rules.parent, rules="rules/*.yaml")

    write(rules / "m99.yaml", "m99")

    assert watch.changed()


def test_with_nothing_changed_the_files_are_not_stated_at_every_check(
    rules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Linux the directories are watched with inotify: the files are stat'ed only when it
    reports something (or every STAT_AT_LEAST_EVERY seconds)."""
    from watcher.engine import rule_watch

    watch = watching(rules.parent)
    calls: list[int] = []
    real = rule_watch.stamp

    def counting(paths: list[str]) -> rule_watch.Stamp:
        calls.append(len(paths))
        return real(paths)

    monkeypatch.setattr(rule_watch, "stamp", counting)
    assert not any(watch.changed() for _ in range(5))
    assert calls == []

    write(rules / "m7.yaml", "m7", above=3, mtime=1_000_000_000)
    assert watch.changed()
    assert calls  # stat'ed once told
