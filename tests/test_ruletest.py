"""`watcher test`: rule unit tests against a real Prometheus (backfilled by promtool).

Fixtures are in tests/fixtures/ruletests: `*.good.test.yaml` pass, `*.fail.test.yaml` fail with
the lines of their `.fail.expected`, `*.bad.test.yaml` give the findings of their `.bad.expected`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.prometheus import binaries_missing
from tests.support.services import require
from watcher.cli import main
from watcher.ruletest import prometheus as ruletest_prometheus
from watcher.ruletest.load import load_test_file
from watcher.ruletest.notation import NotationError, SeriesId, parse_series, parse_values
from watcher.ruletest.runner import BASE_TIME, LOOKBACK, case_starts, openmetrics_text, query_reach, run_file

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "ruletests"
GOOD = sorted(FIXTURES.glob("*.good.test.yaml"))
BAD = sorted(FIXTURES.glob("*.bad.test.yaml"))
EXAMPLE = REPO / "rule-tests" / "fraud-detector.test.yaml"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("WATCHER_CONFIG", raising=False)


@pytest.fixture
def prometheus_binaries() -> None:
    missing = binaries_missing()
    if missing is not None:
        require("prometheus", missing)


@pytest.fixture
def no_prometheus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither on PATH nor where Debian puts it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(ruletest_prometheus, "DEBIAN_BIN", tmp_path)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = main(["test", *argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO))


def _expected(path: Path, suffix: str) -> list[str]:
    return path.with_name(path.name.replace(".test.yaml", suffix)).read_text().splitlines()


# --- notation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "points"),
    [
        ("1 2.5 -3 1e3", [1.0, 2.5, -3.0, 1000.0]),
        ("0+10x3", [0.0, 10.0, 20.0, 30.0]),  # n+1 values, as promtool
        ("5-1x2", [5.0, 4.0, 3.0]),
        ("7x2", [7.0, 7.0, 7.0]),
        ("1 _ _x2 2", [1.0, None, None, None, 2.0]),  # _xn is n gaps
        ("0+1x0", [0.0]),
        ("  1\t2\n3 ", [1.0, 2.0, 3.0]),
    ],
)
def test_values_expand_as_promtool_does(text: str, points: list[float | None]) -> None:
    assert parse_values(text) == points


def test_special_values_are_numbers() -> None:
    parsed = parse_values("Inf -Inf NaN")
    assert isinstance(parsed, list)
    assert parsed[:2] == [float("inf"), float("-inf")]
    assert parsed[2] != parsed[2]  # NaN


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no values: write e.g. '0+10x20' or '1 2 3'"),
        ("1 +x3", "value 2 '+x3': expected a number, a+bxn, a-bxn, axn, _ or _xn"),
        ("1 2 stale", "value 3 'stale': stale markers cannot be backfilled into Prometheus blocks"),
        ("0+1x100000", "value 1 '0+1x100000': x100000 repeats more than 100000 times"),
        ("1x60000 1x60000", "more than 100000 values"),
    ],
)
def test_bad_values_say_which_token(text: str, message: str) -> None:
    parsed = parse_values(text)
    assert isinstance(parsed, NotationError)
    assert parsed.message.startswith(message)


@pytest.mark.parametrize(
    ("text", "series"),
    [
        ("up", SeriesId("up", ())),
        ('m{b="2", a="1",}', SeriesId("m", (("a", "1"), ("b", "2")))),
        ("m{ a = '1' }", SeriesId("m", (("a", "1"),))),
        ('{__name__="m", le="+Inf"}', SeriesId("m", (("le", "+Inf"),))),
        ('m{a="x\\"y\\\\z\\n"}', SeriesId("m", (("a", 'x"y\\z\n'),))),
    ],
)
def test_series_are_read_as_promql_writes_them(text: str, series: SeriesId) -> None:
    assert parse_series(text) == series


def test_series_render_as_openmetrics_with_escapes() -> None:
    assert SeriesId("m", (("a", 'x"y\\z\n'),)).openmetrics() == 'm{a="x\\"y\\\\z\\n"}'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("m{a=1}", "label 'a': expected a quoted value"),
        ('m{a="1"', "expected ',' or '}' after label 'a'"),
        ('m{a="1}', "label 'a': the quoted value is not closed"),
        ('m{a="1", a="2"}', "label 'a' is given twice"),
        ('{a="1"}', "a series needs a metric name"),
        ('m{__name__="n"}', "the metric name is given twice"),
        ("m x", "unexpected 'x' at character 3"),
        ('m{a="\\q"}', "label 'a': unknown escape"),
    ],
)
def test_bad_series_say_why(text: str, message: str) -> None:
    parsed = parse_series(text)
    assert isinstance(parsed, NotationError)
    assert parsed.message.startswith(message)


# --- layout of the tests in time ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "reach"),
    [
        ("max(x)", timedelta(0)),
        ("rate(x[5m])", timedelta(minutes=5)),
        ("rate(x[5m] offset 1h)", timedelta(hours=1, minutes=5)),
        ("max_over_time(rate(x[1m])[10m:30s])", timedelta(minutes=11, seconds=30)),
        ("sum(rate(a[1m])) / sum(rate(b[15m] offset -2h))", timedelta(hours=2, minutes=16)),
    ],
)
def test_query_reach_adds_up_ranges_subqueries_and_offsets(query: str, reach: timedelta) -> None:
    assert query_reach(query) == reach


def test_tests_start_whole_days_apart_beyond_what_a_query_reaches() -> None:
    loaded = load_test_file(FIXTURES / "demo.good.test.yaml").test_file
    assert loaded is not None
    starts = case_starts(loaded)
    assert starts[0] == BASE_TIME
    for case, start, following in zip(loaded.cases, starts, starts[1:], strict=False):
        gap = following - start
        assert gap % timedelta(days=1) == timedelta(0)
        assert gap > case.end + timedelta(minutes=1) + LOOKBACK  # the demo rules use [1m]


def test_openmetrics_keeps_each_series_together_in_time_order(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(
        "model: m\nrules:\n  - {name: r, signal: custom, prometheus: max(b), above: 1}\n"
    )
    test_file = tmp_path / "t.test.yaml"
    series = "- {series: 'b', values: '1 _ NaN'}\n- {series: 'a{x=\"1\"}', values: '2'}"
    case = "input_series:\n" + textwrap.indent(series, "  ") + "\nexpected_incidents: [{at: 0s}]"
    test_file.write_text(
        "rule_files: rules.yaml\ntests:\n"
        + "  - name: one\n"
        + textwrap.indent(case, "    ")
        + "\n  - name: two\n"
        + textwrap.indent(case, "    ")
    )
    loaded = load_test_file(test_file)
    assert loaded.findings == []
    assert loaded.test_file is not None
    first, second = (int(start.timestamp()) for start in case_starts(loaded.test_file))
    assert openmetrics_text(loaded.test_file, case_starts(loaded.test_file)) == "".join(
        [
            f'a{{x="1"}} 2.0 {first}.000\n',
            f'a{{x="1"}} 2.0 {second}.000\n',
            f"b 1.0 {first}.000\n",
            f"b NaN {first + 120}.000\n",
            f"b 1.0 {second}.000\n",
            f"b NaN {second + 120}.000\n",
            "# EOF\n",
        ]
    )


# --- findings ----------------------------------------------------------------------------------


def test_there_are_bad_fixtures_for_the_schema_the_semantics_and_the_files() -> None:
    assert len(BAD) >= 5


@pytest.mark.parametrize("path", BAD, ids=lambda path: path.name)
def test_each_bad_test_file_exits_1_with_positioned_findings(
    capsys: pytest.CaptureFixture[str], path: Path
) -> None:
    code, out, _ = _run(capsys, _shown(path))
    expected = _expected(path, ".expected")
    count = len(expected)
    assert code == 1
    assert out == [*expected, f"0 tests, 0 passed, 0 failed, {count} finding{'s' if count > 1 else ''}"]


def test_an_unreadable_test_file_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "nowhere.test.yaml")
    assert code == 2
    assert out[0] == "nowhere.test.yaml:1:1: cannot read file: No such file or directory"


def test_no_test_file_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys)[0] == 2


def test_an_unreadable_configuration_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "--config", "nowhere.yaml", _shown(FIXTURES / "accuracy.good.test.yaml"))
    assert code == 2
    assert "no readable configuration at nowhere.yaml" in err


# --- runs that need no Prometheus: SQL rules given their values --------------------------------


@pytest.mark.usefixtures("no_prometheus")
def test_sql_rules_given_values_run_without_prometheus(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, _shown(FIXTURES / "accuracy.good.test.yaml"))
    assert (code, out) == (0, ["2 tests, 2 passed, 0 failed"])


@pytest.mark.usefixtures("no_prometheus")
def test_the_named_configuration_sets_the_default_interval(capsys: pytest.CaptureFixture[str]) -> None:
    needs_config = _shown(FIXTURES / "needs-config.test.yaml")
    assert _run(capsys, _shown(FIXTURES / "config.good.test.yaml"))[:2] == (0, ["1 test, 1 passed, 0 failed"])
    code, out, _ = _run(capsys, needs_config)
    assert code == 1
    assert out == [
        f'{needs_config}: test "the configuration\'s interval applies": at 40s: expected defaults/accuracy '
        "firing, got pending (since 0s, last evaluated at 30s, value 0.5 < 0.9)",
        "1 test, 0 passed, 1 failed",
    ]
    config = _shown(FIXTURES / "watcher.yaml")
    assert _run(capsys, "--config", config, needs_config)[:2] == (0, ["1 test, 1 passed, 0 failed"])


@pytest.mark.usefixtures("no_prometheus")
def test_without_prometheus_promql_tests_fail_and_say_why(capsys: pytest.CaptureFixture[str]) -> None:
    path = _shown(FIXTURES / "demo.good.test.yaml")
    code, out, _ = _run(capsys, path)
    assert code == 1
    assert out[0].startswith(f"{path}: cannot run its 5 tests: 'prometheus' is neither on PATH nor in ")
    assert out[-1] == "5 tests, 0 passed, 5 failed"


# --- runs against a real Prometheus ------------------------------------------------------------

integration = pytest.mark.integration


@integration
@pytest.mark.usefixtures("prometheus_binaries")
def test_the_good_fixtures_pass(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, *(_shown(path) for path in GOOD))
    assert (code, out) == (0, ["8 tests, 8 passed, 0 failed"])


@integration
@pytest.mark.usefixtures("prometheus_binaries")
def test_wrong_expectations_fail_naming_time_rule_expected_and_got(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = FIXTURES / "wrong.fail.test.yaml"
    code, out, err = _run(capsys, _shown(path))
    assert code == 1
    assert out == [*_expected(path, ".expected"), "2 tests, 1 passed, 1 failed"]
    assert "demo/accuracy is a sql rule and no test gives its input_values: it is not evaluated" in err


FOR_RULES = """\
model: m
rules:
  - {name: for-0s, signal: custom, prometheus: max(depth), above: 100, every: 15s}
  - {name: for-15s, signal: custom, prometheus: max(depth), above: 100, every: 15s, for: 15s}
  - {name: for-1m, signal: custom, prometheus: max(depth), above: 100, every: 15s, for: 1m}
  - {name: gap, signal: custom, prometheus: 'max(rate(served[1m]))', above: 100, every: 15s, for: 2m}
