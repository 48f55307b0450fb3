"""Side by side in one run (bench/evaluation.py --side-by-side): Prometheus' own rule engine,
vmalert and watcher on the same models, one rule file per model with one threshold rule each,
every 15 s, against one real Prometheus; then watcher alone with 10,000 models, and with one rule
over 10,000 series.

- Prometheus' rule engine runs in process: the rule files are loaded into a second Prometheus
  scraping the same exporter (with no query log), and its CPU is read from its own process, its
  baseline (the same Prometheus scraping with no rules, measured at the start) removed. It asks no
  one: no requests.
- vmalert (Debian's `victoria-metrics` package; installed with apt-get when /usr/bin/vmalert is
  missing) reads the same rule files and asks the first Prometheus over HTTP, as watcher does.
- watcher: `watcher run`, SQLite, one file per model. The rules are one template but for the
  model, as ops teams write them, and watcher asks such a family as one query (see
  watcher/rules/promql_factor.py); a second watcher row has every rule's text differ beyond the
  model, where it cannot.

Per engine, over a window of whole 15 s cycles opened after every rule has run once: its own CPU
per cycle (utime + stime), the CPU it adds to the Prometheus it asks (that Prometheus' CPU minus
its baseline), the requests that Prometheus logged for it per cycle, missed iterations, and for
watcher the cycle: from the slot a rule was due at to the moment Prometheus logged its answer
(its p99 over every rule evaluation in the window).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import _support as s

from watcher.ruletest.prometheus import free_port

SETTLE = 0.5
# Per kind of rule: its query ($m: the exporter's model), breach above?, threshold (never crossed).
QUERIES = {
    # A latency quantile: Prometheus reads 11 bucket series per evaluation.
    "latency": (
        'histogram_quantile(0.99, sum by (le) (rate(request_seconds_bucket{model="$m"}[1m])))',
        True,
        2.0,
    ),
    # A gauge: one series; the request, not the query, is most of the cost.
    "gauge": ('model_accuracy{model="$m"}', False, 0.8),
}
NAN = float("nan")


@dataclass(frozen=True)
class Row:
    engine: str
    workload: str
    cycles: float  # window length in 15 s cycles
    cpu: float  # own CPU seconds over the window
    answering: float | None  # CPU seconds it added to the Prometheus it asks (None: asks none)
    requests: float | None
    missed: float | None
    cycle_p99: float | None = None
    evaluations: float | None = None

    def per_cycle(self, value: float | None) -> float | None:
        return None if value is None else value / self.cycles

    @property
    def total_per_cycle(self) -> float:
        return (self.cpu + (self.answering or 0.0)) / self.cycles


# --- workloads --------------------------------------------------------------------------------
def one_rule_per_model(
    models: int, exporter_models: int, kind: str = "latency", *, one_template: bool = True
) -> list[s.RuleSpec]:
    """`models` models, one threshold rule each (p99 latency above 2 s: never breaches); model i
    reads exporter model i mod `exporter_models`. No two rules have the same text, so no engine can
    share a query between rules: as ops teams write them, the rules of the models read by one
    exporter model are one template but for the model (`+ 0 * k`, k = i // exporter_models,
    tells the rules of one exporter model apart); with `one_template` False every rule's text
    differs beyond the model (`+ 0 * i`), so that watcher cannot ask them as one query either."""
    names = s.model_names(exporter_models)
    query, above, threshold = QUERIES[kind]
    return [
        s.RuleSpec(
            f"m-{index:05d}",
            kind,
            f"({query.replace('$m', names[index % exporter_models])}) + 0 * "
            f"{index // exporter_models if one_template else index}",
            above,
            threshold,
        )
        for index in range(models)
    ]


def write_vector_setup(directory: Path, prometheus_url: str) -> tuple[Path, int]:
    """watcher.yaml and one rule over every `vector_value` series: each series an instance."""
    (directory / "rules").mkdir(parents=True, exist_ok=True)
    (directory / "rules" / "vectors.yaml").write_text(
        'model: "{{ labels.model }}"\nrules:\n  - name: value\n    signal: custom\n'
        "    prometheus: vector_value\n    above: 1000\n    every: 15s\n    action: notify\n"
        "    severity: info\n"
    )
    port = free_port()
    config = directory / "watcher.yaml"
    config.write_text(
        "database: sqlite:///watcher.db\nrules: rules/\nevaluation: {every: 15s, timeout: 10s}\n"
        f"prometheus: {{url: {json.dumps(prometheus_url)}}}\nhttp: {{listen: 127.0.0.1:{port}}}\n"
    )
    return config, port


def rules_over_many_series() -> bool:
    """Whether this watcher has rules over many series (SPEC.md section 2)."""
    import importlib.util

    return importlib.util.find_spec("watcher.rules.instances") is not None


# --- vmalert ----------------------------------------------------------------------------------
def vmalert_binary() -> str | None:
    """/usr/bin/vmalert, installed from Debian's victoria-metrics package when missing."""
    found = shutil.which("vmalert")
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "victoria-metrics"], check=False, capture_output=True)
        found = shutil.which("vmalert")
    return found


