"""How a load of the rule files is made visible beyond the log: a gauge and a finding count in
/metrics (as Prometheus exposes prometheus_config_last_reload_successful), and one Slack notice
per bad reload that names each finding's file and line. The same findings again (a restart, a
touch of another file) are not announced twice; a clean load clears the memory, so the next bad
one is announced again. The rules of a refused file keep running, so /readyz stays 200.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from watcher.metrics import Metrics
from watcher.rules.findings import Finding
from watcher.store.records import MessageKind
from watcher.store.repository import Store

log = logging.getLogger(__name__)

NOTICE_FINDINGS = 10  # lines of findings in one Slack notice; `watcher check` lists them all


class ReloadReport:
    def __init__(self, metrics: Metrics, store: Store, base_dir: Path) -> None:
        self.metrics = metrics
        self.store = store
        self.base_dir = base_dir
        self._announced: frozenset[str] = frozenset()

    def loaded(self, findings: Sequence[Finding], now: datetime, *, announce: bool) -> bool:
        """Record a load; with `announce` (this replica leads), queue the Slack notice when these
        findings were not announced yet. True when a notice was queued."""
        self.metrics.rules_loaded(len(findings), now)
        shown = frozenset(self._shown(finding) for finding in findings)
        if not shown:
            self._announced = frozenset()
            return False
        if not announce or shown == self._announced:
            return False
        with self.store.transaction() as tx:
            tx.enqueue_message(
                incident_id=None,
                kind=MessageKind.NOTICE,
                payload={"text": notice_text(sorted(shown))},
                now=now,
            )
        self._announced = shown
        log.warning("bad rule reload announced", extra={"event": "reload_notice", "findings": len(shown)})
        return True

    def _shown(self, finding: Finding) -> str:
        """FILE:LINE:COL: message, the file relative to the configuration's directory."""
        try:
            path = finding.file.absolute().relative_to(self.base_dir)
        except ValueError:
            path = finding.file
        return f"{path}:{finding.line}:{finding.column}: {finding.message}"


def notice_text(lines: Sequence[str]) -> str:
    count = len(lines)
    head = (
        f":warning: Rule files not reloaded: {count} finding{'s' if count != 1 else ''}. "
        "The previous rules of those files keep running; `watcher check` shows every finding."
    )
    listed = [f"• `{_escaped(line)}`" for line in lines[:NOTICE_FINDINGS]]
    if count > NOTICE_FINDINGS:
        listed.append(f"… and {count - NOTICE_FINDINGS} more")
    return "\n".join([head, *listed])


def _escaped(text: str) -> str:
    """Slack's three control characters: a finding quoting `<!channel>` must not ping anyone."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
