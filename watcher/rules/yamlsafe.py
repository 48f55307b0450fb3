"""Safe YAML loading that remembers where every value stands in the file.

Configuration and rule files are plain data. This loader refuses, before anything is expanded or
built: anchors and aliases (an alias bomb never grows), any tag beyond the standard scalar and
collection ones (`!!python/object`, `!Ref`, ...), duplicate keys, nesting past a fixed depth and
files over 1 MiB (checked before reading). The result is a tree of dicts, lists and scalars
plus the 1-based line and column of every value and key, so a validation error found later can
be reported at its place in the file. `${VAR}` references are expanded from a given environment,
and a literal Slack token anywhere in the text is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from watcher.rules.findings import Finding, describe, fragment

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
_TOO_LARGE = f"file is larger than 1 MiB ({MAX_FILE_BYTES} bytes): not a configuration or rule file"

TreePath = tuple[str | int, ...]
Position = tuple[int, int]  # (line, column), both 1-based

_STANDARD = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {_STANDARD + name for name in ("str", "int", "float", "bool", "null", "map", "seq")}


@dataclass(frozen=True)
class YamlDocument:
    path: Path
    text: str
    data: Any
    values: Mapping[TreePath, Position]  # where each value starts
    keys: Mapping[TreePath, Position]  # where each mapping key starts; the path ends with the key
    # Values that came from `${VAR}`: path -> the text as written, shown instead of the value.
    expanded: Mapping[TreePath, str] = field(default_factory=dict)
    # Problems found while preparing the text (literal tokens, unset variables): the schema is
    # still checked, so that every problem of the file is reported at once.
    findings: tuple[Finding, ...] = ()

    def resolve(self, loc: Sequence[str | int]) -> TreePath:
        """The longest path of `loc`'s parts that exists in the tree; other parts (pydantic's
        union tags, missing keys) are skipped."""
        path: TreePath = ()
        for part in loc:
            if (*path, part) in self.values:
                path = (*path, part)
        return path

    def position(self, path: TreePath) -> Position:
        while path not in self.values and path:
            path = path[:-1]
        return self.values.get(path, (1, 1))

    def key_position(self, path: TreePath) -> Position:
        return self.keys.get(path) or self.position(path)

    def shown(self, path: TreePath, value: object) -> str:
        """How to quote a value in a message: as written when it came from the environment."""
        return self.expanded.get(path, str(value))

    def hide_expanded(self, path: TreePath, message: str) -> str:
        """`message` with an environment-provided value at `path` replaced by its `${VAR}` text."""
        written = self.expanded.get(path)
        value = self.get(path)
        if written is None or not isinstance(value, str) or not value:
            return message
        return message.replace(value, written)

    def get(self, path: TreePath) -> Any:
        node = self.data
        for part in path:
            node = node[part]
        return node


@dataclass(frozen=True)
class YamlFailure:
    findings: tuple[Finding, ...]
    unreadable: bool = False  # missing or not readable at all, as opposed to readable but bad


class _Refused(yaml.YAMLError):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _RefusingComposer(Composer):
    """PyYAML's composer with the refusals checked per event, so they happen as the parser
    reaches them and before the composer follows any reference."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[attr-defined]  # the parser it is mixed with
        if isinstance(event, AliasEvent):
            raise _Refused(f"aliases (*{fragment(event.anchor)}) are not allowed", event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise _Refused(f"anchors (&{fragment(event.anchor)}) are not allowed", event.start_mark)
        tag = getattr(event, "tag", None)
        if tag not in (None, "!") and tag not in _ALLOWED_TAGS:
            shown = "!!" + tag[len(_STANDARD) :] if tag.startswith(_STANDARD) else tag
            raise _Refused(f"tag '{fragment(shown)}' is not allowed: plain data only", event.start_mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nesting deeper than {MAX_DEPTH} levels", event.start_mark)
        try:
            node: Node | None = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        return node


class _PlainDataLoader(Reader, Scanner, Parser, _RefusingComposer, Resolver):
    """PyYAML's pure-Python reader, scanner and parser: the wording of every finding."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        Resolver.__init__(self)


# libyaml scans and parses about ten times faster than PyYAML's Python; a thousand rules load in a
# fraction of the time. Only clean files take this path: on any problem the file is parsed again
# by the pure-Python loader, so that findings keep one wording and position whichever path ran.
_CParser: Any = None
if yaml.__with_libyaml__:
    from yaml._yaml import CParser as _CParser
_LibyamlLoader: Any = (
    type("_LibyamlLoader", (_CParser, _RefusingComposer, Resolver), {}) if _CParser is not None else None
)
# What PyYAML's reader refuses (its NON_PRINTABLE); such text always goes the pure-Python way.
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class _NotClean:
    """libyaml was not used or found a problem: the pure-Python loader must parse the text."""


def _compose_with_libyaml(text: str) -> Node | _NotClean | None:
    """The document's root node composed from libyaml's events, when libyaml is there, the text
    holds no character the pure-Python reader refuses, and nothing is wrong with it."""
    if _LibyamlLoader is None or _NON_PRINTABLE.search(text):
        return _NotClean()
    loader = _LibyamlLoader(text)
    try:
        Composer.__init__(loader)
        Resolver.__init__(loader)
        root: Node | None = Composer.get_single_node(loader)
    except Exception:  # every problem is reported by the pure-Python loader, in its words
        return _NotClean()
    finally:
        loader.dispose()
    return root


def load_yaml_file(path: Path) -> YamlDocument | YamlFailure:
    """Read and parse `path`; every refusal or syntax error is a finding with its position."""
    try:
        with path.open("rb") as stream:
            if os.fstat(stream.fileno()).st_size > MAX_FILE_BYTES:
                return _fail(path, (1, 1), _TOO_LARGE)
            # Read one byte past the limit: a file that grows, or a device, cannot get through.
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        return YamlFailure((Finding(path, 1, 1, f"cannot read file: {reason}"),), unreadable=True)
    if len(raw) > MAX_FILE_BYTES:
        return _fail(path, (1, 1), _TOO_LARGE)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        return _fail(path, _byte_position(raw, error.start), "file is not valid UTF-8")
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> YamlDocument | YamlFailure:
    fast = _compose_with_libyaml(text)
    root = _compose_in_python(text, path) if isinstance(fast, _NotClean) else fast
    if isinstance(root, YamlFailure):
        return root
    if root is None:
        return _fail(path, (1, 1), "file is empty: expected a mapping")
    builder = _TreeBuilder(path)
    data = builder.build(root, ())
    if builder.problems:
        return YamlFailure(tuple(builder.problems))
    return YamlDocument(path=path, text=text, data=data, values=builder.values, keys=builder.keys)


def _compose_in_python(text: str, path: Path) -> Node | YamlFailure | None:
    loader: _PlainDataLoader | None = None
    try:
        loader = _PlainDataLoader(text)  # the reader refuses control characters right here
        root: Node | None = loader.get_single_node()
        return root
    except _Refused as refused:
        return _fail(path, _mark_position(refused.mark), refused.message)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        return _fail(path, _mark_position(mark), _syntax_message(error))
    except ReaderError as error:
        message = f"character #x{error.character:04x} is not allowed in YAML"
        return _fail(path, _text_position(text, error.position), message)
    except yaml.YAMLError as error:
        return _fail(path, (1, 1), f"YAML error: {error}")
    finally:
        if loader is not None:
            loader.dispose()


class _TreeBuilder:
    """Turns composed nodes into plain values, noting positions; keys are always strings."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[TreePath, Position] = {}
        self.keys: dict[TreePath, Position] = {}
        self.problems: list[Finding] = []
        self._scalars = SafeConstructor()

    def build(self, node: Node, path: TreePath) -> Any:
        self.values[path] = _mark_position(node.start_mark)
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            return [self.build(child, (*path, index)) for index, child in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        return self._scalar(node)

    def _mapping(self, node: MappingNode, path: TreePath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            where = _mark_position(key_node.start_mark)
            if not isinstance(key_node, ScalarNode):
                self._problem(where, "a key must be a plain word, not a list or mapping")
                continue
            key = str(key_node.value)
            if key in result:
                first = self.keys[(*path, key)][0]
                self._problem(where, f"duplicate key '{fragment(key)}' (first at line {first})")
                continue
            self.keys[(*path, key)] = where
            result[key] = self.build(value_node, (*path, key))
        return result

    def _scalar(self, node: ScalarNode) -> Any:
        tag = node.tag.removeprefix(_STANDARD)
        constructors = {
            "int": self._scalars.construct_yaml_int,
            "float": self._scalars.construct_yaml_float,
            "bool": self._scalars.construct_yaml_bool,
            "null": self._scalars.construct_yaml_null,
        }
        construct = constructors.get(tag)
        if construct is None:  # str, and implicit timestamps, kept as written
            return node.value
        try:
            return construct(node)
        except (ValueError, yaml.YAMLError):
            self._problem(_mark_position(node.start_mark), f"'{fragment(node.value)}' is not a valid {tag}")
            return None

    def _problem(self, where: Position, message: str) -> None:
        self.problems.append(Finding(self.path, where[0], where[1], message))


_VARIABLE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expand_env(doc: YamlDocument, env: Mapping[str, str]) -> tuple[YamlDocument, list[Finding]]:
    """Replace `${VAR}` in every string value (`$${` writes a literal `${`). An unset or
    malformed reference is a finding at the value that names it."""
    findings: list[Finding] = []
    expanded: dict[TreePath, str] = {}

    def expand_text(text: str, path: TreePath) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name = match.group(1)
            line, column = doc.position(path)
            if not _VARIABLE_NAME.fullmatch(name):
                message = f"'${{{fragment(name)}}}' is not a valid variable name"
                findings.append(Finding(doc.path, line, column, message))
                return ""
            if name not in env:
                findings.append(Finding(doc.path, line, column, f"environment variable '{name}' is not set"))
                return ""
            return env[name]

        result = _VARIABLE.sub(substitute, text)
        if result != text:
            expanded[path] = text
        return result

    def walk(node: Any, path: TreePath) -> Any:
        if isinstance(node, dict):
            return {key: walk(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value, (*path, index)) for index, value in enumerate(node)]
        if isinstance(node, str) and "$" in node:
            return expand_text(node, path)
        return node

    data = walk(doc.data, ())
    return replace(doc, data=data, expanded=expanded), findings


_SLACK_TOKEN = re.compile(r"\b(xoxb|xoxp|xapp)-")


def literal_token_findings(doc: YamlDocument) -> list[Finding]:
    """A Slack token written into a file (comments included) leaks with the file; it belongs in
    the environment. The token itself is never repeated in the message."""
    findings = []
    for match in _SLACK_TOKEN.finditer(doc.text):
        line, column = _text_position(doc.text, match.start())
        message = f"literal Slack token ({match.group(1)}-…) in the file: pass it through ${{VAR}} instead"
        findings.append(Finding(doc.path, line, column, message))
    return findings


def load_mapping_document(path: Path, env: Mapping[str, str]) -> YamlDocument | YamlFailure:
    """Load, look for literal tokens, expand `${VAR}` and require a mapping at the top: what
    every configuration and rule file goes through before its schema is checked. Problems that
    leave the tree usable are kept in the document's `findings`."""
    loaded = load_yaml_file(path)
    if isinstance(loaded, YamlFailure):
        return loaded
    findings = literal_token_findings(loaded)
    if not isinstance(loaded.data, dict):
        findings.append(Finding(path, *loaded.position(()), _not_a_mapping(loaded.data)))
        return YamlFailure(tuple(findings))
    doc, unset = expand_env(loaded, env)
    return replace(doc, findings=tuple(findings + unset))


def without_repeats(doc: YamlDocument, findings: Sequence[Finding]) -> list[Finding]:
    """Schema findings minus those at a place already reported while preparing the document
    (an unset variable leaves an empty string that the schema would refuse a second time)."""
    taken = {(finding.line, finding.column) for finding in doc.findings}
    return [finding for finding in findings if (finding.line, finding.column) not in taken]


def _not_a_mapping(data: Any) -> str:
    return f"the top level must be a mapping of keys, not {describe(data)}"


def _fail(path: Path, where: Position, message: str) -> YamlFailure:
    return YamlFailure((Finding(path, where[0], where[1], message),))


def _mark_position(mark: Any) -> Position:
    if mark is None:
        return (1, 1)
    return (mark.line + 1, mark.column + 1)


def _text_position(text: str, index: int) -> Position:
    line = text.count("\n", 0, index) + 1
    return (line, index - (text.rfind("\n", 0, index) + 1) + 1)


def _byte_position(raw: bytes, index: int) -> Position:
    line_start = raw.rfind(b"\n", 0, index) + 1
    column = len(raw[line_start:index].decode("utf-8", errors="replace")) + 1
    return (raw.count(b"\n", 0, index) + 1, column)


def _syntax_message(error: yaml.MarkedYAMLError) -> str:
    parts = [part for part in (error.context, error.problem) if part]
    return "YAML syntax error: " + ", ".join(parts) if parts else "YAML syntax error"
