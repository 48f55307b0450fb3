"""Whether the rule files changed on disk, cheaply enough to ask every two seconds.

Discovering the rule files (watcher.rules.discovery) walks the directories and resolves every
file's links: with a thousand files that is most of an idle daemon's CPU when done at every check.
So the files found at the last load are only stat'ed, and discovery runs again only when it could
find something else: when a directory it walked changed (a file added, removed or renamed in it,
a ConfigMap's `..data` link swapped) or when `rules:` holds a glob (its matches may lie anywhere).
A file edited in place changes its own mtime or size.

Even stat'ing the files is work with thousands of them: on Linux the directories are watched with
inotify (engine.dir_events) and the files are stat'ed only when it reports something, or when
STAT_AT_LEAST_EVERY has passed (a filesystem that does not report is seen that late).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from watcher.engine.dir_events import DirectoryEvents
from watcher.rules.config import GLOB_CHARACTERS, WatcherConfig

STAT_AT_LEAST_EVERY = 10.0  # seconds

Stamp = tuple[tuple[str, int, int], ...]  # (path, mtime in ns, size) of each file or directory


def stamp(paths: list[str]) -> Stamp:
    """Each path with its mtime and size (-1, -1 when it is missing), sorted."""
    seen = []
    for path in paths:
        try:
            status = os.stat(path)
            seen.append((path, status.st_mtime_ns, status.st_size))
        except OSError:
            seen.append((path, -1, -1))
    return tuple(sorted(seen))


def walked_directories(config: WatcherConfig) -> tuple[list[str], bool]:
    """The directories discovery walks (hidden ones left out, as it does), and whether a glob
    makes every check a discovery."""
    directories: list[str] = []
    globbed = False
    for entry in config.rules:
        if not GLOB_CHARACTERS.isdisjoint(str(entry)):
            globbed = True
        elif entry.is_dir():
            for root, dirs, _files in os.walk(entry, followlinks=False):
                dirs[:] = [name for name in dirs if not name.startswith(".")]
                directories.append(root)
    return directories, globbed


class RuleFilesWatch:
    def __init__(self, config: WatcherConfig) -> None:
        self.config = config
        self._files: list[str] = []
        self._files_stamp: Stamp = ()
        self._directories: list[str] = []
        self._directories_stamp: Stamp = ()
        self._globbed = False
        self._events = DirectoryEvents([])
        self._stat_at = 0.0  # time.monotonic() of the last check that stat'ed
        self._seen_change = False  # a change stays one until the next snapshot

    def snapshot(self) -> None:
        """Remember the rule files as they are now (called after each load). The directories are
        stamped first: a file added while discovery runs shows at the next check."""
        self._remember_directories()
        self._files = [str(path) for path in self._discover()]
        self._files_stamp = stamp(self._files)
        self._seen_change = False

    def changed(self) -> bool:
        # A monotonic clock of its own: how often to stat is this watch's business, not a decision.
        now = time.monotonic()
        if self._seen_change:
            return True
        if not self._events.pending() and now - self._stat_at < STAT_AT_LEAST_EVERY:
            return False
        self._stat_at = now
        self._seen_change = self._stat_changed()
        return self._seen_change

    def _stat_changed(self) -> bool:
        if self._globbed or stamp(self._directories) != self._directories_stamp:
            self._remember_directories()
            if stamp([str(path) for path in self._discover()]) != self._files_stamp:
                self._directories_stamp = ()  # discover again at each check until the next load
                return True
            return False  # nothing watched changed (another kind of file, say)
        return stamp(self._files) != self._files_stamp

    def _remember_directories(self) -> None:
        self._directories, self._globbed = walked_directories(self.config)
        # Watched before they are stamped: a change in between shows at the next check.
        self._events.close()
        # A glob's matches may lie anywhere: nothing to watch, every check stats.
        self._events = DirectoryEvents([] if self._globbed else self._directories)
        self._directories_stamp = stamp(self._directories)

    def _discover(self) -> list[Path]:
        from watcher.rules.rulefmt import rule_file_paths

        return rule_file_paths(self.config)
