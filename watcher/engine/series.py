"""The instances of rules over many series: which exist, which went missing, and their runtime.

A query that returns several series (or any rule whose model or target is built from labels)
has one instance per series, each with its own state, incidents and rollbacks, as Prometheus'
alerting rules have one alert per series. Instances come and go with their series: one missing
from an answer is held as it was (no data) for VANISH_AFTER - 1 evaluations, so that a scrape
hiccup does not resolve anything, and is resolved at the VANISH_AFTER-th evaluation without it,
as Prometheus resolves an alert whose series is gone. It is then forgotten until it comes back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from watcher.model import NoDataPolicy
from watcher.rules.instances import InstanceProblem, instance_of
from watcher.rules.name_templates import label_set, parse_label_set

if TYPE_CHECKING:
    from watcher.engine.bind import RuntimeRule

VANISH_AFTER = 2  # evaluations in a row without its series before an instance resolves


@dataclass(frozen=True)
class Missing:
    """An instance absent from this answer; `vanished` once it has been absent long enough."""

    runtime: RuntimeRule
    vanished: bool


class SeriesBook:
    def __init__(self) -> None:
        self._instances: dict[str, dict[str, RuntimeRule]] = {}  # rule id -> instance id -> runtime
        self._missing: dict[str, int] = {}  # instance id -> evaluations in a row without its series
        self._lock = threading.Lock()

    def restore(self, runtime: RuntimeRule, stored_ids: Iterable[str]) -> None:
        """Instances of the rule that a previous run persisted (their labels are in their ids)."""
        prefix = runtime.rule.id
        for stored in stored_ids:
            if not stored.startswith(prefix + "{"):
                continue
            labels = parse_label_set(stored[len(prefix) :])
            if labels is not None:
                self.instance(runtime, labels)

    def instance(self, runtime: RuntimeRule, labels: Mapping[str, str]) -> RuntimeRule | InstanceProblem:
        """The runtime of the series' instance; it now exists (and is no longer missing)."""
        instance_id = f"{runtime.rule.id}{label_set(labels)}"
        with self._lock:
            known = self._instances.setdefault(runtime.rule.id, {})
            found = known.get(instance_id)
            self._missing.pop(instance_id, None)
        if found is not None and found.rule.state_hash == runtime.rule.state_hash:
            return found
        rule = instance_of(runtime.rule, labels)
        if isinstance(rule, InstanceProblem):
            return rule
        built = replace(runtime, rule=rule)
        with self._lock:
            known[instance_id] = built
        return built

    def missing(self, runtime: RuntimeRule, seen: set[str]) -> list[Missing]:
        """The rule's known instances absent from this answer; the vanished ones are forgotten
        (their last evaluation, which resolves them, is the caller's to make)."""
        absent: list[Missing] = []
        with self._lock:
            known = self._instances.get(runtime.rule.id, {})
            for instance_id in [i for i in known if i not in seen]:
                count = self._missing.get(instance_id, 0) + 1
                vanished = count >= VANISH_AFTER
                instance = known[instance_id]
                if vanished:
                    del known[instance_id]
                    self._missing.pop(instance_id, None)
                    # Its last evaluation resolves it, whatever its no-data policy says.
                    instance = replace(
                        instance, policy=replace(instance.policy, on_no_data=NoDataPolicy.RESOLVE)
                    )
                else:
                    self._missing[instance_id] = count
                absent.append(Missing(instance, vanished))
        return absent

    def known(self, runtime: RuntimeRule) -> list[RuntimeRule]:
        with self._lock:
            return list(self._instances.get(runtime.rule.id, {}).values())

    def forget_rules(self, keep: Iterable[str]) -> None:
        """Drop the instances of rules no longer loaded."""
        kept = set(keep)
        with self._lock:
            for rule_id in [r for r in self._instances if r not in kept]:
                del self._instances[rule_id]