class VmAlert:
    def __init__(self, binary: str, rule_dir: Path, datasource: str, log: Path) -> None:
        self.port = free_port()
        self._log = log.open("ab")
        # Nothing fires (the thresholds are never crossed): the notifier is never called.
        self.process = subprocess.Popen(
            [
                binary,
                f"-rule={rule_dir}/*.yaml",
                f"-datasource.url={datasource}",
                f"-notifier.url=http://127.0.0.1:{free_port()}",
                f"-httpListenAddr=127.0.0.1:{self.port}",
                "-evaluationInterval=15s",
                "-loggerLevel=ERROR",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        s.wait_until(lambda: s.http_get(f"http://127.0.0.1:{self.port}/health")[0] == 200, "vmalert")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        s.stop_process(self.process)
        self._log.close()


# --- measuring --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ends:
    at: float
    cpu: float
    prometheus_cpu: float
    log_offset: int
    metrics: s.Samples


def ends(prometheus: s.Prometheus, pid: int, metrics: Callable[[], s.Samples], opening: bool) -> Ends:
    """CPU read next to the window's edge, metrics read outside it (rendering 10,000 rules'
    metrics costs the daemon CPU that is not evaluation)."""
    first = metrics() if opening else {}
    offset = prometheus.query_log.stat().st_size if prometheus.query_log.exists() else 0
    at, cpu, prometheus_cpu = time.time(), s.cpu_seconds(pid), s.cpu_seconds(prometheus.pid)
    return Ends(at, cpu, prometheus_cpu, offset, first if opening else metrics())


def window(
    prometheus: s.Prometheus, pid: int, metrics: Callable[[], s.Samples], seconds: float
) -> tuple[Ends, Ends]:
    start = ends(prometheus, pid, metrics, opening=True)
    time.sleep(max(0.0, start.at + seconds - time.time()))
    return start, ends(prometheus, pid, metrics, opening=False)


def growth(start: Ends, end: Ends, name: str) -> float:
    return float(s.total(end.metrics, name) - s.total(start.metrics, name))


def p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else NAN


def baselines(prometheus: s.Prometheus, engine: s.Prometheus, seconds: float) -> tuple[float, float]:
    """CPU per second of both Prometheus servers scraping, with no rules and nobody asking."""
    before = s.cpu_seconds(prometheus.pid), s.cpu_seconds(engine.pid)
    time.sleep(seconds)
    after = s.cpu_seconds(prometheus.pid), s.cpu_seconds(engine.pid)
    return (after[0] - before[0]) / seconds, (after[1] - before[1]) / seconds


def rule_engine(
    work: Path, engine: s.Prometheus, rules: list[s.RuleSpec], cycles: int, baseline: float
) -> Row:
    engine.write_rules(s.write_prometheus_rules(work / "engine-rules", rules))
    engine.reload()
    if (loaded := s.loaded_rule_count(engine)) != len(rules):
        raise RuntimeError(f"Prometheus loaded {loaded} rules instead of {len(rules)}")
    time.sleep(s.INTERVAL + SETTLE)  # every group has run once

    def metrics() -> s.Samples:
        return s.scrape(f"{engine.url}/metrics")

    start, end = window(engine, engine.pid, metrics, cycles * s.INTERVAL)
    seconds = end.at - start.at
    return Row(
        "Prometheus' rule engine (in process)",
        f"{len(rules):,} models",
        seconds / s.INTERVAL,
        end.cpu - start.cpu - baseline * seconds,
        None,
        None,
        growth(start, end, "prometheus_rule_group_iterations_missed_total"),
        evaluations=growth(start, end, "prometheus_rule_evaluations_total"),
    )


def answered(prometheus: s.Prometheus, start: Ends, end: Ends) -> list[s.LoggedQuery]:
    """The queries Prometheus logged in the window, for whoever asked (the only one asking)."""
    logged = s.read_query_log(prometheus.query_log, start.log_offset)
    return [q for q in logged if not q.from_rule_engine and q.logged <= end.at]


def vmalert(
    work: Path, prometheus: s.Prometheus, rules: list[s.RuleSpec], cycles: int, baseline: float
) -> Row:
    binary = vmalert_binary()
    if binary is None:
        return Row("vmalert (not installed)", f"{len(rules):,} models", 1, NAN, NAN, NAN, NAN)
    s.write_prometheus_rules(work / "vmalert-rules", rules)
    process = VmAlert(binary, work / "vmalert-rules", prometheus.url, work / "vmalert.log")
    try:
        time.sleep(s.INTERVAL + SETTLE)  # every group has run once

        def metrics() -> s.Samples:
            return s.scrape(f"http://127.0.0.1:{process.port}/metrics")

        start, end = window(prometheus, process.pid, metrics, cycles * s.INTERVAL)
    finally:
        process.stop()
    seconds = end.at - start.at
    return Row(
        "vmalert (Go, over HTTP)",
        f"{len(rules):,} models",
        seconds / s.INTERVAL,
        end.cpu - start.cpu,
        end.prometheus_cpu - start.prometheus_cpu - baseline * seconds,
        float(len(answered(prometheus, start, end))),
        growth(start, end, "vmalert_iteration_missed_total"),
        evaluations=growth(start, end, "vmalert_execution_total"),
    )


def watcher(
    directory: Path,
    prometheus: s.Prometheus,
    setup: tuple[Path, int],
    expected: tuple[int, dict[str, int]],
    workload: str,
    cycles: int,
    baseline: float,
) -> Row:
    """`expected`: rule evaluations in one cycle, and how many rules ask each query."""
    config, port = setup
    daemon = s.Watcher(config, port, directory / "watcher.log")
    try:
        daemon.wait_ready()
        count, uses = expected
        first = s.first_cycle_start(prometheus.query_log, count, daemon.spawned_wall, uses)
        time.sleep(max(0.0, first + s.INTERVAL - SETTLE - time.time()))
        start, end = window(prometheus, daemon.pid, daemon.metrics, cycles * s.INTERVAL)
        missed_whole_run = s.total(end.metrics, "watcher_evaluations_missed_total")
    finally:
        daemon.stop()
    seconds = end.at - start.at
    logged = list(s.read_query_log(prometheus.query_log, start.log_offset, uses))
    in_window = [q for q in logged if not q.from_rule_engine and q.logged <= end.at]
    due_to_answered = [
        q.logged - q.at for q in logged if start.at <= q.at and q.logged <= end.at for _ in range(q.rules)
    ]
    return Row(
        "watcher",
        workload,
        seconds / s.INTERVAL,
        end.cpu - start.cpu,
        end.prometheus_cpu - start.prometheus_cpu - baseline * seconds,
        float(len(in_window)),
        missed_whole_run,
        p99(due_to_answered),
        growth(start, end, "watcher_rule_evaluations_total"),
    )


# --- the run and its report -------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    models: int  # the side-by-side workload
    big: int  # watcher alone, then
    vector_series: int  # one rule over this many series (0: not run)
    cycles: int
    scrape_interval: str
    kind: str = "latency"  # see QUERIES
    baseline_seconds: float = 20.0


def run(plan: Plan, work: Path) -> list[Row]:
    exporter_models = min(plan.models, 1000)
    exporter = s.ModelExporter(s.model_names(exporter_models), vector_series=plan.vector_series)
    prometheus = s.Prometheus(work / "prometheus", exporter.target, plan.scrape_interval)
    # The engine's Prometheus logs no query: writing a log line per rule evaluation would be
    # counted as its engine's work (the first one logs the queries others send it, to count them).
    engine = s.Prometheus(work / "engine", exporter.target, plan.scrape_interval, log_queries=False)
    rules = one_rule_per_model(plan.models, exporter_models, plan.kind)
    rows: list[Row] = []
    try:
        prometheus.start()
        engine.start()
        s.wait_for_data(prometheus, exporter_models)
        s.wait_for_data(engine, exporter_models)
        progress("baselines: both Prometheus servers scraping, no rules, no queries")
        baseline, engine_baseline = baselines(prometheus, engine, plan.baseline_seconds)
        progress(f"Prometheus' rule engine, {len(rules):,} rules in {len(rules):,} files")
        rows.append(rule_engine(work, engine, rules, plan.cycles, engine_baseline))
        engine.stop()
        progress(f"vmalert, {len(rules):,} rules")
        rows.append(vmalert(work, prometheus, rules, plan.cycles, baseline))
        progress(f"watcher, {len(rules):,} rules")
        rows.append(watch(work / "watcher", prometheus, rules, plan, baseline))
        progress(f"watcher, {len(rules):,} rules, no two of one template")
        apart = one_rule_per_model(plan.models, exporter_models, plan.kind, one_template=False)
        note = "no two of one template"
        rows.append(watch(work / "watcher-apart", prometheus, apart, plan, baseline, note))
        if plan.big:
            big = one_rule_per_model(plan.big, exporter_models, plan.kind)
            progress(f"watcher, {len(big):,} rules in {len(big):,} files")
            rows.append(watch(work / "watcher-big", prometheus, big, plan, baseline))
        if plan.vector_series and rules_over_many_series():
            progress(f"watcher, one rule over {plan.vector_series:,} series")
            setup = write_vector_setup(work / "watcher-vector", prometheus.url)
            workload = f"1 rule over {plan.vector_series:,} series"
            rows.append(
                watcher(work / "watcher-vector", prometheus, setup, (1, {}), workload, plan.cycles, baseline)
            )
    finally:
        engine.stop()
        prometheus.stop()
        exporter.close()
    return rows


def watch(
    directory: Path,
    prometheus: s.Prometheus,
    rules: list[s.RuleSpec],
    plan: Plan,
    baseline: float,
    note: str = "",
) -> Row:
    setup = s.write_watcher_setup(directory, rules, prometheus.url)
    expected = (len(rules), s.query_uses(rules))
    workload = f"{len(rules):,} models, {len(rules):,} files" + (f", {note}" if note else "")
    return watcher(directory, prometheus, setup, expected, workload, plan.cycles, baseline)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:,.0f} ms"


def _count(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f}"


def report(rows: list[Row], plan: Plan) -> None:
    print(
        f"\nside by side: one rule file per model, one {plan.kind} threshold rule each, every 15 s; "
        f"windows of {plan.cycles} cycles; Prometheus scraping every {plan.scrape_interval}\n"
    )
    head = (
        "engine",
        "workload",
        "CPU / cycle",
        "Prom. CPU added / cycle",
        "requests / cycle",
        "missed",
        "cycle p99",
    )
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        cells = (
            row.engine,
            row.workload,
            _ms(row.per_cycle(row.cpu)),
            _ms(row.per_cycle(row.answering)),
            _count(row.per_cycle(row.requests)),
            "–" if row.missed is None else f"{row.missed:.0f}",
            "–" if row.cycle_p99 is None else f"{row.cycle_p99:.3f} s",
        )
        print("| " + " | ".join(cells) + " |")
    print_targets(rows, plan)


def print_targets(rows: list[Row], plan: Plan) -> None:
    engine, vm, ours = rows[0], rows[1], rows[2]
    checks = [
        (
            "watcher + Prometheus CPU it adds <= 2x Prometheus' rule engine",
            f"{ours.total_per_cycle * 1000:.0f} ms vs {engine.total_per_cycle * 1000:.0f} ms",
            ours.total_per_cycle <= 2 * engine.total_per_cycle,
        ),
        (
            "watcher + Prometheus CPU it adds <= a tenth of vmalert's",
            f"{ours.total_per_cycle * 1000:.0f} ms vs {vm.total_per_cycle * 1000:.0f} ms",
            ours.total_per_cycle <= vm.total_per_cycle / 10,
        ),
    ]
    for row in rows[3:]:
        met = row.missed == 0 and row.cycle_p99 is not None and row.cycle_p99 < 2.0
        checks.append(
            (f"{row.workload}: 0 missed, cycle p99 < 2 s", f"{row.missed:.0f}, {row.cycle_p99:.3f} s", met)
        )
    if plan.vector_series and not rules_over_many_series():
        checks.append(
            ("one rule over many series", "not run: this watcher has no rules over many series", False)
        )
    print("\ntargets (issue 14, on this machine):")
    for label, value, met in checks:
        print(f"  {label:<66}{value:>26}  {'met' if met else 'MISSED'}")


def progress(what: str) -> None:
    import sys

    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)
