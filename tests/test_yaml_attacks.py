"""Hostile YAML: refused early, in bounded memory, at the right position, with nothing run."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.test_config import FIXTURE_ENV, RULES_CONFIG, load_fixture_config
from watcher.rules.config import WatcherConfig
from watcher.rules.rulefmt import load_rule_file
from watcher.rules.yamlsafe import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    YamlDocument,
    YamlFailure,
    load_yaml_file,
    parse_yaml,
)

HERE = Path("attack.yaml")


def _messages(text: str) -> list[str]:
    result = parse_yaml(text, HERE)
    assert isinstance(result, YamlFailure), result
    return [f"{finding.line}:{finding.column}: {finding.message}" for finding in result.findings]


def _peak_bytes(work: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _billion_laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_stops_at_the_first_anchor_without_expanding() -> None:
    text = _billion_laughs(12)  # 10**12 strings if expanded
    assert _messages(text) == ["1:5: anchors (&a0) are not allowed"]
    # Nothing grew: the whole refusal fits in a few hundred KiB (the expansion would need TiB).
    assert _peak_bytes(lambda: parse_yaml(text, HERE)) < 512 * 1024


def test_an_alias_without_a_known_anchor_is_refused_too() -> None:
    assert _messages("a: *nowhere\n") == ["1:4: aliases (*nowhere) are not allowed"]


def test_the_alias_bomb_fixture_fails_fast_through_the_rule_loader(tmp_path: Path) -> None:
    config = _config()
    path = tmp_path / "bomb.yaml"
    path.write_text("model: m\nrules: *lots\n" + _billion_laughs(30))
    result = load_rule_file(path, config, {})
    assert [f.message for f in result.findings] == ["aliases (*lots) are not allowed"]


def _config() -> WatcherConfig:
    loaded = load_fixture_config(RULES_CONFIG)
    assert loaded.config is not None
    return loaded.config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a: !!python/object/apply:os.system ['x']\n",
            "1:4: tag '!!python/object/apply:os.system' is not allowed",
        ),
        ("a: !!python/name:os.system\n", "1:4: tag '!!python/name:os.system' is not allowed"),
        ("a: !!python/module:os\n", "1:4: tag '!!python/module:os' is not allowed"),
        ("!!python/object:os.Foo {a: 1}\n", "1:1: tag '!!python/object:os.Foo' is not allowed"),
        ("a: !!binary aGVsbG8=\n", "1:4: tag '!!binary' is not allowed"),
        ("a: !!set {x, y}\n", "1:4: tag '!!set' is not allowed"),
        ("a: !!omap [x: 1]\n", "1:4: tag '!!omap' is not allowed"),
        ("a: !!timestamp 2024-01-01\n", "1:4: tag '!!timestamp' is not allowed"),
        ("a: !Ref other\n", "1:4: tag '!Ref' is not allowed"),
        ("a:\n  - !include other.yaml\n", "2:5: tag '!include' is not allowed"),
        ("a: !<tag:example.com,2024:thing> x\n", "1:4: tag 'tag:example.com,2024:thing' is not allowed"),
    ],
)
def test_non_standard_tags_are_refused(text: str, message: str) -> None:
    assert _messages(text) == [f"{message}: plain data only"]


def test_standard_tags_are_plain_data() -> None:
    doc = parse_yaml("a: !!str 5\nb: !!int '7'\nc: !!float 1\nd: !!bool true\ne: !!null ''\nf: ! x\n", HERE)
    assert isinstance(doc, YamlDocument)
    assert doc.data == {"a": "5", "b": 7, "c": 1.0, "d": True, "e": None, "f": "x"}


def test_a_python_tag_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "rules.yaml"
    path.write_text(f"model: m\nrules: !!python/object/apply:os.system ['touch {marker}']\n")
    result = load_rule_file(path, _config(), {})
    assert [f.message for f in result.findings] == [
        "tag '!!python/object/apply:os.system' is not allowed: plain data only"
    ]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", "3:1: duplicate key 'a' (first at line 1)"),
        ("x:\n  y: 1\n  z: 2\n  y: 3\n", "4:3: duplicate key 'y' (first at line 2)"),
        ("- {a: 1, a: 2}\n", "1:10: duplicate key 'a' (first at line 1)"),
        ("1: a\n'1': b\n", "2:1: duplicate key '1' (first at line 1)"),
    ],
)
def test_duplicate_keys_are_refused(text: str, message: str) -> None:
    assert _messages(text) == [message]


def test_every_duplicate_key_is_reported() -> None:
    assert _messages("a: 1\na: 2\nb: 1\nb: 2\n") == [
        "2:1: duplicate key 'a' (first at line 1)",
        "4:1: duplicate key 'b' (first at line 3)",
    ]


def test_deep_nesting_is_refused_without_recursion_error() -> None:
    text = "[" * 100_000 + "]" * 100_000
    assert _messages(text) == [f"1:{MAX_DEPTH + 1}: nesting deeper than {MAX_DEPTH} levels"]


def test_nesting_up_to_the_limit_is_fine() -> None:
    doc = parse_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH, HERE)
    assert isinstance(doc, YamlDocument)


def test_a_file_over_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as stream:
        stream.truncate(1024**3)  # a sparse 1 GiB file: reading it whole would be noticed
    result = _peak_bytes(lambda: load_yaml_file(path))
    assert result < 4 * 1024 * 1024
    loaded = load_yaml_file(path)
    assert isinstance(loaded, YamlFailure)
    assert [str(f) for f in loaded.findings] == [
        f"{path}:1:1: file is larger than 1 MiB (1048576 bytes): not a configuration or rule file"
    ]


def test_a_file_just_over_the_limit_is_refused_and_at_the_limit_is_read(tmp_path: Path) -> None:
    over = tmp_path / "over.yaml"
    over.write_bytes(b"a: " + b"x" * (MAX_FILE_BYTES - 3) + b"\n")
    assert isinstance(load_yaml_file(over), YamlFailure)
    at_limit = tmp_path / "at.yaml"
    at_limit.write_bytes(b"a: " + b"x" * (MAX_FILE_BYTES - 4) + b"\n")
    assert isinstance(load_yaml_file(at_limit), YamlDocument)


def test_an_endless_stream_is_read_only_up_to_the_limit() -> None:
    loaded = load_yaml_file(Path("/dev/zero"))  # stat says 0 bytes; reading never ends
    assert isinstance(loaded, YamlFailure)
    assert [f.message for f in loaded.findings] == [
        "file is larger than 1 MiB (1048576 bytes): not a configuration or rule file"
    ]


def test_invalid_utf8_is_reported_at_the_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model: m\nsummary: 'prix: 5 €'\n".encode() + b"note: caf\xe9\n")
    loaded = load_yaml_file(path)
    assert isinstance(loaded, YamlFailure)
    assert [str(f) for f in loaded.findings] == [f"{path}:3:10: file is not valid UTF-8"]


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")
    loaded = load_yaml_file(path)
    assert isinstance(loaded, YamlDocument) and loaded.data == {"a": 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "1:1: file is empty: expected a mapping"),
        ("# nothing but a comment\n", "1:1: file is empty: expected a mapping"),
        (
            "a: 1\n---\nb: 2\n",
            "2:1: YAML syntax error: expected a single document in the stream, but found another document",
        ),
        ("a: \x07\n", "1:4: character #x0007 is not allowed in YAML"),
        (
            "a: 'unterminated\n",
            "2:1: YAML syntax error: while scanning a quoted scalar, found unexpected end of stream",
        ),
        (
            "a:\n\tb: 1\n",
            "2:1: YAML syntax error: while scanning for the next token, "
            "found character '\\t' that cannot start any token",
        ),
        ("? [a, b]\n: c\n", "1:3: a key must be a plain word, not a list or mapping"),
        ("a: !!int nope\n", "1:4: 'nope' is not a valid int"),
    ],
)
def test_malformed_documents(text: str, message: str) -> None:
    assert _messages(text) == [message]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "1:1: the top level must be a mapping of keys, not a list"),
        ("just text\n", "1:1: the top level must be a mapping of keys, not a string"),
        ("null\n", "1:1: the top level must be a mapping of keys, not nothing (null)"),
        ("42\n", "1:1: the top level must be a mapping of keys, not a number"),
    ],
)
def test_the_top_level_must_be_a_mapping(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    result = load_rule_file(path, _config(), {})
    assert [f"{f.line}:{f.column}: {f.message}" for f in result.findings] == [message]


def test_a_merge_key_is_just_an_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("model: m\n<<: {rules: []}\nrules: []\n")
    result = load_rule_file(path, _config(), FIXTURE_ENV)
    assert [f"{f.line}:{f.column}: {f.message}" for f in result.findings] == ["2:1: unknown key '<<'"]


def test_positions_of_values_and_keys() -> None:
    doc = parse_yaml("a: 1\nb:\n  - x: [1, 2]\n    y: {z: true}\n", HERE)
    assert isinstance(doc, YamlDocument)
    assert doc.position(("b", 0, "x", 1)) == (3, 12)
    assert doc.key_position(("b", 0, "y")) == (4, 5)
    assert doc.position(("b", 0, "y", "z")) == (4, 12)
    assert doc.position(("b", 0, "missing")) == (3, 5)  # the nearest enclosing value
    assert doc.resolve(("b", 0, "<tag>", "x")) == ("b", 0, "x")
