"""The version history of each target, as the engine reads it: which version was live when.

The history is watcher's own record (the `version_sightings` table: one row per continuous live
period), written by the target watcher job, by every rollback and undo, and by the engine when a
firing rule finds a version it had not recorded. This book caches it per target for a short while,
so that attributing an evaluation costs no query on most ticks, and drops a target's cache as soon
as this process records a change. Another replica's change is seen within `refresh_every`.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from watcher.decisions.attribution import Attribution, attribute
from watcher.decisions.known_good import VersionSighting
from watcher.store.repository import Store

DEFAULT_REFRESH = timedelta(seconds=1)


class VersionBook:
    def __init__(self, store: Store, refresh_every: timedelta = DEFAULT_REFRESH) -> None:
        self._store = store
        self._refresh_every = refresh_every
        self._cache: dict[str, tuple[datetime, list[VersionSighting]]] = {}
        self._lock = threading.Lock()

    def history(self, target: str, now: datetime) -> list[VersionSighting]:
        with self._lock:
            cached = self._cache.get(target)
        if cached is not None and timedelta(0) <= now - cached[0] < self._refresh_every:
            return cached[1]
        history = self._store.sightings(target)
        with self._lock:
            self._cache[target] = (now, history)
        return history

    def live(self, target: str, now: datetime) -> str | None:
        """The version watcher last recorded live on the target (None before any record)."""
        history = self.history(target, now)
        return history[-1].version if history else None

    def attribute(
        self, target: str | None, lookback: timedelta, now: datetime, live: str | None = None
    ) -> Attribution | None:
        """The attribution of an evaluation at `now` over `lookback`; None for a rule with no
        target. `live` overrides the recorded live version (a fresher answer from the adapter)."""
        if target is None:
            return None
        history = self.history(target, now)
        return attribute(history, live if live is not None else self.live(target, now), lookback, now)

    def forget(self, target: str | None = None) -> None:
        """Drop the cache (of one target): this process just recorded a change."""
        with self._lock:
            if target is None:
                self._cache.clear()
            else:
                self._cache.pop(target, None)
