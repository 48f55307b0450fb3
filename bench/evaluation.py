"""How much it costs watcher to evaluate 1,000 threshold rules, next to Prometheus' own rule engine.

    .venv/bin/python bench/evaluation.py                          # 1,000 rules, 120 s windows, ~6 min
    .venv/bin/python bench/evaluation.py --duration 45 --starts 1   # a quick look
    .venv/bin/python bench/evaluation.py --side-by-side   # Prometheus, vmalert, watcher; ~6 min

One real Prometheus scrapes a synthetic exporter (20 models, 17 series each) every 2 s and logs
every query it runs (query_log_file, in every phase alike). Phases, one after the other:

1. baseline: Prometheus with no rules and nobody querying it, for a quarter of the window;
2. watcher: `watcher run` with 1,000 rules (20 files x 50, every 15s, action notify, SQLite in a
   temporary directory). The window opens after every rule has run once: the cold first round is
   left out of the cycle and CPU figures, but counts for missed runs and peak memory;
3. Prometheus: the same 1,000 expressions as alerting rules in the same Prometheus (one group per
   file, interval 15s, `expr: (query) > threshold`, the same `for`), loaded by SIGHUP; the window
   opens after every group has run once;
4. start-to-ready: from spawning `watcher run` to /readyz answering 200, with the 1,000 rules and
   with 5 rules: a first start on a fresh database (migrations included), then restarts on it;
   then the resident memory of the 5-rule daemon after 10 s, and the heavy packages it mapped.

Definitions:
- a cycle is one rule evaluation: from the time it was due (the evaluation time watcher asked
  Prometheus for) to the moment Prometheus logged its answer (the SQLite write after it is not in
  it: see one evaluation's time);
- CPU is utime + stime from /proc/PID/stat. Rule-engine CPU is Prometheus' CPU in phase 3 minus
  its baseline for the same time; "Prometheus answering watcher" is its CPU in phase 2 minus the
  same baseline. Ratios compare CPU per evaluation.
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

import _support as s  # bench/ is not a package: imported from its directory

SETTLE = 0.5  # seconds before a cycle at which a measurement window opens
IDLE_AFTER = 10.0  # seconds a 5-rule daemon runs before its idle memory is read
MB = 1_000_000
NAN = float("nan")


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
    return float(s.total(end.metrics, name, **labels) - s.total(start.metrics, name, **labels))


@dataclass(frozen=True)
class Run:
    """What one engine (watcher, or Prometheus' rule engine) did over its window."""

    seconds: float
    evaluations: float
    cpu: float  # own CPU seconds over the window (the rule engine's: baseline removed)
    missed: float
    p50: float  # one evaluation
    p99: float
    mean: float
    busy_per_interval: float  # summed evaluation time of the rules due in one 15 s interval
    query_mean: float  # Prometheus' own execution time per query, from its query log
    extra: dict[str, float]


def mean_query_seconds(queries: Sequence[s.LoggedQuery]) -> float:
    return statistics.fmean(q.seconds for q in queries) if queries else NAN


def histogram_quantile(q: float, start: Window, end: Window, name: str) -> float:
    """PromQL's histogram_quantile over the window's bucket increases (linear inside a bucket)."""
    buckets = sorted(
        (float(dict(pairs)["le"]), value - start.metrics.get((n, pairs), 0.0))
        for (n, pairs), value in end.metrics.items()
        if n == f"{name}_bucket"
    )
    if not buckets or buckets[-1][1] <= 0:
        return NAN
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return float(lower + (upper - lower) * (rank - below) / max(count - below, 1e-9))
        lower, below = upper, count
    return lower


def cycles(queries: Sequence[s.LoggedQuery], window: tuple[float, float]) -> list[float]:
    """Per rule evaluation: from the time it was due (the evaluation time watcher asks Prometheus
    for, its group's scheduled slot) to the moment its query was answered. watcher asks one batched
    query per rule file and spreads the files over their interval, as Prometheus spreads its
    groups; each rule a batch answers counts as one cycle."""
    return [
        q.logged - q.at
        for q in queries
        if window[0] <= q.at and q.logged <= window[1]
        for _ in range(q.rules)
    ]


def watcher_run(start: Window, end: Window, queries: Sequence[s.LoggedQuery], baseline: float) -> Run:
    seconds, name = end.at - start.at, "watcher_rule_evaluation_seconds"
    evaluations = delta(start, end, "watcher_rule_evaluations_total")
    busy = delta(start, end, f"{name}_sum")
    extra = {
        outcome: delta(start, end, "watcher_rule_evaluations_total", outcome=outcome)
        for outcome in ("ok", "breach", "no_data", "error")
    }
    extra["answering_cpu"] = end.prometheus_cpu - start.prometheus_cpu - baseline * seconds
    extra["missed_whole_run"] = s.total(end.metrics, "watcher_evaluations_missed_total")
    return Run(
        seconds=seconds,
        evaluations=evaluations,
        cpu=end.cpu - start.cpu,
        missed=delta(start, end, "watcher_evaluations_missed_total"),
        p50=histogram_quantile(0.5, start, end, name),
        p99=histogram_quantile(0.99, start, end, name),
        mean=busy / evaluations if evaluations else NAN,
        busy_per_interval=busy * s.INTERVAL / seconds,
        query_mean=mean_query_seconds(queries),
        extra=extra,
    )


def engine_run(start: Window, end: Window, queries: Sequence[s.LoggedQuery], baseline: float) -> Run:
    seconds, name = end.at - start.at, "prometheus_rule_evaluation_duration_seconds"
    evaluations = delta(start, end, "prometheus_rule_evaluations_total")
    last = [v for (n, _), v in end.metrics.items() if n == "prometheus_rule_group_last_duration_seconds"]
    extra = {
        "failures": delta(start, end, "prometheus_rule_evaluation_failures_total"),
        "group_p99": s.total(end.metrics, "prometheus_rule_group_duration_seconds", quantile="0.99"),
        "group_slowest_last": max(last, default=NAN),
    }
    return Run(
        seconds=seconds,
        evaluations=evaluations,
        cpu=end.cpu - start.cpu - baseline * seconds,
        missed=delta(start, end, "prometheus_rule_group_iterations_missed_total"),
        p50=s.total(end.metrics, name, quantile="0.5"),
        p99=s.total(end.metrics, name, quantile="0.99"),
        mean=delta(start, end, f"{name}_sum") / evaluations if evaluations else NAN,
        busy_per_interval=delta(start, end, "prometheus_rule_group_duration_seconds_sum")
        * s.INTERVAL
        / seconds,
        query_mean=mean_query_seconds(queries),
        extra=extra,
    )


# --- phases ---------------------------------------------------------------------------------------------
def baseline_cpu_per_second(prometheus: s.Prometheus, seconds: float) -> float:
    before = s.cpu_seconds(prometheus.pid)
    time.sleep(seconds)
    return float(s.cpu_seconds(prometheus.pid) - before) / seconds


def measure_watcher(
    work: Path, prometheus: s.Prometheus, rules: list[s.RuleSpec], duration: float, baseline: float
) -> tuple[Run, list[float], float, int]:
    """The run, its cycles, its start-to-ready time (fresh database) and its peak RSS."""
    config, port = s.write_watcher_setup(work / "watcher", rules, prometheus.url)
    daemon = s.Watcher(config, port, work / "watcher" / "watcher.log")
    try:
        ready = daemon.wait_ready()
        first = s.first_cycle_start(
            prometheus.query_log, len(rules), daemon.spawned_wall, s.query_uses(rules)
        )
        time.sleep(max(0.0, first + s.INTERVAL - SETTLE - time.time()))
        start = read_window(prometheus, daemon.pid, daemon.metrics)
        time.sleep(duration)
        end = read_window(prometheus, daemon.pid, daemon.metrics)
        peak_rss = s.memory_bytes(daemon.pid, "VmHWM")
    finally:
        daemon.stop()
    # Queries logged after the window closed still complete (and so drop) a cycle it cut short.
    logged = s.read_query_log(prometheus.query_log, start.log_offset, s.query_uses(rules))
    queries = [q for q in logged if not q.from_rule_engine]
    in_window = [q for q in queries if q.at <= end.at]
    return watcher_run(start, end, in_window, baseline), cycles(queries, (start.at, end.at)), ready, peak_rss


def measure_rule_engine(
    work: Path, prometheus: s.Prometheus, rules: list[s.RuleSpec], duration: float, baseline: float
) -> Run:
    prometheus.write_rules(s.write_prometheus_rules(work / "prometheus-rules", rules))
    prometheus.reload()
    if (loaded := s.loaded_rule_count(prometheus)) != len(rules):
        raise RuntimeError(f"Prometheus loaded {loaded} rules instead of {len(rules)}")
    # Groups start at offsets spread over the interval: let each run once before measuring.
    time.sleep(s.INTERVAL + SETTLE)

    def metrics() -> s.Samples:
        return s.scrape(f"{prometheus.url}/metrics")

    start = read_window(prometheus, prometheus.pid, metrics)
    time.sleep(duration)
    end = read_window(prometheus, prometheus.pid, metrics)
    logged = s.read_query_log(prometheus.query_log, start.log_offset)
    queries = [q for q in logged if q.from_rule_engine]
    prometheus.write_rules([])
    prometheus.reload()
    return engine_run(start, end, queries, baseline)


@dataclass(frozen=True)
class Starts:
    first: float  # on a fresh database
    restarts: list[float]
    config: Path
    port: int


def measure_starts(directory: Path, prometheus: s.Prometheus, rules: list[s.RuleSpec], runs: int) -> Starts:
    """A first start, then `runs` restarts on the same database; each stopped once ready."""
    config, port = s.write_watcher_setup(directory, rules, prometheus.url)
    times = []
    for _ in range(runs + 1):
        daemon = s.Watcher(config, port, directory / "watcher.log")
        try:
            times.append(daemon.wait_ready())
        finally:
            daemon.stop()
    return Starts(times[0], times[1:], config, port)


def measure_idle(starts: Starts) -> tuple[int, list[str]]:
    """Restart the daemon `starts` ran: its VmRSS after IDLE_AFTER s, and the heavy packages mapped."""
    daemon = s.Watcher(starts.config, starts.port, starts.config.parent / "watcher.log")
    try:
        daemon.wait_ready()
        time.sleep(IDLE_AFTER)
        return s.memory_bytes(daemon.pid, "VmRSS"), s.heavy_packages(s.mapped_files(daemon.pid))
    finally:
        daemon.stop()


# --- report ---------------------------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _per_1k(cpu: float, evaluations: float) -> float:
    return cpu / evaluations * 1000 if evaluations else NAN


def _ratio(numerator: float, denominator: float) -> str:
    # A rule-engine CPU at or under zero is lost in the baseline's noise: no ratio to speak of.
    return f"{numerator / denominator:.1f}x" if denominator > 0 else "n/a"


def print_side_by_side(a: Run, b: Run, peak_rss: int) -> None:
    rows = [
        ("window", f"{a.seconds:.1f} s", f"{b.seconds:.1f} s"),
        ("rule evaluations in window", f"{a.evaluations:.0f}", f"{b.evaluations:.0f}"),
        ("evaluations per second", f"{a.evaluations / a.seconds:.1f}", f"{b.evaluations / b.seconds:.1f}"),
        ("CPU seconds in window", f"{a.cpu:.2f}", f"{b.cpu:.2f} (baseline removed)"),
        (
            "CPU per 1,000 evaluations",
            f"{_per_1k(a.cpu, a.evaluations):.3f} s",
            f"{_per_1k(b.cpu, b.evaluations):.3f} s",
        ),
        ("one evaluation: p50", _ms(a.p50), _ms(b.p50)),
        ("one evaluation: p99", _ms(a.p99), _ms(b.p99)),
        ("one evaluation: mean", _ms(a.mean), _ms(b.mean)),
        ("summed evaluation time per 15 s", f"{a.busy_per_interval:.3f} s", f"{b.busy_per_interval:.3f} s"),
        ("Prometheus' own time per query", _ms(a.query_mean), _ms(b.query_mean)),
        ("missed runs / iterations in window", f"{a.missed:.0f}", f"{b.missed:.0f}"),
    ]
    print(f"{'':38}{'watcher':>16}   Prometheus rule engine")
    for label, left, right in rows:
        print(f"  {label:<36}{left:>16}   {right}")
    print(
        "  watcher outcomes: "
        + ", ".join(f"{k} {a.extra[k]:.0f}" for k in ("ok", "breach", "no_data", "error"))
    )
    print(f"  watcher peak RSS (VmHWM, whole run): {peak_rss / MB:.1f} MB")
    print(
        f"  rule engine: {b.extra['failures']:.0f} failed evaluations; one group's evaluation p99 "
        f"{_ms(b.extra['group_p99'])}, slowest group's last {_ms(b.extra['group_slowest_last'])}"
    )


@dataclass(frozen=True)
class Measured:
    rules: int
    watcher: Run
    cycles: list[float]
    first_start: float  # the watcher phase's own start, on a fresh database
    peak_rss: int
    engine: Run
    starts_many: Starts
    starts_few: Starts
    idle_rss: int
    heavy: list[str]


def start_row(what: str, starts: Starts) -> tuple[str, str, str, bool]:
    median = statistics.median(starts.restarts)
    label = f"start-to-ready, {what}: first {starts.first:.2f} s, best {min(starts.restarts):.2f} s"
    return f"{label}, median of {len(starts.restarts)}", f"{median:.2f} s", "< 1.5 s", median < 1.5


def print_report(header: str, baseline: float, m: Measured) -> None:
    watcher, engine = m.watcher, m.engine
    print(f"\n{header}\nPrometheus baseline (scraping, no rules, no queries): {baseline:.4f} CPU s per s\n")
    print_side_by_side(watcher, engine, m.peak_rss)
    ordered = sorted(m.cycles)
    p50 = statistics.median(ordered) if ordered else NAN
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else NAN
    print("\ncycles (per rule evaluation: from the time it was due to its query answered):")
    if ordered:
        print(f"  {len(ordered)} evaluations; max {ordered[-1]:.3f} s")
    own = _per_1k(watcher.cpu, watcher.evaluations)
    answering = _per_1k(watcher.extra["answering_cpu"], watcher.evaluations)
    engine_cpu = _per_1k(engine.cpu, engine.evaluations)
    print("\nratios of CPU per evaluation, from this one run:")
    print(f"  watcher / Prometheus rule engine                       {_ratio(own, engine_cpu)}")
    print(f"  (watcher + Prometheus answering it) / rule engine      {_ratio(own + answering, engine_cpu)}")
    print(f"  Prometheus answering watcher's queries / rule engine   {_ratio(answering, engine_cpu)}")
    print(f"  (Prometheus answering watcher: {watcher.extra['answering_cpu']:.2f} CPU s in the window)")
    missed = watcher.extra["missed_whole_run"]
    rows: list[tuple[str, str, str, bool]] = [
        ("missed runs (whole run, cold cycle included)", f"{missed:.0f}", "0", missed == 0),
        (f"cycle p99 (of {len(ordered)} evaluations); p50 {p50:.3f} s", f"{p99:.3f} s", "< 1 s", p99 < 1.0),
        (
            "watcher CPU / rule-engine CPU, per evaluation",
            _ratio(own, engine_cpu),
            "< 1.5x",
            0 < own < 1.5 * engine_cpu,
        ),
    ]
    rows += [start_row(f"{m.rules} rules", m.starts_many), start_row("5 rules", m.starts_few)]
    rows.append(
        (
            f"idle RSS, 5 rules, no drift rule, after {IDLE_AFTER:.0f} s",
            f"{m.idle_rss / MB:.1f} MB",
            "< 80 MB",
            m.idle_rss < 80 * MB,
        )
    )
    rows.append(
        ("heavy packages mapped (pandas, numpy, ...)", ", ".join(m.heavy) or "none", "none", not m.heavy)
    )
    print("\ntargets (start-to-ready: restarts on an existing database, judged on the median; MB = 10^6 B):")
    for label, value, target, met in rows:
        print(f"  {label:<66}{value:>9}  {target:<8} {'met' if met else 'MISSED'}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per measured window")
    parser.add_argument("--models", type=int, default=20, help="rule files, one per model")
    parser.add_argument("--rules-per-model", type=int, default=50)
    parser.add_argument("--scrape-interval", default="2s")
    parser.add_argument("--starts", type=int, default=3, help="restarts measured per rule count")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument(
        "--shared-queries",
        action="store_true",
        help="let rules of a file share queries, as the templates repeat (watcher asks each once)",
    )
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="Prometheus' rule engine, vmalert and watcher on one rule file per model (see _side_by_side)",
    )
    parser.add_argument("--side-models", type=int, default=1000, help="models side by side")
    parser.add_argument("--big-models", type=int, default=10_000, help="then watcher alone (0: skip)")
    parser.add_argument("--vector-series", type=int, default=10_000, help="then one rule over them (0: skip)")
    parser.add_argument("--cycles", type=int, default=2, help="15 s cycles per side-by-side window")
    parser.add_argument(
        "--side-query", choices=("latency", "gauge"), default="latency", help="the rule's kind"
    )
    options = parser.parse_args(argv)
    if options.side_by_side:
        return side_by_side(options)
    rules = s.rule_specs(options.models, options.rules_per_model, shared=options.shared_queries)
    few = s.rule_specs(1, 5)
    work = Path(tempfile.mkdtemp(prefix="watcher-bench-"))
    exporter = s.ModelExporter(s.model_names(options.models))
    prometheus = s.Prometheus(work / "prometheus", exporter.target, options.scrape_interval)
    load = Path("/proc/loadavg").read_text().split()[0]
    try:
        prometheus.start()
        s.wait_for_data(prometheus, options.models)
        progress("baseline: Prometheus scraping, no rules")
        baseline = baseline_cpu_per_second(prometheus, max(20.0, options.duration / 4))
        progress(f"watcher with {len(rules)} rules")
        watcher, cycle_times, first_start, peak = measure_watcher(
            work, prometheus, rules, options.duration, baseline
        )
        progress("Prometheus' rule engine with the same rules")
        engine = measure_rule_engine(work, prometheus, rules, options.duration, baseline)
        progress("start-to-ready and idle memory")
        starts_many = measure_starts(work / "starts-many", prometheus, rules, options.starts)
        starts_few = measure_starts(work / "starts-few", prometheus, few, options.starts)
        idle_rss, heavy = measure_idle(starts_few)
    finally:
        prometheus.stop()
        exporter.close()
    header = (
        f"{len(rules)} rules ({options.models} files x {options.rules_per_model}, "
        f"{len({r.query for r in rules})} distinct queries), every 15s, against a "
        f"real Prometheus scraping {options.models} models every {options.scrape_interval}; "
        f"{options.duration:.0f} s windows; {os.cpu_count()} CPUs, load average {load} at start;\n"
        f"the watcher phase's own start (fresh database) took {first_start:.2f} s"
    )
    measured = Measured(
        len(rules), watcher, cycle_times, first_start, peak, engine, starts_many, starts_few, idle_rss, heavy
    )
    print_report(header, baseline, measured)
    if options.keep:
        print(f"\nworking directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def side_by_side(options: argparse.Namespace) -> int:
    import _side_by_side as sbs

    scrape = "15s" if options.scrape_interval == "2s" else options.scrape_interval  # less baseline noise
    plan = sbs.Plan(
        options.side_models,
        options.big_models,
        options.vector_series,
        options.cycles,
        scrape,
        options.side_query,
    )
    work = Path(tempfile.mkdtemp(prefix="watcher-bench-"))
    try:
        rows = sbs.run(plan, work)
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)
    sbs.report(rows, plan)
    if options.keep:
        print(f"\nworking directory kept: {work}")
    return 0


def progress(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
