"""The local scenario's moving parts: the scripted model service (metrics, SQLite rows, alias
switching), the MLflow registry, Prometheus set-up, child processes, the watcher config, the
timeline and the signed button press. Everything real: MLflow on SQLite, Debian's Prometheus and
promtool, SQLAlchemy over sqlite3, the product's own config loader and Slack request checks.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from scenario import model_service, press, processes, registry, simulation, timeline, watcher_setup
from scenario.progress import Console
from scenario.prometheus_setup import PrometheusFailure, start_prometheus, wait_for_first_data
from scenario.run import ScenarioFailure, prepare_run_dir
from scenario.service_outputs import AnalyticsDb, Metrics, format_ts
from tests.support.services import require

REPO = Path(__file__).resolve().parent.parent
PROMTOOL = Path("/usr/bin/promtool")
PROMETHEUS = Path("/usr/bin/prometheus")
REFERENCE_CSV = REPO / "rules" / "data" / "fraud_reference.csv"
TS_LAYOUT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00:00$")
NOWHERE = "http://127.0.0.1:9/readyz"  # the discard port: nothing answers there
WAIT_S = 60.0  # generous bound for waits on a busy machine; never an assertion on timing


def waited(predicate: object, what: str, timeout_s: float = WAIT_S) -> None:
    assert callable(predicate)
    assert processes.wait_until(predicate, timeout_s=timeout_s, interval_s=0.1), f"never happened: {what}"


# -- SQLite timestamps ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2024, 5, 6, 9, 8, 9, 1, tzinfo=UTC),
    ],
)
def test_stored_ts_is_the_text_sqlite_binds_for_an_aware_utc_datetime(moment: datetime) -> None:
    with sqlite3.connect(":memory:") as connection:
        (bound_by_sqlite3,) = connection.execute("SELECT ?", (moment,)).fetchone()
    with sa.create_engine("sqlite://").connect() as connection:
        bound_by_sqlalchemy = connection.execute(sa.text("SELECT :moment"), {"moment": moment}).scalar_one()
    assert format_ts(moment) == bound_by_sqlite3 == bound_by_sqlalchemy
    assert TS_LAYOUT.match(format_ts(moment))


def test_format_ts_turns_other_zones_into_utc() -> None:
    paris = datetime(2024, 5, 6, 9, 8, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    assert format_ts(paris) == "2024-05-06 07:08:09.000000+00:00"


def test_bound_datetimes_select_exactly_the_rows_of_their_window(tmp_path: Path) -> None:
    """What an SQL rule does: `ts >= :window_start AND ts < :window_end` with aware UTC datetimes."""
    base = datetime(2024, 5, 6, 7, 0, 0, tzinfo=UTC)
    # Rows on whole seconds (no fraction when bound), just before and after them, and far apart.
    offsets = [0, 0.000001, 0.5, 0.999999, 1, 59.999999, 60, 61.25, 3600]
    moments = [base + timedelta(seconds=s) for s in offsets]
    db = AnalyticsDb(tmp_path / "analytics.db")
    sampler = simulation.FeatureSampler(simulation.generated_reference(seed=1, rows=50))
    rng = random.Random(3)
    requests = [
        (simulation.simulate_request(rng, simulation.HEALTHY, sampler, request_id=f"r{i}", version="1"), at)
        for i, at in enumerate(moments)
    ]
    db.record("fraud-detector", requests, [])
    db.close()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'analytics.db'}")
    second, minute = timedelta(seconds=1), timedelta(minutes=1)
    windows = [
        (base, base + second),
        (base + second, base + minute),
        (base + timedelta(microseconds=1), base + minute),
        (base + minute, base + 120 * minute),
        (base - 24 * 60 * minute, base),
    ]
    with engine.connect() as connection:
        for start, end in windows:
            expected = sum(1 for at in moments if start <= at < end)
            for table in ("features", "predictions"):
                ids = {r.request_id for r, at in requests if start <= at < end and r.predicted is not None}
                query = sa.text(
                    f"SELECT count(*) FROM {table} WHERE ts >= :window_start AND ts < :window_end"
                )
                found = connection.execute(query, {"window_start": start, "window_end": end}).scalar_one()
                assert found == (expected if table == "features" else len(ids)), (table, start, end)
    engine.dispose()


# -- the simulated traffic --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "elapsed_s", "expected"),
    [("3", 10.0, "healthy"), ("3", 45.0, "degraded"), ("3", 300.0, "degraded"), ("2", 300.0, "healthy"),
     ("1", 0.0, "healthy")],
)  # fmt: skip
def test_only_the_bad_version_degrades_and_only_after_bad_after(
    version: str, elapsed_s: float, expected: str
) -> None:
    profile = simulation.profile_for(version, bad_version="3", elapsed_s=elapsed_s, bad_after_s=45.0)
    assert profile.name == expected


@dataclass(frozen=True)
class Figures:
    p99_s: float
    error_rate: float
    bad_feedback: float
    accuracy: float
    mean_amount: float


def simulated_figures(
    profile: simulation.Profile, sampler: simulation.FeatureSampler, n: int = 20000
) -> Figures:
    rng = random.Random(11)
    done = [
        simulation.simulate_request(rng, profile, sampler, request_id=str(i), version="3") for i in range(n)
    ]
    latencies = sorted(r.latency_s for r in done)
    verdicts = [r.verdict for r in done if r.verdict is not None]
    answered = [r for r in done if r.predicted is not None]
    return Figures(
        p99_s=latencies[int(0.99 * n)],
        error_rate=sum(r.status is simulation.Status.ERROR for r in done) / n,
        bad_feedback=sum(v is simulation.Verdict.BAD for v in verdicts) / len(verdicts),
        accuracy=sum(r.predicted == r.label for r in answered) / len(answered),
        mean_amount=sum(r.features.amount for r in done) / n,
    )


def reference_sampler() -> simulation.FeatureSampler:
    rows = simulation.load_reference(REFERENCE_CSV) if REFERENCE_CSV.exists() else None
    if rows is None or isinstance(rows, simulation.ReferenceFailure):
        rows = simulation.generated_reference(seed=5)
    return simulation.FeatureSampler(rows)


def test_healthy_and_degraded_traffic_look_as_scripted() -> None:
    sampler = reference_sampler()
    healthy = simulated_figures(simulation.HEALTHY, sampler)
    degraded = simulated_figures(simulation.DEGRADED, sampler)
    assert 0.065 <= healthy.p99_s <= 0.095
    assert 0.35 <= degraded.p99_s <= 0.48
    assert 0.005 <= healthy.error_rate <= 0.015 and 0.085 <= degraded.error_rate <= 0.115
    assert 0.035 <= healthy.bad_feedback <= 0.065 and 0.32 <= degraded.bad_feedback <= 0.38
    assert 0.95 <= healthy.accuracy <= 0.97 and 0.68 <= degraded.accuracy <= 0.72
    assert degraded.mean_amount > 3 * healthy.mean_amount  # the inputs drift


def test_healthy_inputs_are_drawn_like_the_reference_and_drifting_ones_are_not() -> None:
    rows = simulation.generated_reference(seed=2, rows=3000)
    sampler = simulation.FeatureSampler(rows)
    rng = random.Random(4)
    healthy = [sampler.draw(rng, drifting=False) for _ in range(5000)]
    drifting = [sampler.draw(rng, drifting=True) for _ in range(5000)]

    def share(found: list[simulation.Features], category: str) -> float:
        return sum(f.merchant_category == category for f in found) / len(found)

    rare = sampler.rare_category
    assert abs(share(healthy, rare) - share(rows, rare)) < 0.02
    assert share(drifting, rare) > 0.5
    assert set(healthy) <= set(rows)


def test_the_reference_csv_loads_and_a_broken_one_is_a_typed_failure(tmp_path: Path) -> None:
    broken = tmp_path / "broken.csv"
    broken.write_text("amount,colour\n1.0,red\n")
    assert isinstance(simulation.load_reference(broken), simulation.ReferenceFailure)
    assert isinstance(simulation.load_reference(tmp_path / "absent.csv"), simulation.ReferenceFailure)
    if REFERENCE_CSV.exists():
        rows = simulation.load_reference(REFERENCE_CSV)
        assert not isinstance(rows, simulation.ReferenceFailure) and len(rows) > 100


# -- metrics text -----------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_text_is_valid_exposition_format_with_cumulative_buckets() -> None:
    if not PROMTOOL.exists():
        require("promtool", f"{PROMTOOL} not found (Debian package 'prometheus')")
    metrics = Metrics("fraud-detector")
    metrics.ensure_version("2")
    rng = random.Random(1)
    sampler = simulation.FeatureSampler(simulation.generated_reference(seed=1, rows=100))
    for i in range(500):
        metrics.observe(
            simulation.simulate_request(rng, simulation.DEGRADED, sampler, request_id=str(i), version="3")
        )
    text = metrics.render()
    checked = subprocess.run([str(PROMTOOL), "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    samples = parse_metrics(text)
    labels = {"model": "fraud-detector", "version": "3"}
    buckets = [value(samples, "model_request_seconds_bucket", **labels, le=le) for le in
               ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "+Inf")]  # fmt: skip
    assert buckets == sorted(buckets) and buckets[-1] == 500
    assert value(samples, "model_request_seconds_count", **labels) == 500
    ok, error = (value(samples, "model_requests_total", **labels, status=s) for s in ("ok", "error"))
    assert ok + error == 500 and error > 0
    # A version that just went live has its series at zero, so rate() sees them start.
    assert (
        "model_requests_total",
        frozenset({**labels, "version": "2", "status": "error"}.items()),
    ) in samples


# -- the registry ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mlflow_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow-cache")


def test_registry_holds_three_versions_with_champion_on_the_third(tmp_path: Path, mlflow_cache: Path) -> None:
    made = registry.create_registry(tmp_path, cache_dir=mlflow_cache)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=made.tracking_uri, registry_uri=made.tracking_uri)
    versions = client.search_model_versions("name='fraud-detector'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]
    assert all(Path(str(v.source)).is_dir() for v in versions)
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == "3"
    assert registry.champion_version(made) == "3"
    assert list(mlflow_cache.glob("mlflow-*-empty.db")), "the migrated empty store is kept for the next run"


# -- the live service ------------------------------------------------------------------------


@dataclass
class LiveService:
    url: str
    registry: registry.Registry
    db_path: Path
    process: subprocess.Popen[str]

    def metrics(self) -> Samples:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            return parse_metrics(response.read().decode())

    def state(self) -> dict[str, object]:
        return model_service.service_state(self.url)

    def count(self, version: str) -> float:
        return served(self.metrics(), version)

    def wait_for_more(self, version: str, more: int) -> Samples:
        """Metrics once `version` answered `more` requests after now; the metrics of now."""
        now = self.metrics()
        waited(lambda: self.count(version) >= served(now, version) + more, f"{more} requests on v{version}")
        return now


def served(samples: Samples, version: str) -> float:
    return value(samples, "model_request_seconds_count", model="fraud-detector", version=version)


@contextmanager
def running_service(run_dir: Path, cache: Path, *, bad_after_s: float) -> Iterator[LiveService]:
    made = registry.create_registry(run_dir, cache_dir=cache)
    db_path = run_dir / "var" / "analytics.db"
    argv = processes.python_module_argv(
        "scenario.model_service", "--port", "0", "--db", str(db_path), "--tracking-uri", made.tracking_uri,
        "--bad-after", str(bad_after_s), "--rate", "200", "--poll-interval", "0.2", "--label-delay", "0.2",
    )  # fmt: skip
    child = processes.spawn("model-service", argv, cwd=REPO)
    assert child.process.stdout is not None
    first = child.process.stdout.readline()
    found = re.search(r"listening on (http://\S+)", first)
    assert found, f"the service said {first!r}"
    try:
        yield LiveService(found.group(1), made, db_path, child.process)
    finally:
        child.stop()


@pytest.fixture(scope="module")
def live_service(tmp_path_factory: pytest.TempPathFactory, mlflow_cache: Path) -> Iterator[LiveService]:
    with running_service(tmp_path_factory.mktemp("service"), mlflow_cache, bad_after_s=5.0) as service:
        yield service


def latency_share_under(before: Samples, after: Samples, version: str, bound: str) -> tuple[float, float]:
    """(share of requests answered within `bound` seconds, how many) between two scrapes."""
    labels = {"model": "fraud-detector", "version": version}
    under = value(after, "model_request_seconds_bucket", **labels, le=bound) - value(
        before, "model_request_seconds_bucket", **labels, le=bound
    )
    total = value(after, "model_request_seconds_count", **labels) - value(
        before, "model_request_seconds_count", **labels
    )
    return (under / total if total else 0.0), total


def error_share(before: Samples, after: Samples, version: str) -> float:
    labels = {"model": "fraud-detector", "version": version}
    errors = value(after, "model_requests_total", **labels, status="error") - value(
        before, "model_requests_total", **labels, status="error"
    )
    total = sum(value(after, "model_requests_total", **labels, status=s) - value(
        before, "model_requests_total", **labels, status=s) for s in ("ok", "error"))  # fmt: skip
    return errors / total


def test_service_metrics_change_when_the_bad_version_turns_bad(live_service: LiveService) -> None:
    waited(lambda: live_service.count("3") >= 100, "100 requests served by version 3")
    assert live_service.state()["profile"] == "healthy", "bad-after must not have passed yet"
    start: Samples = {}
    healthy = live_service.metrics()
    assert live_service.state()["profile"] == "healthy"
    share, total = latency_share_under(start, healthy, "3", "0.1")
    assert total >= 100 and share >= 0.95
    waited(lambda: live_service.state()["profile"] == "degraded", "version 3 turning bad")
    turned = live_service.wait_for_more("3", 600)
    degraded = live_service.metrics()
    share, total = latency_share_under(turned, degraded, "3", "0.1")
    assert total >= 600 and share <= 0.5
    assert error_share(turned, degraded, "3") >= 0.04


def test_prometheus_scrapes_the_service_every_second(live_service: LiveService, tmp_path: Path) -> None:
    if not PROMETHEUS.exists():
        require("prometheus", f"{PROMETHEUS} not found (Debian package 'prometheus')")
    server = start_prometheus(tmp_path, {"model-service": [live_service.url.removeprefix("http://")]})
    assert not isinstance(server, PrometheusFailure), server
    try:
        assert wait_for_first_data(server, "model-service", timeout_s=WAIT_S)
        result = server.query('sum(model_requests_total{model="fraud-detector"})')
        assert not isinstance(result, PrometheusFailure) and float(result[0]["value"][1]) > 0  # type: ignore[index]
        assert "scrape_interval: 1s" in (tmp_path / "prometheus.yml").read_text()
    finally:
        server.stop()
    assert server.child.process.returncode is not None and not server.child.running()


def test_prometheus_missing_is_a_typed_failure(tmp_path: Path) -> None:
    failure = start_prometheus(tmp_path, {"x": ["127.0.0.1:1"]}, binary=tmp_path / "no-prometheus")
    assert isinstance(failure, PrometheusFailure) and "apt-get install prometheus" in failure.message


def test_service_follows_the_alias_and_back(tmp_path: Path, mlflow_cache: Path) -> None:
    with running_service(tmp_path, mlflow_cache, bad_after_s=0.0) as service:
        waited(lambda: service.state()["profile"] == "degraded", "version 3 bad from the start")
        registry.move_alias(service.registry, "2")
        waited(lambda: service.count("2") > 0, "version 2 serving")
        assert service.state()["version"] == "2" and service.state()["profile"] == "healthy"
        switched = service.wait_for_more("2", 300)
        later = service.metrics()
        assert latency_share_under(switched, later, "2", "0.1")[0] >= 0.9
        assert latency_share_under(switched, later, "3", "0.1")[1] == 0, "version 3 no longer serves"
        registry.move_alias(service.registry, "3")
        waited(lambda: service.state()["version"] == "3", "back on version 3")
        back = service.wait_for_more("3", 300)
        assert latency_share_under(back, service.metrics(), "3", "0.1")[0] <= 0.5
        assert_rows_tell_the_same_story(service)


def assert_rows_tell_the_same_story(service: LiveService) -> None:
    """Predictions, labels and features are in SQLite, and bound datetimes pick the bad stretch."""
    bad_since = datetime.fromisoformat(str(service.state()["bad_since"]))
    engine = sa.create_engine(f"sqlite:///{service.db_path}")
    accuracy = sa.text(
        "SELECT avg(CASE WHEN p.predicted = l.label THEN 1.0 ELSE 0.0 END), count(*) FROM predictions p "
        "JOIN labels l ON l.request_id = p.request_id WHERE p.version = :version AND p.ts >= :window_start"
    )
    with engine.connect() as connection:
        stamps = connection.execute(
            sa.text("SELECT ts FROM predictions UNION SELECT ts FROM features")
        ).scalars()
        assert all(TS_LAYOUT.match(stamp) for stamp in stamps)
        healthy, healthy_n = connection.execute(accuracy, {"version": "2", "window_start": bad_since}).one()
        bad, bad_n = connection.execute(accuracy, {"version": "3", "window_start": bad_since}).one()
    engine.dispose()
    assert healthy_n >= 100 and healthy >= 0.9
    assert bad_n >= 100 and bad <= 0.8


# -- processes -------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_stopping_a_child_stops_what_it_started() -> None:
    child = processes.spawn("shell", ["sh", "-c", "sleep 300 & echo $!; wait"])
    assert child.process.stdout is not None
    grandchild = int(child.process.stdout.readline())
    assert alive(grandchild)
    child.stop(grace_s=5)
    waited(lambda: not alive(grandchild), "the grandchild gone")
    assert not child.running()


def test_children_die_with_the_scenario_even_when_it_is_killed() -> None:
    code = (
        "import time; from scenario.processes import spawn; "
        "print(spawn('s', ['sleep', '300']).pid, flush=True); time.sleep(300)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert alive(child_pid)
    parent.kill()  # SIGKILL: no finally, no atexit can run
    parent.wait()
    waited(lambda: not alive(child_pid), "the orphan gone")


def test_the_supervisor_stops_children_newest_first() -> None:
    supervisor = processes.Supervisor()
    for name in ("first", "second"):
        supervisor.spawn(name, ["sleep", "300"])
    stopped: list[str] = []
    supervisor.stop_all(on_stop=lambda child, _: stopped.append(child.name))
    assert stopped == ["second", "first"] and supervisor.children() == []


# -- the run directory and the daemon's config -----------------------------------------------


def test_a_directory_the_scenario_did_not_make_is_never_wiped(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ScenarioFailure, match="not wiping"):
        prepare_run_dir(tmp_path)
    assert (tmp_path / "precious.txt").exists()
    fresh = tmp_path / "run"
    prepare_run_dir(fresh)
    (fresh / "old.log").write_text("from the last run")
    (fresh / "scenario.pid").unlink()
    prepare_run_dir(fresh)
    assert not (fresh / "old.log").exists()


def test_the_written_config_is_accepted_by_watcher_and_holds_no_secret(
    tmp_path: Path, mlflow_cache: Path
) -> None:
    from watcher.rules.config import load_config

    rules = watcher_setup.copy_rules(REPO / "rules" / "fraud-detector.yaml", tmp_path)
    assert not isinstance(rules, str)
    made = registry.create_registry(tmp_path, cache_dir=mlflow_cache)
    slack = watcher_setup.fake_slack_setup("http://127.0.0.1:9/api/")
    path = watcher_setup.write_watcher_config(
        tmp_path, rules, made, slack, watcher_setup.WatcherPorts("http://127.0.0.1:9090", 9460),
        shortest_every=timedelta(seconds=15), verify_after=timedelta(seconds=75),
    )  # fmt: skip
    text = path.read_text()
    for secret in slack.environment.values():
        assert secret not in text
    result = load_config(path, env={**os.environ, **slack.environment})
    assert result.config is not None and not result.findings, result.findings
    assert (tmp_path / "rules" / "data" / "fraud_reference.csv").exists()


def test_a_missing_daemon_command_is_a_clear_failure(tmp_path: Path) -> None:
    failure = watcher_setup.start_daemon(
        processes.Supervisor(), tmp_path / "watcher.yaml", {}, command=None, ready_url=NOWHERE, attach=print
    )
    assert isinstance(failure, watcher_setup.DaemonFailure) and "pip install -e ." in failure.message


def test_a_daemon_that_exits_at_once_is_a_clear_failure(tmp_path: Path) -> None:
    command = tmp_path / "watcher"
    command.write_text("#!/bin/sh\necho 'watcher: no rules' >&2\nexit 3\n")
    command.chmod(0o755)
    supervisor = processes.Supervisor()
    failure = watcher_setup.start_daemon(
        supervisor,
        tmp_path / "watcher.yaml",
        dict(os.environ),
        command=command,
        ready_url=NOWHERE,
        attach=print,
    )
    supervisor.stop_all()
    assert isinstance(failure, watcher_setup.DaemonFailure) and "exited with code 3" in failure.message


# -- timeline and summary --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ('{"level":"info","logger":"watcher.engine.tick","msg":"evaluated","event":"evaluation",'
         '"rule":"fraud-detector/p99-latency","outcome":"breach","value":0.4123,'
         '"state_from":"inactive","state_to":"pending"}',
         "rule fraud-detector/p99-latency: breach 0.4123 → inactive → pending"),
        ('{"level":"info","logger":"watcher.engine.tick","msg":"evaluated","event":"evaluation","rule":"r",'
         '"outcome":"ok","value":0.1,"state_from":"inactive","state_to":"inactive"}', None),
        ('{"level":"info","logger":"watcher.incidents.dispatch","msg":"rollback","event":"rollback_succeeded",'
         '"target":"fraud-prod","from_version":"3","to_version":"2","incident":1}',
         "rollback succeeded: fraud-prod 3 → 2 (incident #1)"),
        ('{"level":"info","logger":"apscheduler.executors.default","msg":"Running job"}', None),
        ('{"level":"warning","logger":"watcher.engine.daemon","msg":"missed a scheduled evaluation"}',
         "WARNING missed a scheduled evaluation"),
        ("Traceback (most recent call last):", "Traceback (most recent call last):"),
        ("", None),
    ],
)  # fmt: skip
def test_daemon_log_lines_become_a_short_timeline(line: str, shown: str | None) -> None:
    assert timeline.describe_log_line(line) == shown


def test_outcome_tally_counts_the_evaluations_since_the_last_look() -> None:
    def metrics(ok: int, breach: int) -> str:
        return (
            "# TYPE watcher_rule_evaluations_total counter\n"
            f'watcher_rule_evaluations_total{{rule="m/p99",outcome="ok"}} {ok}\n'
            f'watcher_rule_evaluations_total{{rule="m/p99",outcome="breach"}} {breach}\n'
            "# TYPE watcher_rule_state gauge\n"
            'watcher_rule_state{rule="m/p99",state="pending"} 1\n'
        )

    tally = timeline.OutcomeTally()
    assert tally.line(metrics(3, 0)) == "p99: 3 ok (pending)"
    assert tally.line(metrics(4, 2)) == "p99: 2 breach, 1 ok (pending)"
    assert tally.line(metrics(4, 2)) is None


def test_verify_after_covers_the_longest_window_of_a_rollback_rule(tmp_path: Path) -> None:
    rule_file = tmp_path / "m.yaml"
    rule_file.write_text(
        "model: m\ntarget: t\nrules:\n"
        "  - {name: a, prometheus: 'rate(x[2m])', above: 1, every: 15s, for: 1m, action: rollback}\n"
        "  - {name: b, sql: {url: 'sqlite://', query: q, window: 1h}, below: 1, action: approve}\n"
    )
    timings = timeline.read_rule_timings(rule_file, default_every=timedelta(seconds=30))
    assert not isinstance(timings, str)
    assert [(t.for_, t.every, t.window) for t in timings] == [
        (timedelta(minutes=1), timedelta(seconds=15), timedelta(minutes=2)),
        (timedelta(0), timedelta(seconds=30), timedelta(hours=1)),
    ]


def test_a_step_on_a_plain_stream_shows_start_and_end_lines() -> None:
    out = io.StringIO()
    console = Console(out, color=False)
    with console.step("creating the registry") as step:
        step.note("3 versions")
    with pytest.raises(RuntimeError), console.step("starting Prometheus"):
        raise RuntimeError("boom")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("… creating the registry")
    assert "✓ creating the registry 3 versions" in lines[1]
    assert "✗ starting Prometheus: failed" in lines[3]


# -- the signed button press -----------------------------------------------------------------


def test_a_press_is_signed_and_shaped_as_slack_sends_it(tmp_path: Path) -> None:
    from slack_sdk.signature import SignatureVerifier

    from watcher.notify.inbound.interactions import ButtonPress, Verified, parse_action, verify_request

    (tmp_path / "press.json").write_text(json.dumps({
        "watcher_url": "http://127.0.0.1:9460", "team_id": "T0FAKETEAM", "approver": "U0SCENARIO",
        "signing_secret": "s3cret"}))  # fmt: skip
    settings = press.load_settings(tmp_path, environ={})
    assert isinstance(settings, press.PressSettings)
    now = time.time()
    signed = press.signed_press(settings, 7, "undo", at=now)
    assert signed.url == "http://127.0.0.1:9460/slack/actions"
    assert SignatureVerifier("s3cret").is_valid_request(signed.body, signed.headers)
    assert not SignatureVerifier("other").is_valid_request(signed.body, signed.headers)
    checked = verify_request(signed.headers, signed.body, "s3cret", datetime.fromtimestamp(now, UTC))
    assert isinstance(checked, Verified)
    pressed = parse_action(signed.body)
    assert isinstance(pressed, ButtonPress)
    assert (pressed.incident_id, pressed.action.value, pressed.user_id, pressed.team_id) == (
        7, "undo", "U0SCENARIO", "T0FAKETEAM")  # fmt: skip
    again = press.signed_press(settings, 7, "undo", at=now + 1)
    assert parse_action(again.body).dedup_key != pressed.dedup_key  # type: ignore[union-attr]


def test_press_settings_missing_is_a_clear_failure(tmp_path: Path) -> None:
    failure = press.load_settings(tmp_path, environ={})
    assert isinstance(failure, press.PressFailure) and "--keep-running" in failure.message


def test_the_summary_passes_only_with_a_verified_rollback() -> None:
    from scenario.monitor import Observations, print_summary

    bad = datetime(2024, 5, 6, 7, 0, 0, tzinfo=UTC)
    timings = [
        timeline.RuleTiming("m/p99", "latency", "rollback", timedelta(minutes=1), timedelta(seconds=15))
    ]

    def at(seconds: int) -> datetime:
        return bad + timedelta(seconds=seconds)

    done = Observations(bad_release_at=bad, bad_version="3", incident_id=1, incident_rule="m/p99",
                        incident_opened_at=at(80), rolled_back_at=at(81), rolled_back_to="2",
                        verified_at=at(170), breaching_since={"m/p99": at(14)})  # fmt: skip
    out = io.StringIO()
    assert print_summary(Console(out, color=False), done, timings, verify_after=timedelta(seconds=75)) == 0
    text = out.getvalue()
    assert (
        "opened 80s after it went bad" in text
        and "fired 66s later" in text
        and "rolled back and verified" in text
    )
    not_verified = Observations(bad_release_at=bad, bad_version="3", incident_id=1, incident_rule="m/p99",
                                incident_opened_at=at(80), rolled_back_at=at(81), rolled_back_to="2",
                                escalated_at=at(170))  # fmt: skip
    out = io.StringIO()
    assert (
        print_summary(Console(out, color=False), not_verified, timings, verify_after=timedelta(seconds=45))
        == 1
    )
    assert "escalated" in out.getvalue() and "never verified" in out.getvalue()
