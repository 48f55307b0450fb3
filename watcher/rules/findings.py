"""A problem found in a configuration or rule file, with where it is; and the translation of
pydantic validation errors into such problems.

Messages name keys and values as the file shows them; a value that came from `${VAR}` is shown
as `${VAR}`, so a secret passed through the environment never reaches a message.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Tag, ValidationError

if TYPE_CHECKING:
    from watcher.rules.yamlsafe import TreePath, YamlDocument


# What a message may quote of a file's own words: a key or value it did not understand may really
# be a line of another file (a password hash, a key), so only a short, escaped fragment is shown.
FRAGMENT_LIMIT = 40
# A message as a whole is cut here too: a quoted value that slipped past `fragment` stays bounded.
MESSAGE_LIMIT = 400


def fragment(text: object, limit: int = FRAGMENT_LIMIT) -> str:
    """At most `limit` characters of `text`, anything unprintable escaped (`\\n`, `\\x1b`), cut
    with `…`: what a finding may repeat of what it did not understand."""
    raw = str(text)
    escaped = "".join(_printable(character) for character in raw[: limit + 1])
    return escaped if len(escaped) <= limit and len(raw) <= limit else escaped[: limit - 1] + "…"


def _printable(character: str) -> str:
    if character.isprintable():
        return character
    return character.encode("unicode_escape").decode("ascii")


@dataclass(frozen=True)
class Finding:
    file: Path
    line: int  # 1-based
    column: int  # 1-based
    message: str

    def __post_init__(self) -> None:
        # Terminal control characters never reach an operator's screen or a log line, whatever
        # a message was built from; a message is never longer than MESSAGE_LIMIT.
        object.__setattr__(self, "message", fragment(self.message, MESSAGE_LIMIT))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"

    def sort_key(self) -> tuple[str, int, int, str]:
        return (str(self.file), self.line, self.column, self.message)


def sorted_findings(findings: Sequence[Finding]) -> list[Finding]:
    """By file, then position; the same problem reported twice at one place is kept once."""
    return sorted(set(findings), key=Finding.sort_key)


def did_you_mean(word: str, candidates: Sequence[str]) -> str:
    """` (did you mean 'x'?)` when a candidate is close enough, else an empty string."""
    close = difflib.get_close_matches(word[:100], list(candidates), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


# What a value of each pydantic error type should have been, in words an ops engineer reads.
_EXPECTED = {
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
    "path_type": "a file path",
}


def describe(value: Any) -> str:
    """The kind of a YAML value, never the value itself."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def validation_findings(
    error: ValidationError, doc: YamlDocument, model: type[BaseModel], prefix: TreePath = ()
) -> list[Finding]:
    """One finding per pydantic error of `model` validating the document's subtree at `prefix`."""
    return [_finding(dict(item), doc, model, prefix) for item in error.errors()]


def _finding(item: dict[str, Any], doc: YamlDocument, model: type[BaseModel], prefix: TreePath) -> Finding:
    loc: tuple[str | int, ...] = tuple(item["loc"])
    path = doc.resolve(prefix + loc)
    kind = item["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        line, column = doc.key_position(path)
        hint = _key_hint(key, model_at(model, loc[:-1]))
        return Finding(doc.path, line, column, f"unknown key '{fragment(key)}'{hint}")
    if loc[-1:] == ("[key]",):  # a mapping key itself is invalid: point at the key
        path = doc.resolve(prefix + loc[:-1])
        line, column = doc.key_position(path)
        message = _message(item, kind, _label(path[:-1], loc[:-2]))
        return Finding(doc.path, line, column, doc.hide_expanded(path, message))
    line, column = doc.position(path)
    if kind == "missing":
        return Finding(doc.path, line, column, f"missing required key '{loc[-1]}'")
    message = _message(item, kind, _label(path, loc))
    return Finding(doc.path, line, column, doc.hide_expanded(path, message))


def _message(item: dict[str, Any], kind: str, label: str) -> str:
    ctx = item.get("ctx", {})
    if kind == "enum":
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        if not isinstance(item["input"], str):
            return f"{label}: expected one of {', '.join(allowed)}, got {describe(item['input'])}"
        hint = did_you_mean(item["input"][:100], allowed)
        return f"unknown {label} '{fragment(item['input'])}'{hint}: expected one of {', '.join(allowed)}"
    if kind in _EXPECTED:
        return f"{label}: expected {_EXPECTED[kind]}, got {describe(item['input'])}"
    if kind in _LIMITS:
        words, limit = _LIMITS[kind]
        return f"{label}: must be {words} {ctx[limit]}"
    if kind in ("too_short", "string_too_short"):
        return f"{label}: must not be empty" if ctx.get("min_length") == 1 else f"{label}: too short"
    message = str(item["msg"])
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{label}: {message[:1].lower()}{message[1:]}"


# Numeric limits: the words, and the key of the limit in the error's ctx.
_LIMITS = {
    "greater_than": ("greater than", "gt"),
    "greater_than_equal": ("at least", "ge"),
    "less_than": ("less than", "lt"),
    "less_than_equal": ("at most", "le"),
}


def _key_hint(key: str, model: type[BaseModel] | None) -> str:
    """` (did you mean 'x'?)`: a close known key, or what a familiar word is called here."""
    if model is None:
        return ""
    known = [info.alias or name for name, info in model.model_fields.items()]
    hints: dict[str, str] = getattr(model, "key_hints", {})
    close = difflib.get_close_matches(key[:100], [*known, *hints], n=1, cutoff=0.75)
    if not close:
        return ""
    return f" (did you mean {hints[close[0]]}?)" if close[0] in hints else f" (did you mean '{close[0]}'?)"


def _label(path: TreePath, loc: tuple[str | int, ...]) -> str:
    """`for`, `columns[1]`: the last key of the path, with the list indexes that follow it."""
    parts = [part for part in (path or loc) if not (isinstance(part, str) and part.startswith("<"))]
    indexes: list[str] = []
    for part in reversed(parts):
        if isinstance(part, int):
            indexes.insert(0, f"[{part}]")
            continue
        return fragment(part) + "".join(indexes)
    return "value" + "".join(indexes)


def model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model that validates the mapping at `loc` below `model` (for a did-you-mean hint)."""
    annotation: Any = model
    for part in loc:
        annotation = _child_annotation(annotation, part)
        if annotation is None:
            return None
    return _model_of(annotation)


def _child_annotation(annotation: Any, part: str | int) -> Any:
    annotation = _strip_annotated(annotation)
    members = _union_members(annotation)
    if members is not None:
        for member in members:
            if isinstance(part, str) and part.startswith("<") and _tag_of(member) == part:
                return member
        for member in members:
            child = _child_annotation(member, part)
            if child is not None:
                return child
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, info in annotation.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (list, tuple) and isinstance(part, int) and args:
        return args[0]
    if origin is dict and isinstance(part, str) and len(args) == 2:
        return args[1]
    return None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    annotation = _strip_annotated(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for member in _union_members(annotation) or ():
        found = _model_of(member)
        if found is not None:
            return found
    return None


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_members(annotation: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(annotation)
    return None


def _tag_of(annotation: Any) -> str | None:
    if typing.get_origin(annotation) is typing.Annotated:
        for meta in typing.get_args(annotation)[1:]:
            if isinstance(meta, Tag):
                return meta.tag
    return None
