"""Clean files are parsed by libyaml (much faster); they must come out exactly as the pure-Python
loader would make them: the same data, and every value and key at the same line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.rules import yamlsafe
from watcher.rules.yamlsafe import YamlDocument, YamlFailure, parse_yaml

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(
    path
    for pattern in ("*.yaml", "*.yml")
    for path in ROOT.rglob(pattern)
    if ".venv" not in path.parts and ".git" not in path.parts and path.name != "invalid-utf8.bad.yaml"
)
TRICKY = """\
# a comment before anything
model: "fraud-détecteur"   # non-ASCII before a comment
labels: {team: ml-platform, "quoted key": 'single', empty: "", tilde: ~}
rules:
  - name: ünïcödé-first then a value
    prometheus: |
      histogram_quantile(0.99,
        sum by (le) (rate(x_bucket{model="ä"}[5m])))  # kept in the block
    above: 0.3
    for: 2m
    summary: >-
      folded
      text with "quotes" and: colons
    nested: [[1, 2.5], {a: [true, no, null]}, -.inf, 0x1F, 1_000, 2026-11-22]
  - {name: flow, prometheus: up, above: 1e3}
"""


def _python_only(text: str) -> YamlDocument | YamlFailure:
    saved = yamlsafe._LibyamlLoader
    yamlsafe._LibyamlLoader = None
    try:
        return parse_yaml(text, Path("x.yaml"))
    finally:
        yamlsafe._LibyamlLoader = saved


def _same(text: str) -> None:
    fast, slow = parse_yaml(text, Path("x.yaml")), _python_only(text)
    if isinstance(slow, YamlFailure):
        assert fast == slow  # a problem is always worded by the pure-Python loader
        return
    assert isinstance(fast, YamlDocument)
    assert (fast.data, dict(fast.values), dict(fast.keys)) == (slow.data, dict(slow.values), dict(slow.keys))


def test_libyaml_is_there_and_used() -> None:
    assert yamlsafe._LibyamlLoader is not None
    assert not isinstance(yamlsafe._compose_with_libyaml(TRICKY), yamlsafe._NotClean)


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT)) for p in SHIPPED])
def test_every_yaml_file_in_the_repository_parses_the_same_both_ways(path: Path) -> None:
    _same(path.read_bytes().decode("utf-8-sig"))


@pytest.mark.parametrize(
    "text",
    [
        TRICKY,
        "a: 1\nb:\n  - x: [1, 2]\n    y: {z: true}\n",
        "a: &x 1\nb: *x\n",  # refused: the Python loader words it
        "a: 1\na: 2\n",  # duplicate key: found after composing, the same way on both paths
        "a: [1, 2\n",
        "a: \x07\n",  # a control character: never given to libyaml
        "---\na: 1\n---\nb: 2\n",
        "",
        "- 1\n- 2\n",
        "a: !!python/object:os.system x\n",
        "a:\n\tb: 1\n",
    ],
)
def test_tricky_and_broken_text_comes_out_the_same(text: str) -> None:
    _same(text)
