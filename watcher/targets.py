"""The configured rollback targets, each behind its adapter, built once and on first use."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from watcher.remediations.base import AdapterFailure, LiveVersion, RemediationAdapter, load_factory

log = logging.getLogger(__name__)


class UnknownTarget(LookupError):
    pass


class TargetRegistry:
    def __init__(self, targets: Mapping[str, Any], base_dir: Path) -> None:
        # `targets` maps a name to a config.TargetConfig (adapter name + validated settings).
        self._targets = dict(targets)
        self._base_dir = base_dir
        self._adapters: dict[str, RemediationAdapter] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return sorted(self._targets)

    def adapter(self, name: str) -> RemediationAdapter:
        with self._lock:
            if name in self._adapters:
                return self._adapters[name]
            target = self._targets.get(name)
            if target is None:
                raise UnknownTarget(name)
            factory = load_factory(target.adapter)
            if factory is None:  # checked at load time; kept as a clear error, never a fallback
                raise UnknownTarget(f"{name}: adapter {target.adapter!r} is not installed")
            adapter = factory.create(target.settings, base_dir=self._base_dir)
            self._adapters[name] = adapter
            return adapter

    def live_version(self, name: str) -> str | None:
        """The live version, or None when the target cannot tell (the failure is logged)."""
        try:
            answer = self.adapter(name).live_version()
        except Exception:  # a plug-in bug must not stop evaluation; it is logged with its trace
            log.exception("target %s: live version lookup raised", name)
            return None
        if isinstance(answer, AdapterFailure):
            log.warning("target %s: live version unknown: %s", name, answer.message)
            return None
        assert isinstance(answer, LiveVersion)
        return answer.version

    def previous_version(self, name: str) -> str | None:
        try:
            answer = self.adapter(name).previous_version()
        except Exception:
            log.exception("target %s: previous version lookup raised", name)
            return None
        if isinstance(answer, AdapterFailure):
            log.warning("target %s: previous version unknown: %s", name, answer.message)
            return None
        return answer
