"""Real-world alerting expressions: each parses, reads back as written, and has its known lookback."""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from watcher.rules.durations import parse_duration
from watcher.rules.promql import Lookback, ParsedQuery, lookback, parse_query, render

CORPUS = Path(__file__).parent / "data" / "promql_corpus"


def entries() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = []
    for path in sorted(CORPUS.glob("*.yaml")):
        loaded.extend(yaml.safe_load(path.read_text()))
    return loaded


ENTRIES = entries()


def parsed(expr: str) -> ParsedQuery:
    result = parse_query(expr)
    assert isinstance(result, ParsedQuery), result
    return result


def test_the_corpus_holds_at_least_a_hundred_expressions_with_their_licence() -> None:
    assert len(ENTRIES) >= 100
    assert "Apache License" in (CORPUS / "LICENSE").read_text()
    assert "kube-prometheus" in (CORPUS / "README.md").read_text()


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{i:03d}-{e['alert']}" for i, e in enumerate(ENTRIES)])
def test_each_expression_parses_with_its_lookback(entry: dict[str, Any]) -> None:
    expected = parse_duration(str(entry["lookback"]))
    assert isinstance(expected, timedelta)

    query = parsed(entry["expr"])

    assert lookback(query) == Lookback(expected)


def test_prometheus_itself_accepts_every_reprinted_expression(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is installed by scripts/setup"
    rules = [
        {"alert": f"A{index}", "expr": render(parsed(entry["expr"]), None)}
        for index, entry in enumerate(ENTRIES)
    ]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "corpus", "rules": rules}]}))

    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout
