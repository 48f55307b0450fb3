"""How much it costs watcher to evaluate 1,000 threshold rules, next to Prometheus' own rule engine.

    .venv/bin/python bench/evaluation.py                  # 1,000 rules, 120 s windows (~6 minutes)
    .venv/bin/python bench/evaluation.py --duration 45 --starts 1     # a quick look

One real Prometheus scrapes a synthetic exporter (20 models, ~17 series each) every 2 s and logs
every query it runs (query_log_file). Phases, one after the other, each measured over the same
window length:

1. baseline: Prometheus with no rules and nobody querying it (its CPU for scraping alone);
2. watcher: `watcher run` with 1,000 rules (20 files x 50, every 15s, action notify, SQLite in a
   temporary directory); the window starts just before its second cycle, so the cold first cycle
   is left out of the cycle figures but counts for missed runs and peak memory;
3. Prometheus: the same 1,000 expressions as alerting rules (one group per file, interval 15s,
   `expr: (query) > threshold`, same `for`), loaded into the same Prometheus by SIGHUP;
4. start-to-ready: spawning `watcher run` until /readyz answers 200, each start on a fresh
   database (migrations included), with the 1,000 rules and with 5 rules; then the idle
   resident memory of the 5-rule daemon after 10 s, and which heavy libraries it has mapped.

Definitions printed with the figures:
- a cycle is all the rules due in one 15 s slot: from the earliest evaluation time watcher asked
  Prometheus for to the moment Prometheus logged the last of those queries as done (so one
  SQLite write per rule after its query is not in it: see the per-evaluation time);
- CPU is utime + stime from /proc of each process over the window. Prometheus' rule-engine CPU
  is its CPU in phase 3 minus its baseline CPU for the same length of time; the CPU Prometheus
  spends answering watcher is its CPU in phase 2 minus the same baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _support as s  # noqa: E402  (bench/ is not a package)

SETTLE = 0.5  # seconds before a cycle at which a measurement window opens
MB = 1_000_000


@dataclass(frozen=True)
class Window:
    """Counters read at one end of a measurement window."""

    at: float  # time.time()
    cpu: float  # of the process under test
    prometheus_cpu: float
    metrics: s.Samples
    log_offset: int  # size of the query log


def read_window(prometheus: s.Prometheus, pid: int, metrics: Callable[[], s.Samples]) -> Window:
    offset = prometheus.query_log.stat().st_size if prometheus.query_log.exists() else 0
    return Window(time.time(), s.cpu_seconds(pid), s.cpu_seconds(prometheus.pid), metrics(), offset)


def delta(start: Window, end: Window, name: str, **labels: str) -> float:
    return s.total(end.metrics, name, **labels) - s.total(start.metrics, name, **labels)


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


# --- figures ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """What one engine (watcher, or Prometheus' rule engine) did over one window."""

    seconds: float
    evaluations: float
    cpu: float  # the engine's own CPU seconds over the window (rule engine: minus baseline)
    missed: float
    evaluation_p50: float
    evaluation_p99: float
    evaluation_mean: float
    busy_per_round: float  # summed evaluation time of all rules due in one interval
    prometheus_exec_mean: float  # Prometheus' own time per query, from its query log


@dataclass(frozen=True)
class WatcherRun:
    run: Run
    answering_cpu: float  # Prometheus CPU over the window minus its baseline
    missed_whole_run: float
    outcomes: dict[str, float]
    cycles: list[float]
    ready_seconds: float
    peak_rss: int


@dataclass(frozen=True)
class EngineRun:
    run: Run
    failures: float
    group_p99: float  # Prometheus' summary of one group's evaluation, 0.99 quantile
    group_max_last: float


@dataclass(frozen=True)
class Idle:
    ready_seconds: float
    rss: int
    peak_rss: int
    heavy: list[str]


def histogram_quantile(q: float, start: Window, end: Window, name: str) -> float:
    """Like PromQL's histogram_quantile over the window's bucket increases (linear in a bucket)."""
    buckets = sorted(
        (float(dict(pairs)["le"]), value - start.metrics.get((n, pairs), 0.0))
        for (n, pairs), value in end.metrics.items()
        if n == f"{name}_bucket"
    )
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


def cycles_from_queries(queries: Sequence[s.LoggedQuery], window_end: float) -> list[float]:
    """Durations of the cycles in the window: evaluation times closer than a third of the
    interval belong to one slot; a cycle still running at the end of the window is left out."""
    cycles: list[list[s.LoggedQuery]] = []
    for query in sorted(queries, key=lambda q: q.at):
        if cycles and query.at - cycles[-1][-1].at < s.INTERVAL / 3:
            cycles[-1].append(query)
        else:
            cycles.append([query])
    ends = [(min(q.at for q in c), max(q.logged for q in c)) for c in cycles]
    return [last - first for first, last in ends if last <= window_end]


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def watcher_figures(
    start: Window, end: Window, queries: list[s.LoggedQuery], baseline: float, ready: float, peak: int
) -> WatcherRun:
    seconds = end.at - start.at
    evaluations = delta(start, end, "watcher_rule_evaluations_total")
    cycles = cycles_from_queries(queries, end.at)
    busy = delta(start, end, "watcher_rule_evaluation_seconds_sum")
    run = Run(
        seconds=seconds,
        evaluations=evaluations,
        cpu=end.cpu - start.cpu,
        missed=delta(start, end, "watcher_evaluations_missed_total"),
        evaluation_p50=histogram_quantile(0.5, start, end, "watcher_rule_evaluation_seconds"),
        evaluation_p99=histogram_quantile(0.99, start, end, "watcher_rule_evaluation_seconds"),
        evaluation_mean=busy / evaluations if evaluations else float("nan"),
        busy_per_round=busy / (seconds / s.INTERVAL),
        prometheus_exec_mean=_mean([q.seconds for q in queries]),
    )
    outcomes = {
        outcome: delta(start, end, "watcher_rule_evaluations_total", outcome=outcome)
        for outcome in ("ok", "breach", "no_data", "error")
    }
    return WatcherRun(
        run=run,
        answering_cpu=end.prometheus_cpu - start.prometheus_cpu - baseline * seconds,
        missed_whole_run=s.total(end.metrics, "watcher_evaluations_missed_total"),
        outcomes=outcomes,
        cycles=cycles,
        ready_seconds=ready,
        peak_rss=peak,
    )


def engine_figures(start: Window, end: Window, queries: list[s.LoggedQuery], baseline: float) -> EngineRun:
    seconds = end.at - start.at
    evaluations = delta(start, end, "prometheus_rule_evaluations_total")
    group_time = delta(start, end, "prometheus_rule_group_duration_seconds_sum")
    rule_time = delta(start, end, "prometheus_rule_evaluation_duration_seconds_sum")
    quantile = lambda name, q: s.total(end.metrics, name, quantile=q)  # noqa: E731
    run = Run(
        seconds=seconds,
        evaluations=evaluations,
        cpu=end.cpu - start.cpu - baseline * seconds,
        missed=delta(start, end, "prometheus_rule_group_iterations_missed_total"),
        evaluation_p50=quantile("prometheus_rule_evaluation_duration_seconds", "0.5"),
        evaluation_p99=quantile("prometheus_rule_evaluation_duration_seconds", "0.99"),
        evaluation_mean=rule_time / evaluations if evaluations else float("nan"),
        busy_per_round=group_time / (seconds / s.INTERVAL),
        prometheus_exec_mean=_mean([q.seconds for q in queries]),
    )
    last = s.by_label(end.metrics, "prometheus_rule_group_last_duration_seconds", "rule_group")
    return EngineRun(
        run=run,
        failures=delta(start, end, "prometheus_rule_evaluation_failures_total"),
        group_p99=quantile("prometheus_rule_group_duration_seconds", "0.99"),
        group_max_last=max(last.values(), default=float("nan")),
    )


# --- phases -----------------------------------------------------------------------------------------------
def baseline_cpu_per_second(prometheus: s.Prometheus, seconds: float) -> float:
    before = s.cpu_seconds(prometheus.pid)
    time.sleep(seconds)
    return (s.cpu_seconds(prometheus.pid) - before) / seconds


def run_watcher(
    work: Path, prometheus: s.Prometheus, rules: list[s.RuleSpec], duration: float, baseline: float
) -> WatcherRun:
    config, port = s.write_watcher_setup(work / "watcher", rules, prometheus.url)
    daemon = s.Watcher(config, port, work / "watcher" / "watcher.log")
    try:
        ready = daemon.wait_ready()
        # Let the first (cold) cycle pass; open the window just before the second one.
        first = s.first_cycle_start(prometheus.query_log, len(rules), daemon.spawned_wall)
        sleep_until(first + s.INTERVAL - SETTLE)
        start = read_window(prometheus, daemon.pid, daemon.metrics)
        sleep_until(start.at + duration)
        end = read_window(prometheus, daemon.pid, daemon.metrics)
        peak_rss = s.memory_bytes(daemon.pid, "VmHWM")
    finally:
        daemon.stop()
    queries = [q for q in s.read_query_log(prometheus.query_log, start.log_offset) if not q.from_rule_engine]
    queries = [q for q in queries if q.at <= end.at]
    return watcher_figures(start, end, queries, baseline, ready, peak_rss)


def run_rule_engine(
    work: Path, prometheus: s.Prometheus, rules: list[s.RuleSpec], duration: float, baseline: float
) -> EngineRun:
    prometheus.write_config(s.write_prometheus_rules(work / "prometheus-rules", rules))
    prometheus.reload()
    loaded = s.loaded_rule_count(prometheus)
    if loaded != len(rules):
        raise RuntimeError(f"Prometheus loaded {loaded} rules instead of {len(rules)}")
    # Groups start at offsets spread over the interval: let each run once before measuring.
    time.sleep(s.INTERVAL + SETTLE)
    metrics = lambda: s.scrape(f"{prometheus.url}/metrics")  # noqa: E731
    start = read_window(prometheus, prometheus.pid, metrics)
    sleep_until(start.at + duration)
    end = read_window(prometheus, prometheus.pid, metrics)
    queries = [q for q in s.read_query_log(prometheus.query_log, start.log_offset) if q.from_rule_engine]
    prometheus.write_config([])
    prometheus.reload()
    return engine_figures(start, end, queries, baseline)


def start_to_ready(work: Path, prometheus: s.Prometheus, rules: list[s.RuleSpec], name: str) -> float:
    """One start on a fresh database; the daemon is stopped again once ready."""
    config, port = s.write_watcher_setup(work / name, rules, prometheus.url)
    daemon = s.Watcher(config, port, work / name / "watcher.log")
    try:
        return daemon.wait_ready()
    finally:
        daemon.stop()


def idle_daemon(work: Path, prometheus: s.Prometheus, rules: list[s.RuleSpec], wait: float) -> Idle:
    config, port = s.write_watcher_setup(work / "idle", rules, prometheus.url)
    daemon = s.Watcher(config, port, work / "idle" / "watcher.log")
    try:
        ready = daemon.wait_ready()
        time.sleep(wait)
        return Idle(
            ready_seconds=ready,
            rss=s.memory_bytes(daemon.pid, "VmRSS"),
            peak_rss=s.memory_bytes(daemon.pid, "VmHWM"),
            heavy=s.heavy_packages(s.mapped_files(daemon.pid)),
        )
    finally:
        daemon.stop()


# --- report -------------------------------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _per_1k(cpu: float, evaluations: float) -> float:
    return cpu / evaluations * 1000 if evaluations else float("nan")


def _ratio(numerator: float, denominator: float) -> str:
    # A rule-engine CPU at or under zero means it is lost in the baseline's noise.
    return f"{numerator / denominator:.1f}x" if denominator > 0 else "n/a (rule-engine CPU within noise)"


def print_side_by_side(watcher: WatcherRun, engine: EngineRun) -> None:
    a, b = watcher.run, engine.run
    rows = [
        ("window", f"{a.seconds:.1f} s", f"{b.seconds:.1f} s"),
        ("rule evaluations in window", f"{a.evaluations:.0f}", f"{b.evaluations:.0f}"),
        ("evaluations per second", f"{a.evaluations / a.seconds:.1f}", f"{b.evaluations / b.seconds:.1f}"),
        ("CPU seconds in window", f"{a.cpu:.2f}", f"{b.cpu:.2f} (minus baseline)"),
        (
            "CPU per 1,000 evaluations",
            f"{_per_1k(a.cpu, a.evaluations):.3f} s",
            f"{_per_1k(b.cpu, b.evaluations):.3f} s",
        ),
        ("one evaluation, p50", _ms(a.evaluation_p50), _ms(b.evaluation_p50)),
        ("one evaluation, p99", _ms(a.evaluation_p99), _ms(b.evaluation_p99)),
        ("one evaluation, mean", _ms(a.evaluation_mean), _ms(b.evaluation_mean)),
        ("summed evaluation time per 15 s", f"{a.busy_per_round:.2f} s", f"{b.busy_per_round:.3f} s"),
        ("Prometheus' own time per query", _ms(a.prometheus_exec_mean), _ms(b.prometheus_exec_mean)),
        ("missed runs / iterations in window", f"{a.missed:.0f}", f"{b.missed:.0f}"),
    ]
    print(f"{'':38}{'watcher':>18}   {'Prometheus rule engine':<24}")
    for label, left, right in rows:
        print(f"  {label:<36}{left:>18}   {right:<24}")
    print(f"  watcher outcomes: " + ", ".join(f"{k} {v:.0f}" for k, v in watcher.outcomes.items()))
    print(f"  watcher peak RSS (VmHWM, whole run): {watcher.peak_rss / MB:.1f} MB")
    print(
        f"  rule engine: {engine.failures:.0f} failed evaluations; one group (50 rules) p99 "
        f"{_ms(engine.group_p99)}, slowest last group {_ms(engine.group_max_last)}"
    )


def print_report(
    setup: str,
    baseline: float,
    watcher: WatcherRun,
    engine: EngineRun,
    starts: tuple[int, list[float], list[float]],
    idle: Idle,
) -> None:
    print(f"\n{setup}")
    print(f"Prometheus baseline (scraping only, no rules, no queries): {baseline:.4f} CPU s per s\n")
    print_side_by_side(watcher, engine)
    cycles = sorted(watcher.cycles)
    p50 = statistics.median(cycles) if cycles else float("nan")
    p99 = cycles[min(len(cycles) - 1, int(0.99 * len(cycles)))] if cycles else float("nan")
    print(
        f"\ncycle = all rules due in one 15 s slot, from the earliest evaluation time watcher asked\n"
        f"Prometheus for to Prometheus logging the last of those queries done; {len(cycles)} cycles:\n"
        f"  " + ", ".join(f"{c:.2f}" for c in watcher.cycles) + " s"
    )
    a, b = watcher.run, engine.run
    own = _per_1k(a.cpu, a.evaluations)
    answering = _per_1k(watcher.answering_cpu, a.evaluations)
    rule_engine = _per_1k(b.cpu, b.evaluations)
    print("\nratios, CPU per evaluation, from this one run:")
    print(f"  watcher / Prometheus rule engine                         {_ratio(own, rule_engine)}")
    print(
        f"  (watcher + Prometheus answering it) / rule engine        {_ratio(own + answering, rule_engine)}"
    )
    print(f"  Prometheus answering watcher's queries / rule engine     {_ratio(answering, rule_engine)}")
    print(
        f"  (Prometheus answering watcher: {watcher.answering_cpu:.2f} CPU s in the window, baseline removed)"
    )
    rule_count, many, few = starts
    rows = [
        (
            "missed runs (whole run, cold cycle included)",
            f"{watcher.missed_whole_run:.0f}",
            "0",
            watcher.missed_whole_run == 0,
        ),
        (f"cycle p99 (of {len(cycles)}: the slowest), p50 {p50:.2f} s", f"{p99:.2f} s", "< 1 s", p99 < 1.0),
        (
            "watcher CPU / Prometheus rule-engine CPU",
            _ratio(own, rule_engine),
            "< 1.5x",
            rule_engine > 0 and own / rule_engine < 1.5,
        ),
    ]
    rows += [
        (
            f"start-to-ready, {name}: best {min(v):.2f} s, median of {len(v)}",
            f"{statistics.median(v):.2f} s",
            "< 1.5 s",
            statistics.median(v) < 1.5,
        )
        for name, v in ((f"{rule_count} rules", many), ("5 rules", few))
    ]
    rows += [
        (
            "idle RSS, 5 rules, no drift rule, after 10 s",
            f"{idle.rss / MB:.1f} MB",
            "< 80 MB",
            idle.rss < 80 * MB,
        ),
        (
            "heavy packages mapped (pandas, numpy, ...)",
            ", ".join(idle.heavy) or "none",
            "none",
            not idle.heavy,
        ),
    ]
    print("\ntargets (start-to-ready judged on the median; MB = 10^6 bytes):")
    for label, value, target, met in rows:
        print(f"  {label:<56}{value:>12}  {target:<8} {_verdict(met)}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per measured window")
    parser.add_argument("--models", type=int, default=20, help="rule files (one per model)")
    parser.add_argument("--rules-per-model", type=int, default=50)
    parser.add_argument("--scrape-interval", default="2s")
    parser.add_argument("--starts", type=int, default=3, help="start-to-ready runs per rule count")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    options = parser.parse_args(argv)
    rules = s.rule_specs(options.models, options.rules_per_model)
    few = s.rule_specs(1, 5)
    work = Path(tempfile.mkdtemp(prefix="watcher-bench-"))
    exporter = s.ModelExporter(s.model_names(options.models))
    prometheus = s.Prometheus(work / "prometheus", exporter.target, options.scrape_interval)
    load = Path("/proc/loadavg").read_text().split()[0]
    try:
        prometheus.start()
        s.wait_for_data(prometheus, options.models)
        progress(f"Prometheus scraping {options.models} models; baseline ({options.duration / 2:.0f} s)")
        baseline = baseline_cpu_per_second(prometheus, max(30.0, options.duration / 2))
        progress(f"watcher with {len(rules)} rules")
        watcher = run_watcher(work, prometheus, rules, options.duration, baseline)
        progress("Prometheus rule engine with the same rules")
        engine = run_rule_engine(work, prometheus, rules, options.duration, baseline)
        progress("start-to-ready and idle memory")
        many = [start_to_ready(work, prometheus, rules, f"start-{i}") for i in range(options.starts)]
        small = [start_to_ready(work, prometheus, few, f"start-few-{i}") for i in range(options.starts)]
        idle = idle_daemon(work, prometheus, few, 10.0)
    finally:
        prometheus.stop()
        exporter.close()
    setup = (
        f"{len(rules)} rules ({options.models} files x {options.rules_per_model}), every 15s, against a real "
        f"Prometheus scraping {options.models} models every {options.scrape_interval}; "
        f"{options.duration:.0f} s windows; {os.cpu_count()} CPUs, load average {load} at start"
    )
    # The watcher phase's own start counts as one more start-to-ready run with all the rules.
    print_report(
        setup,
        baseline,
        watcher,
        engine,
        (len(rules), [watcher.ready_seconds, *many], [*small, idle.ready_seconds]),
        idle,
    )
    if options.keep:
        print(f"\nworking directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def progress(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