"""


def _state_test(name: str, series: str, states: list[tuple[str, str, str]]) -> str:
    expected = "".join(
        f"      - {{at: {at}, rule: m/{rule}, state: {state}}}\n" for at, rule, state in states
    )
    return (
        f"  - name: {name}\n    interval: 15s\n    input_series:\n      - {series}\n"
        f"    expected_states:\n{expected}"
    )


def _run_states(tmp_path: Path, series: str, states: list[tuple[str, str, str]]) -> list[str]:
    (tmp_path / "rules.yaml").write_text(FOR_RULES)
    test_file = tmp_path / "boundaries.test.yaml"
    test_file.write_text("rule_files: [rules.yaml]\ntests:\n" + _state_test("states", series, states))
    loaded = load_test_file(test_file)
    assert loaded.findings == []
    assert loaded.test_file is not None
    result = run_file(loaded.test_file)
    assert result.not_run is None
    return result.cases[0].failures


# Over 100 from 30s on: each rule fires on the first evaluation `for` after 30s, not one before.
DEPTH = "{series: depth, values: '50 50 200x10'}"


@integration
@pytest.mark.usefixtures("prometheus_binaries")
def test_rules_fire_exactly_when_for_is_over(tmp_path: Path) -> None:
    states = [
        ("15s", "for-0s", "inactive"),
        ("30s", "for-0s", "firing"),
        ("30s", "for-15s", "pending"),
        ("45s", "for-15s", "firing"),
        ("1m15s", "for-1m", "pending"),
        ("1m30s", "for-1m", "firing"),
    ]
    assert _run_states(tmp_path, DEPTH, states) == []


@integration
@pytest.mark.usefixtures("prometheus_binaries")
def test_one_evaluation_early_is_still_pending(tmp_path: Path) -> None:
    failures = _run_states(tmp_path, DEPTH, [("1m15s", "for-1m", "firing"), ("30s", "for-15s", "firing")])
    assert failures == [
        "at 30s: expected m/for-15s firing, got pending (since 30s, value 200 > 100)",
        "at 1m15s: expected m/for-1m firing, got pending (since 30s, value 200 > 100)",
    ]


@integration
@pytest.mark.usefixtures("prometheus_binaries")
def test_missing_samples_give_no_data_not_a_breach_nor_a_recovery(tmp_path: Path) -> None:
    # 1000 a second, no sample from 1m to 2m45s: rate() over [1m] needs two samples in its range.
    # Pending from 15s; `for: 2m` is over at 2m15s, but no data neither fires nor resolves.
    served = "{series: served, values: '0+15000x3 _x8 180000+15000x4'}"
    (tmp_path / "rules.yaml").write_text(FOR_RULES)
    test_file = tmp_path / "gap.test.yaml"
    expectations = textwrap.dedent(
        """\
            expected_states:
              - {at: 0s, rule: m/gap, state: inactive, outcome: no_data}
              - {at: 1m30s, rule: m/gap, state: pending, outcome: breach}
              - {at: 1m45s, rule: m/gap, state: pending, outcome: no_data}
              - {at: 3m, rule: m/gap, state: pending, outcome: no_data}
              - {at: 3m15s, rule: m/gap, state: firing, outcome: breach}
        """
    )
    test_file.write_text(
        "rule_files: [rules.yaml]\ntests:\n  - name: gap\n    interval: 15s\n"
        f"    input_series: [{served}]\n" + textwrap.indent(expectations, "    ")
    )
    loaded = load_test_file(test_file)
    assert loaded.test_file is not None, loaded.findings
    result = run_file(loaded.test_file)
    assert [case.failures for case in result.cases] == [[]]


@integration
@pytest.mark.usefixtures("prometheus_binaries")
def test_the_example_rule_tests_pass_through_the_installed_command() -> None:
    watcher = Path(sys.executable).parent / "watcher"
    done = subprocess.run(
        [str(watcher), "test", str(EXAMPLE.relative_to(REPO))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["7 tests, 7 passed, 0 failed"]
    assert "fraud-detector/input-drift is a drift rule" in done.stderr
