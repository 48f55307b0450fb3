"""Rules over many series: each series a query returns is an instance of the rule (SPEC.md section 2).

A rule file's `model:` and `target:` (or a rule's own `target:`) may be templates over the series'
labels (see name_templates). An instance's id is its rule's id followed by its labels in
Prometheus' notation, sorted: `errors/error-rate{model="fraud"}`. A rule whose `model:` is a
template takes its id from the file's name instead (`errors.yaml` -> `errors/error-rate`), since
no one model names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from watcher.rules.name_templates import is_template, label_set, render_name
from watcher.rules.rulefmt import Rule


def is_vector_rule(rule: Rule) -> bool:
    """A rule whose model or target is built per series: every answer is a set of instances."""
    return is_template(rule.model) or is_template(rule.target)


@dataclass(frozen=True)
class InstanceProblem:
    """Why a series cannot be an instance (a label missing, a name that is not one)."""

    instance_id: str
    message: str


def instance_of(rule: Rule, labels: Mapping[str, str]) -> Rule | InstanceProblem:
    """The rule as it applies to one series: its own id, model and target."""
    instance_id = f"{rule.id}{label_set(labels)}"
    model = render_name(rule.model, labels) if is_template(rule.model) else rule.model
    if model is None:
        return InstanceProblem(instance_id, f"model '{rule.model}' cannot be built from the series' labels")
    target = rule.target
    if target is not None and is_template(target):
        target = render_name(target, labels)
        if target is None:
            return InstanceProblem(
                instance_id, f"target '{rule.target}' cannot be built from the series' labels"
            )
    return replace(rule, model=model, target=target, key=instance_id, series=dict(labels))
