"""`--set KEY=VALUE`: the selected rules changed for a what-if replay beside the baseline."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any

from watcher.model import Action, NoDataPolicy, Severity
from watcher.rules.durations import InvalidDuration, parse_duration
from watcher.rules.rulefmt import MinSamplesQuery, Rule


@dataclass(frozen=True)
class Setting:
    key: str
    text: str
    value: Any


@dataclass(frozen=True)
class BadSetting:
    message: str


def _duration(text: str, positive: bool) -> timedelta | BadSetting:
    value = parse_duration(text)
    if isinstance(value, InvalidDuration):
        return BadSetting(value.message)
    if positive and value <= timedelta(0):
        return BadSetting(f"{text!r} must be longer than zero")
    return value


def _number(text: str) -> float | BadSetting:
    try:
        return float(text)
    except ValueError:
        return BadSetting(f"{text!r} is not a number")


def _count(text: str) -> int | BadSetting:
    return int(text) if text.isdigit() else BadSetting(f"{text!r} is not a whole number")


def _choice(kind: type[StrEnum]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            return BadSetting(f"{text!r} is not one of {', '.join(member.value for member in kind)}")

    return parse


_PARSERS: dict[str, Callable[[str], Any]] = {
    "for": lambda text: _duration(text, positive=False),
    "keep_firing_for": lambda text: _duration(text, positive=False),
    "every": lambda text: _duration(text, positive=True),
    "above": _number,
    "below": _number,
    "min_samples": _count,
    "action": _choice(Action),
    "severity": _choice(Severity),
    "on_no_data": _choice(NoDataPolicy),
}


def parse_settings(texts: Sequence[str]) -> list[Setting] | BadSetting:
    settings: list[Setting] = []
    for text in texts:
        key, sep, raw = text.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or key not in _PARSERS:
            return BadSetting(f"--set {text!r}: expected KEY=VALUE with KEY one of {', '.join(_PARSERS)}")
        value = _PARSERS[key](raw)
        if isinstance(value, BadSetting):
            return BadSetting(f"--set {key}: {value.message}")
        settings.append(Setting(key, raw, value))
    return settings


def describe(settings: Sequence[Setting]) -> str:
    return " ".join(f"{setting.key}={setting.text}" for setting in settings)


def _apply_one(rule: Rule, setting: Setting) -> Rule:
    key, value = setting.key, setting.value
    if key == "for":
        return replace(rule, for_=value)
    if key == "every":
        return replace(rule, every=value, interval=value)
    if key == "above":
        return replace(rule, above=value, below=None)
    if key == "below":
        return replace(rule, below=value, above=None)
    if key == "min_samples" and isinstance(rule.min_samples, MinSamplesQuery):
        return replace(
            rule, min_samples=MinSamplesQuery(prometheus=rule.min_samples.prometheus, at_least=value)
        )
    return replace(rule, **{key: value})


def apply_settings(rule: Rule, settings: Sequence[Setting]) -> Rule:
    """The rule with the settings applied; its hashes name the variant, not the rule as written."""
    changed = rule
    for setting in settings:
        changed = _apply_one(changed, setting)
    tag = describe(settings).encode()
    return replace(
        changed,
        content_hash=hashlib.sha256(rule.content_hash.encode() + b"|" + tag).hexdigest(),
        state_hash=hashlib.sha256(rule.state_hash.encode() + b"|" + tag).hexdigest(),
    )
