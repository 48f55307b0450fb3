"""Names built from a series' labels: `{{ labels.NAME }}` in a rule file's `model:` and `target:`.

Deliberately less than Jinja: a name is built from label values and fixed text only, so a series
can never make a rule compute anything, and what it builds must still be a valid name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from watcher.rules.config import NAME_PATTERN

LABEL_PLACEHOLDER = re.compile(r"\{\{\s*labels\.([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
# A template: name characters and label placeholders, at least one of them.
TEMPLATE_PATTERN = re.compile(r"(?:[A-Za-z0-9_.\-]|\{\{\s*labels\.[a-zA-Z_][a-zA-Z0-9_]*\s*\}\})+")


def is_template(text: str | None) -> bool:
    return text is not None and LABEL_PLACEHOLDER.search(text) is not None


def valid_template(text: str) -> bool:
    return TEMPLATE_PATTERN.fullmatch(text) is not None and is_template(text)


def label_set(labels: Mapping[str, str]) -> str:
    """Labels in Prometheus' notation, sorted by name, values escaped."""
    escaped = (f'{name}="{_escape(value)}"' for name, value in sorted(labels.items()))
    return "{" + ",".join(escaped) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_name(template: str, labels: Mapping[str, str]) -> str | None:
    """The template with each placeholder replaced by its label's value; None when a label is
    missing or the result is not a valid name."""
    missing: list[str] = []

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in labels:
            missing.append(name)
            return ""
        return labels[name]

    rendered = LABEL_PLACEHOLDER.sub(value, template)
    if missing or not NAME_PATTERN.fullmatch(rendered):
        return None
    return rendered


_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_label_set(text: str) -> dict[str, str] | None:
    """The labels of `label_set`'s notation back; None when `text` is not in it."""
    if not (text.startswith("{") and text.endswith("}")):
        return None
    body = text[1:-1]
    pairs = list(_LABEL_PAIR.finditer(body))
    if ",".join(match.group(0) for match in pairs) != body:
        return None
    return {match.group(1): _unescape(match.group(2)) for match in pairs}


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)
