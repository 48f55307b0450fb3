"""A watcher working directory for tests: watcher.yaml, a rule file, a real MLflow registry and a
real SQLite table the rule's SQL source reads (the test sets the value the rule measures)."""

from __future__ import annotations

import sqlite3
import textwrap
from dataclasses import dataclass
from pathlib import Path

from tests.support.mlflow_registry import champion, copy_registry
from watcher.rules.config import WatcherConfig, load_config
from watcher.ruletest.prometheus import free_port

DEFAULT_RULES = """\
model: fraud-detector
target: fraud-prod
rules:
  - name: error-rate
    signal: error_rate
    sql:
      url: sqlite:///signal.db
      query: SELECT value, samples FROM signal
      window: 5m
    above: 0.05
    for: 2m
    every: 30s
    action: rollback
    severity: critical
"""


@dataclass
class Workspace:
    root: Path
    registry: Path

    @property
    def config_path(self) -> Path:
        return self.root / "watcher.yaml"

    @property
    def signal_db(self) -> Path:
        return self.root / "rules" / "signal.db"

    def config(self) -> WatcherConfig:
        result = load_config(self.config_path)
        assert result.config is not None and not result.findings, [str(f) for f in result.findings]
        return result.config

    def set_value(self, value: float | None, samples: int = 1000) -> None:
        """The number the rule measures next; None leaves the table empty (no data)."""
        with sqlite3.connect(self.signal_db) as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS signal (value REAL, samples INTEGER)")
            connection.execute("DELETE FROM signal")
            if value is not None:
                connection.execute("INSERT INTO signal VALUES (?, ?)", (value, samples))

    def break_source(self) -> None:
        """The query now fails (its table is gone): an error, never a breach."""
        with sqlite3.connect(self.signal_db) as connection:
            connection.execute("DROP TABLE IF EXISTS signal")

    def replica_config(self, name: str) -> Path:
        """The same configuration for another replica: only its HTTP port differs."""
        import re

        path = self.root / f"{name}.yaml"
        text = re.sub(
            r"listen: 127\.0\.0\.1:\d+", f"listen: 127.0.0.1:{free_port()}", self.config_path.read_text()
        )
        path.write_text(text)
        return path

    def champion(self) -> str:
        return champion(self.registry)

    def write_rules(self, text: str, name: str = "fraud-detector.yaml") -> Path:
        path = self.root / "rules" / name
        path.write_text(text)
        return path


def make_workspace(
    root: Path,
    registry_template: Path,
    database_url: str,
    *,
    rules: str = DEFAULT_RULES,
    extra_config: str = "",
    verify_after: str = "1m",
    every: str = "30s",
    timeout: str = "2s",
) -> Workspace:
    (root / "rules").mkdir(parents=True, exist_ok=True)
    registry = copy_registry(registry_template, root / "registry")
    config = textwrap.dedent(
        f"""\
        database: {database_url}
        rules: rules/
        evaluation:
          every: {every}
          timeout: {timeout}
        targets:
          fraud-prod:
            adapter: mlflow
            tracking_uri: sqlite:///{registry}
            model: fraud-detector
            alias: champion
        safety:
          auto_rollback: true
          cooldown: 30m
          max_rollbacks: 3 per 24h
          verify_after: {verify_after}
          stable_after: 1h
        """
    )
    # A port of its own (tests must not collide on the default one) unless the test set an http
    # section itself; "http:" inside a URL is not one.
    if not any(line.startswith("http:") for line in extra_config.splitlines()):
        extra_config += f"http:\n  listen: 127.0.0.1:{free_port()}\n"
    (root / "watcher.yaml").write_text(config + extra_config)
    workspace = Workspace(root, registry)
    workspace.write_rules(rules)
    workspace.set_value(0.01)
    return workspace
