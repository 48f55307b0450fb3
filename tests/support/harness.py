"""The daemon's parts wired as `watcher run` wires them, driven tick by tick with stepped time."""

from __future__ import annotations

from datetime import datetime

from tests.support.workspace import Workspace
from watcher.engine.bind import RuntimeRule, build_runtime_rules
from watcher.engine.tick import Engine
from watcher.incidents.dispatch import RollbackDispatcher
from watcher.model import Outcome, RuleState
from watcher.rules.rulefmt import load_rules
from watcher.store import migrate
from watcher.store.database import open_engine
from watcher.store.repository import Store
from watcher.targets import TargetRegistry

RULE = "fraud-detector/error-rate"


class Harness:
    """The daemon's parts, wired as `watcher run` wires them, driven tick by tick."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.config = workspace.config()
        self.db = open_engine(self.config.database)
        migrate.upgrade(self.db)
        self.store = Store(self.db)
        self.targets = TargetRegistry(self.config.targets, self.config.base_dir)
        self.engine = Engine(self.store, self.targets, self.config.safety)
        self.dispatcher = RollbackDispatcher(
            self.store, self.targets, "test-replica", self.config.safety.verify_after
        )
        self.rules: dict[str, RuntimeRule] = build_runtime_rules(load_rules(self.config).rules, self.config)
        self.engine.load_states(self.rules)

    def tick(self, at: datetime, value: float | None = None) -> Outcome:
        if value is not None:
            self.workspace.set_value(value)
        return self.engine.tick(self.rules[RULE], at).transition.outcome

    def state(self) -> RuleState:
        return self.engine.status(RULE).state

    def close(self) -> None:
        self.db.dispose()
