"""Evaluation groups as scheduler jobs: one job per rule file's Prometheus rules of one interval,
kept in step with reloads."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from watcher.engine.bind import RuntimeRule, build_runtime_rules
from watcher.engine.scheduling import GROUP_JOB, GroupJobs
from watcher.metrics import Metrics
from watcher.rules.config import load_config
from watcher.rules.rulefmt import load_rules

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def rule(name: str, every: str = "15s", source: str = "prometheus: sum(up)") -> str:
    return f"  - name: {name}\n    signal: latency\n    {source}\n    above: 1\n    every: {every}\n"


def load(root: Path, files: dict[str, str]) -> dict[str, RuntimeRule]:
    (root / "rules").mkdir(parents=True, exist_ok=True)
    for old in (root / "rules").glob("*.yaml"):
        old.unlink()
    for name, body in files.items():
        (root / "rules" / name).write_text(body)
    (root / "watcher.yaml").write_text(
        textwrap.dedent("""\
        database: sqlite:///watcher.db
        rules: rules/
        prometheus: {url: "http://127.0.0.1:9"}
        """)
    )
    config = load_config(root / "watcher.yaml").config
    assert config is not None
    result = load_rules(config)
    assert not result.findings, [str(f) for f in result.findings]
    return build_runtime_rules(result.rules, config)


def job_ids(scheduler: BackgroundScheduler) -> set[str]:
    return {job.id.removeprefix(GROUP_JOB) for job in scheduler.get_jobs()}


def test_a_file_is_one_job_per_interval_and_sql_rules_have_their_own(tmp_path: Path) -> None:
    sql = "sql: {url: 'sqlite:///x.db', query: 'SELECT 1 AS value'}"
    runtime = load(
        tmp_path,
        {
            "a.yaml": "model: a\nrules:\n"
            + rule("one")
            + rule("two")
            + rule("slow", "1m")
            + rule("db", source=sql),
            "b.yaml": "model: b\nrules:\n" + rule("one"),
        },
    )
    scheduler = BackgroundScheduler(timezone="UTC")
    jobs = GroupJobs(scheduler, lambda key: None, Metrics())

    jobs.sync(runtime, NOW)

    a, b = tmp_path / "rules" / "a.yaml", tmp_path / "rules" / "b.yaml"
    assert job_ids(scheduler) == {f"file:{a}@15s", f"file:{a}@60s", f"file:{b}@15s", "rule:a/db"}
    assert jobs.members(f"file:{a}@15s") == ("a/one", "a/two")
    slot = jobs.slot(f"file:{a}@15s", timedelta(seconds=15), NOW + timedelta(minutes=5))
    assert slot <= NOW + timedelta(minutes=5) and (NOW + timedelta(minutes=5) - slot) < timedelta(seconds=15)


def test_a_reload_keeps_a_groups_job_and_drops_what_went_away(tmp_path: Path) -> None:
    runtime = load(
        tmp_path,
        {
            "a.yaml": "model: a\nrules:\n" + rule("one") + rule("two"),
            "b.yaml": "model: b\nrules:\n" + rule("one"),
        },
    )
    scheduler = BackgroundScheduler(timezone="UTC")
    metrics = Metrics()
    jobs = GroupJobs(scheduler, lambda key: None, metrics)
    jobs.sync(runtime, NOW)
    for rule_id in runtime:
        metrics.missed_run(rule_id)
    a = tmp_path / "rules" / "a.yaml"
    kept = scheduler.get_job(f"{GROUP_JOB}file:{a}@15s")

    jobs.sync(
        load(tmp_path, {"a.yaml": "model: a\nrules:\n" + rule("one") + rule("three")}),
        NOW + timedelta(hours=1),
    )

    assert job_ids(scheduler) == {f"file:{a}@15s"}
    assert scheduler.get_job(f"{GROUP_JOB}file:{a}@15s").next_run_time == kept.next_run_time  # its place kept
    assert jobs.members(f"file:{a}@15s") == ("a/one", "a/three")
    exported = metrics.render().decode()
    assert 'rule="b/one"' not in exported and 'rule="a/two"' not in exported
    assert 'rule="a/one"' in exported
