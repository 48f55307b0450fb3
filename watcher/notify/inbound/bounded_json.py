"""json.loads with a bound on nesting, checked before parsing.

The standard parser recurses once per level: a payload nested 100,000 deep raises RecursionError
(deep enough, it can exhaust the C stack). Slack's payloads are a handful of levels deep.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def nesting_depth(text: str) -> int:
    """The deepest level of [ and { outside strings (for well-formed JSON, its nesting depth)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def loads_bounded(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `text`; ValueError (as json.loads gives for bad JSON) when nested over `max_depth`."""
    # Fewer opening brackets than the bound cannot nest past it: no scan for ordinary payloads.
    if text.count("[") + text.count("{") > max_depth and nesting_depth(text) > max_depth:
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    return json.loads(text)
