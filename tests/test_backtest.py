"""`watcher backtest` against a real Prometheus backfilled with a recorded episode (see
tests/backtest_stand.py): a bad release, a blip shorter than `for`, and a recovery."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.backtest_stand import BLIP, T0, Stand, episode_stand, iso
from watcher.backtest.clock import TimeRange
from watcher.backtest.history import VersionHistory, read_versions_csv
from watcher.backtest.rangedata import RangeFetcher
from watcher.backtest.replay import ReplayEngine, ReplayPlan, ReplayResult, fetch_history, replay
from watcher.backtest.report import report_lines
from watcher.cli import main
from watcher.rules.config import load_config
from watcher.rules.rulefmt import load_rules

pytestmark = pytest.mark.integration

WINDOW = ["--from", iso(T0), "--to", iso(T0 + timedelta(minutes=150))]


@pytest.fixture(scope="module")
def stand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stand]:
    yield from episode_stand(tmp_path_factory.mktemp("backtest"))


def backtest(stand: Stand, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["backtest", "--config", str(stand.config), "--versions", str(stand.versions), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_bad_release_would_be_rolled_back_to_the_known_good_version_and_the_blip_ignored(
    stand: Stand, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = backtest(stand, capsys, *WINDOW)

    assert code == 0, err
    lines = out.strip().splitlines()
    incidents = [line for line in lines if line.startswith("fraud-prod ")]
    # Bad from T0+70m; `for: 3m` at 30 s steps: pending at 70:00, firing at 73:00.
    assert incidents == [
        f"fraud-prod v2  opened {iso(T0 + timedelta(minutes=73))}  resolved "
        f"{iso(T0 + timedelta(minutes=90))}  fraud/error-rate peak 0.2 (above 0.05)  rollback v2 -> v1"
    ]
    assert lines[-1].startswith("1 incidents, 1 rollbacks, 0 approvals, 0 notifications")
    assert "first breach to action: 3m on average, 3m at most" in lines[-1]
    assert not stand.acted.exists()  # the target's command never ran
    assert not (stand.directory / "watcher.db").exists()  # the user's database was not created


def test_a_shorter_for_reports_the_blip_too(stand: Stand, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = backtest(stand, capsys, *WINDOW, "--set", "for=1m", "--json")

    assert code == 0, err
    document = json.loads(out)
    assert document["set"] == "for=1m"
    baseline, variant = document["baseline"], document["variant"]
    assert [i["version"] for i in baseline["incidents"]] == ["v2"]
    blip, release = variant["incidents"]
    assert (blip["version"], blip["opened_at"], blip["would"]) == (
        "v1",
        iso(BLIP[0] + timedelta(minutes=1)),
        "notify",
    )
    assert blip["resolved_at"] == iso(T0 + timedelta(minutes=32))
    # v1 had an incident in its period, so it is no longer known-good: the adapter's previous.
    assert (release["version"], release["would"], release["rollback"]["from"], release["rollback"]["to"]) == (
        "v2",
        "rollback",
        "v2",
        "v1",
    )
    assert release["opened_at"] == iso(T0 + timedelta(minutes=71))
    assert variant["totals"]["incidents"] == 2 and variant["totals"]["rollbacks"] == 1


def test_json_has_the_incident_fields_and_totals(stand: Stand, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = backtest(stand, capsys, *WINDOW, "--json")

    assert code == 0
    document = json.loads(out)
    assert set(document) >= {"incidents", "totals", "from", "to"}
    [incident] = document["incidents"]
    for field in (
        "id",
        "rule",
        "model",
        "target",
        "status",
        "opened_at",
        "resolved_at",
        "version",
        "evidence",
    ):
        assert field in incident
    assert incident["would"] == "rollback"
    assert incident["rollback"]["from"] == "v2" and incident["rollback"]["to"] == "v1"
    assert incident["rules"] == [{"rule": "fraud/error-rate", "peak": 0.2, "above": 0.05}]
    assert incident["evidence"]["value"] == 0.2
    assert incident["first_breach_at"] == iso(T0 + timedelta(minutes=70))
    assert document["totals"]["incidents"] == 1 and document["totals"]["rollbacks"] == 1
    assert document["totals"]["first_breach_to_action_seconds"] == {"mean": 180.0, "max": 180.0}


def test_the_side_by_side_text_shows_both_replays(stand: Stand, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = backtest(stand, capsys, *WINDOW, "--set", "for=1m")

    assert code == 0
    header = out.splitlines()[0]
    assert "baseline (as written)" in header and "variant (for=1m)" in header
    assert out.count(" | ") >= 3


def test_the_plot_is_one_self_contained_page_with_a_chart_per_rule(
    stand: Stand, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    page = tmp_path / "backtest.html"
    code, _, _ = backtest(stand, capsys, *WINDOW, "--plot", str(page))

    assert code == 0
    text = page.read_text()
    assert text.count("<svg") == 1
    assert "<script" not in text and "<link" not in text
    assert not re.search(r"(src|href)=", text)  # nothing fetched from anywhere
    assert "would roll back to v1" in text and 'class="firing"' in text and 'class="pending"' in text
    assert 'class="threshold"' in text and ">v2<" in text  # the release is marked


def test_bad_usage_exits_2(stand: Stand, capsys: pytest.CaptureFixture[str]) -> None:
    assert backtest(stand, capsys, "--from", "yesterday")[0] == 2
    assert backtest(stand, capsys, "--from", iso(T0), "--to", iso(T0 - timedelta(hours=1)))[0] == 2
    assert backtest(stand, capsys, *WINDOW, "--set", "colour=red")[0] == 2
    assert backtest(stand, capsys, *WINDOW, "--step", "fast")[0] == 2
    assert main(["backtest", "--config", str(stand.config)]) == 2  # --from is required


def test_an_unknown_rule_exits_1_naming_it(stand: Stand, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = backtest(stand, capsys, "fraud/no-such-rule", *WINDOW)

    assert code == 1
    assert "fraud/no-such-rule" in err


def test_a_rule_whose_query_prometheus_refuses_exits_1_naming_it(
    stand: Stand, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    refused = tmp_path / "refused.yaml"
    # Parses, but a range query of a range vector is refused by Prometheus.
    refused.write_text(
        "model: odd\ntarget: fraud-prod\nrules:\n  - name: ratio\n    signal: custom\n"
        "    prometheus: model_error_ratio[5m]\n    above: 1\n"
    )
    code, _, err = backtest(stand, capsys, str(refused), *WINDOW)

    assert code == 1, err
    assert "odd/ratio" in err


def test_a_selected_rule_replays_alone_at_the_step_asked(
    stand: Stand, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = backtest(stand, capsys, "fraud/error-rate", *WINDOW, "--step", "1m", "--json")

    assert code == 0
    document = json.loads(out)
    # 151 moments at 1m steps; from the would-be rollback (73m) until the record's own recovery
    # (90m) the recorded data is v2's while the replay has v1 live: those 16 are not judged.
    assert document["evaluations"] == 151 - 16
    assert document["unjudged"] == {"fraud/error-rate": 16}
    [incident] = document["incidents"]
    assert incident["opened_at"] == iso(T0 + timedelta(minutes=73))


def test_the_replay_reads_rules_at_rest_without_changing_what_it_finds(
    stand: Stand, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rule at rest on an ok answer is stepped outside the tick (ReplayEngine.pass_at_rest): the
    replay with every evaluation through `tick_group` finds exactly the same."""
    config = load_config(stand.config).config
    assert config is not None and config.prometheus is not None
    history = read_versions_csv(stand.versions)
    assert isinstance(history, VersionHistory)
    window = TimeRange(T0, T0 + timedelta(minutes=150))

    def run() -> ReplayResult:
        assert config is not None and config.prometheus is not None
        plan = ReplayPlan(load_rules(config).rules, window, timedelta(seconds=30), history)
        fetcher = RangeFetcher(config.prometheus.url, {}, config.evaluation.timeout)
        assert fetch_history(plan, fetcher) == []
        return replay(plan, config, fetcher)

    shortcut = run()
    monkeypatch.setattr(ReplayEngine, "pass_at_rest", lambda *_: None)
    full = run()

    assert shortcut.evaluations == full.evaluations == 301 - 33  # rolled back at 73m, recorded at 90m
    assert shortcut.traces == full.traces
    assert [i.id for i in shortcut.incidents] == [i.id for i in full.incidents] == [1]
    assert _without_intent_ids(shortcut) == _without_intent_ids(full)  # intent ids are random
    assert shortcut.rollbacks == full.rollbacks
    assert report_lines(shortcut) == report_lines(full)


def _without_intent_ids(result: ReplayResult) -> list[tuple[object, ...]]:
    return [
        (event.at, event.kind, event.rule_id, event.from_version, event.to_version, detail)
        for events in result.timelines.values()
        for event in events
        for detail in [{k: v for k, v in event.detail.items() if k != "intent"}]
    ]
