"""Evaluation groups as scheduler jobs: the Prometheus rules of one interval, from every file, in
shards of one request's worth keyed by a hash of their ids; each SQL or drift rule a job of its
own; kept in step with reloads, and with the groups a replica holds."""

from __future__ import annotations

import random
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from tests.support.daemon import wait_for
from watcher.engine.bind import RuntimeRule, build_runtime_rules
from watcher.engine.ruleset import evaluation_groups, queries_of
from watcher.engine.scheduling import GROUP_JOB, GroupJobs
from watcher.metrics import Metrics
from watcher.rules.config import load_config
from watcher.rules.rulefmt import load_rules
from watcher.sources.prometheus_batch import MAX_BATCH_QUERIES

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
MIN_SAMPLES = "min_samples: {prometheus: 'sum(up)', at_least: 1}"


def rule(name: str, every: str = "15s", source: str = "prometheus: sum(up)", extra: str = "") -> str:
    text = f"  - name: {name}\n    signal: latency\n    {source}\n    above: 1\n    every: {every}\n"
    return text + (f"    {extra}\n" if extra else "")


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
        evaluation: {timeout: 500ms}
        """)
    )
    config = load_config(root / "watcher.yaml").config
    assert config is not None
    result = load_rules(config)
    assert not result.findings, [str(f) for f in result.findings]
    return build_runtime_rules(result.rules, config)


def one_rule_files(models: range, extra: str = "") -> dict[str, str]:
    """One file per model with one threshold rule, as ops teams lay them out."""
    return {f"m{i:04d}.yaml": f"model: m{i:04d}\nrules:\n" + rule("latency", extra=extra) for i in models}


def job_ids(scheduler: BackgroundScheduler) -> set[str]:
    return {job.id.removeprefix(GROUP_JOB) for job in scheduler.get_jobs()}


def where(groups: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {rule_id: key for key, members in groups.items() for rule_id in members}


def test_prometheus_rules_of_every_file_share_shards_of_one_request_and_sql_rules_have_their_own(
    tmp_path: Path,
) -> None:
    sql = "sql: {url: 'sqlite:///x.db', query: 'SELECT 1 AS value'}"
    files = one_rule_files(range(150)) | one_rule_files(range(150, 230), extra=MIN_SAMPLES)
    files["a.yaml"] = "model: a\nrules:\n" + rule("slow", "1m") + rule("db", source=sql)
    runtime = load(tmp_path, files)

    groups = evaluation_groups(runtime)

    assert where(groups).keys() == runtime.keys()  # every rule in exactly one group
    assert sum(len(members) for members in groups.values()) == len(runtime)
    assert groups["rule:a/db"] == ("a/db",) and groups["prometheus/1m/0"] == ("a/slow",)
    shards = {key: members for key, members in groups.items() if key.startswith("prometheus/15s/")}
    # 150 rules asking one query and 80 asking two (their min_samples query): 310 queries.
    assert len(shards) == 6
    for members in shards.values():
        assert sum(queries_of(runtime[rule_id].rule) for rule_id in members) <= MAX_BATCH_QUERIES
        assert len({runtime[rule_id].rule.file for rule_id in members}) > 10  # across files
        assert list(members) == sorted(members)


def test_a_new_file_moves_few_rules_and_every_replica_computes_the_same_groups(tmp_path: Path) -> None:
    before = evaluation_groups(load(tmp_path / "before", one_rule_files(range(500))))
    runtime = load(tmp_path / "after", one_rule_files(range(501)))
    after = evaluation_groups(runtime)
    shuffled = list(runtime.items())
    random.Random(7).shuffle(shuffled)

    assert evaluation_groups(dict(shuffled)) == after  # the order files are read in does not matter
    assert after.keys() == before.keys()  # the leases' keys survive the reload
    old, new = where(before), where(after)
    moved = [rule_id for rule_id in old if old[rule_id] != new[rule_id]]
    assert len(moved) <= 5, moved
    grown = evaluation_groups(load(tmp_path / "grown", one_rule_files(range(600))))
    moved = [rule_id for rule_id, key in where(grown).items() if rule_id in old and old[rule_id] != key]
    assert len(moved) < 500 // 4, len(moved)  # two more shards: their share moves, little else


def test_a_replica_schedules_the_groups_it_holds_under_the_keys_of_every_rule(tmp_path: Path) -> None:
    runtime = load(tmp_path, one_rule_files(range(200)))
    groups = evaluation_groups(runtime)
    held = dict(sorted(groups.items())[:2])
    mine = {rule_id: runtime[rule_id] for members in held.values() for rule_id in members}
    scheduler = BackgroundScheduler(timezone="UTC")
    jobs = GroupJobs(scheduler, lambda key: None, Metrics())

    jobs.sync(mine, NOW, held)

    assert job_ids(scheduler) == set(held)  # grouping only its own rules would shard them anew
    for key, members in held.items():
        assert jobs.members(key) == members


def test_a_reload_keeps_a_groups_job_and_drops_what_went_away(tmp_path: Path) -> None:
    sql = "sql: {url: 'sqlite:///x.db', query: 'SELECT 1 AS value'}"
    runtime = load(
        tmp_path,
        {
            "a.yaml": "model: a\nrules:\n" + rule("one") + rule("two") + rule("db", source=sql),
            "b.yaml": "model: b\nrules:\n" + rule("one") + rule("slow", "1m"),
        },
    )
    scheduler = BackgroundScheduler(timezone="UTC")
    metrics = Metrics()
    jobs = GroupJobs(scheduler, lambda key: None, metrics)
    jobs.sync(runtime, NOW)
    assert job_ids(scheduler) == {"prometheus/15s/0", "prometheus/1m/0", "rule:a/db"}
    assert jobs.members("prometheus/15s/0") == ("a/one", "a/two", "b/one")
    for rule_id in runtime:
        metrics.missed_run(rule_id)
    kept = scheduler.get_job(f"{GROUP_JOB}prometheus/15s/0")
    database = scheduler.get_job(f"{GROUP_JOB}rule:a/db")

    jobs.sync(
        load(
            tmp_path,
            {"a.yaml": "model: a\nrules:\n" + rule("one") + rule("three") + rule("db", "1m", source=sql)},
        ),
        NOW + timedelta(hours=1),
    )

    assert job_ids(scheduler) == {"prometheus/15s/0", "rule:a/db"}
    assert scheduler.get_job(f"{GROUP_JOB}prometheus/15s/0").next_run_time == kept.next_run_time
    assert jobs.members("prometheus/15s/0") == ("a/one", "a/three")
    # The SQL rule's interval changed: its job was placed again, at its new interval.
    assert scheduler.get_job(f"{GROUP_JOB}rule:a/db").trigger.interval == timedelta(minutes=1)
    assert database.trigger.interval == timedelta(seconds=15)
    exported = metrics.render().decode()
    assert 'rule="b/one"' not in exported and 'rule="a/two"' not in exported
    assert 'rule="a/one"' in exported


@pytest.fixture
def running() -> Iterator[BackgroundScheduler]:
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
    scheduler.start()
    try:
        yield scheduler
    finally:
        scheduler.shutdown(wait=False)


def test_a_late_group_counts_a_missed_run_for_each_of_its_rules(
    tmp_path: Path, running: BackgroundScheduler
) -> None:
    files = {f"m{i}.yaml": f"model: m{i}\nrules:\n" + rule("latency", every="1s") for i in range(3)}
    runtime = load(tmp_path, files)
    release = threading.Event()
    metrics = Metrics()

    def hang(key: str) -> None:  # the group's run outlasts its interval
        release.wait(30)

    jobs = GroupJobs(running, hang, metrics)
    try:
        jobs.sync(runtime, datetime.now(UTC))

        def missed_by_each() -> bool:
            lines = metrics.render().decode().splitlines()
            missed = [line for line in lines if line.startswith("watcher_evaluations_missed_total{")]
            return all(
                any(f'rule="{rule_id}"' in line and not line.endswith(" 0.0") for line in missed)
                for rule_id in runtime
            )

        wait_for(missed_by_each, what="a missed run counted for each rule of the late group", timeout=20)
    finally:
        release.set()


def family_files(models: range) -> dict[str, str]:
    """One file per model, each the same rule but for the model: one family of queries."""
    return {
        f"f{i:04d}.yaml": f"model: f{i:04d}\nrules:\n"
        + rule("latency", source=f"prometheus: 'sum(rate(x{{model=\"f{i:04d}\"}}[5m]))'")
        for i in models
    }


def test_the_rules_of_one_family_are_placed_together_by_up_to_500(tmp_path: Path) -> None:
    runtime = load(tmp_path, family_files(range(1001)) | one_rule_files(range(100)))

    groups = evaluation_groups(runtime)

    assert where(groups).keys() == runtime.keys()
    family = [f"f{i:04d}/latency" for i in range(1001)]
    shards_of_family = {where(groups)[rule_id] for rule_id in family}
    # Three units (500, 500, 1 rule), each asked as one arm, each whole in one shard.
    for chunk in (family[:500], family[500:1000], family[1000:]):
        assert len({where(groups)[rule_id] for rule_id in chunk}) == 1
    assert len(shards_of_family) <= 3
    lone = [f"m{i:04d}/latency" for i in range(100)]  # `sum(up)`: no label to factor on
    assert len({where(groups)[rule_id] for rule_id in lone}) > 1
    assert evaluation_groups(dict(reversed(list(runtime.items())))) == groups
