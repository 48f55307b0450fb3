"""Whatever a file holds, the checker answers with rules or findings, never a crash, and every
finding points inside the file."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_config import FIXTURE_ENV, RULES_CONFIG, STAND_IN_ADAPTERS, load_fixture_config
from watcher.rules.config import WatcherConfig, load_config
from watcher.rules.findings import Finding
from watcher.rules.rulefmt import load_rule_file

_CONFIG = load_fixture_config(RULES_CONFIG).config
assert _CONFIG is not None
CONFIG: WatcherConfig = _CONFIG

RULE_KEYS = [
    "name", "signal", "target", "prometheus", "sql", "drift", "above", "below", "for", "keep_firing_for",
    "every", "action", "severity", "on_no_data", "min_samples", "summary", "labels", "url", "query",
    "window", "reference", "current", "columns", "method", "threshold", "at_least",
]  # fmt: skip
FILE_KEYS = ["model", "target", "labels", "rules"]
CONFIG_KEYS = [
    "database", "rules", "evaluation", "every", "timeout", "prometheus", "url", "headers", "slack", "token",
    "signing_secret", "channel", "http", "listen", "targets", "adapter", "safety", "auto_rollback",
    "cooldown", "max_rollbacks", "verify_after", "stable_after", "fraud-prod", "mlflow", "tracking_uri",
]  # fmt: skip
# What YAML counts as a line break (next-line and the Unicode separators too).
YAML_LINE_BREAK = "\r\n|[\r\n\x85\u2028\u2029]"
PLAUSIBLE = [
    "latency", "rollback", "approve", "critical", "alert", "5m", "0s", "-1m", "3 per 24h", "fraud-prod",
    "sqlite:///x.db", "SELECT 1 AS value", "data/reference.csv", "{{ value }}", "{{ x.__class__ }}",
    "{% if %}", "${HOME}", "${UNSET_VARIABLE_X}", "$${X}", "xoxb-", "auto", "psi", "127.0.0.1:9460",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(PLAUSIBLE),
)


def structures(keys: list[str]) -> st.SearchStrategy[Any]:
    key = st.one_of(st.sampled_from(keys), st.text(max_size=10))
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(key, children, max_size=6),
        ),
        max_leaves=30,
    )


rule_files = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.sampled_from(["fraud-detector", "bad name", ""]), scalars),
        "target": st.one_of(st.sampled_from(["fraud-prod", "nope"]), scalars),
        "labels": structures(["team"]),
        "rules": st.lists(st.dictionaries(st.sampled_from(RULE_KEYS), structures(RULE_KEYS), max_size=10)),
    },
)


def _check_findings(findings: list[Finding], path: Path, text: str) -> None:
    lines = len(re.split(YAML_LINE_BREAK, text))
    for finding in findings:
        assert finding.file == path
        assert 1 <= finding.line <= lines, finding
        assert finding.column >= 1, finding
        assert finding.message


def _write(directory: str, name: str, content: str | bytes) -> Path:
    path = Path(directory) / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    return path


def _check_rule_text(content: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = _write(directory, "rules.yaml", content)
        result = load_rule_file(path, CONFIG, FIXTURE_ENV)
        assert (result.rule_file is None) == bool(result.findings)
        text = path.read_bytes().decode("utf-8", errors="replace")
        _check_findings(result.findings, path, text)


def _check_config_text(content: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = _write(directory, "watcher.yaml", content)
        result = load_config(path, FIXTURE_ENV, adapters=STAND_IN_ADAPTERS)
        assert (result.config is None) == bool(result.findings)
        _check_findings(result.findings, path, path.read_bytes().decode("utf-8", errors="replace"))


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.text(max_size=400))
def test_arbitrary_text_as_a_rule_file(text: str) -> None:
    _check_rule_text(text.encode("utf-8", errors="surrogatepass"))


@PROPERTY
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_a_rule_file(content: bytes) -> None:
    _check_rule_text(content)


@PROPERTY
@given(rule_files)
def test_yaml_shaped_rule_files(document: dict[str, Any]) -> None:
    _check_rule_text(yaml.safe_dump(document, allow_unicode=True))


@PROPERTY
@given(structures(FILE_KEYS + RULE_KEYS))
def test_arbitrary_structures_as_a_rule_file(document: Any) -> None:
    _check_rule_text(yaml.safe_dump(document, allow_unicode=True))


@PROPERTY
@given(st.text(max_size=400))
def test_arbitrary_text_as_a_configuration(text: str) -> None:
    _check_config_text(text.encode("utf-8", errors="surrogatepass"))


@PROPERTY
@given(structures(CONFIG_KEYS))
def test_arbitrary_structures_as_a_configuration(document: Any) -> None:
    _check_config_text(yaml.safe_dump(document, allow_unicode=True))


@st.composite
def near_valid_rules(draw: st.DrawFn) -> dict[str, Any]:
    """A valid rule, then a few keys added, changed or removed."""
    rule: dict[str, Any] = {
        "name": draw(st.sampled_from(["a", "b", "p99-latency"])),
        "signal": draw(st.sampled_from(["latency", "custom", "accuracy"])),
    }
    source = draw(st.sampled_from(["prometheus", "sql"]))
    rule[source] = "up" if source == "prometheus" else {"url": "sqlite:///a.db", "query": "SELECT 1 AS value"}
    comparison = draw(st.sampled_from(["above", "below"]))
    rule[comparison] = draw(st.one_of(st.integers(-1000, 1000), st.floats(min_value=-1e6, max_value=1e6)))
    optional = {
        "for": st.sampled_from(["0s", "1m", "1h30m"]),
        "every": st.sampled_from(["15s", "1m", "5m"]),
        "action": st.sampled_from(["rollback", "approve", "notify"]),
        "target": st.sampled_from(["fraud-prod", "churn-prod"]),
        "min_samples": st.one_of(st.integers(min_value=0), st.just({"prometheus": "up", "at_least": 3})),
        "summary": st.sampled_from(["{{ value }}", "{{ value | round(2) }} > {{ threshold }}"]),
    }
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True)):
        rule[key] = draw(optional[key])
    for key in draw(st.lists(st.sampled_from(RULE_KEYS), max_size=2, unique=True)):
        rule[key] = draw(scalars)  # a mutation: most make the rule invalid, some do not
    return rule


@PROPERTY
@given(st.lists(near_valid_rules(), max_size=3), st.booleans())
def test_near_valid_rule_files_give_consistent_rules(rules: list[dict[str, Any]], with_target: bool) -> None:
    document: dict[str, Any] = {"model": "fraud-detector", "rules": rules}
    if with_target:
        document["target"] = "fraud-prod"
    with tempfile.TemporaryDirectory() as directory:
        path = _write(directory, "rules.yaml", yaml.safe_dump(document))
        result = load_rule_file(path, CONFIG, FIXTURE_ENV)
        _check_findings(result.findings, path, path.read_text())
        if result.rule_file is None:
            return
        for rule in result.rule_file.rules:
            assert rule.id == f"fraud-detector/{rule.name}"
            assert (rule.above is None) != (rule.below is None)
            assert [rule.prometheus, rule.sql, rule.drift].count(None) == 2
            assert rule.interval > CONFIG.evaluation.timeout
            just_above = math.nextafter(rule.threshold, math.inf)
            just_below = math.nextafter(rule.threshold, -math.inf)
            assert rule.breaches(just_above) is (rule.above is not None)
            assert rule.breaches(just_below) is (rule.below is not None)
            assert not rule.breaches(rule.threshold)
