"""How long `watcher backtest` takes to replay 24 h at 15 s steps for 100 rules, and how many
requests it makes of Prometheus.

    .venv/bin/python bench/backtest.py                 # 100 rules, 24 h, 15 s steps
    .venv/bin/python bench/backtest.py --hours 6       # a quick look

A real Prometheus (Debian's) is backfilled with promtool: 25 models, one error-ratio gauge each,
a sample every 15 s over the range (plus 10 minutes before it). Four rules per model, each a
distinct query (the latest value, a 5-minute mean, a 2-minute max, a 5-minute 90th percentile),
each with its own target. Five models get a bad release in the middle of the range, so the
replay opens incidents and makes would-be rollbacks, not only quiet evaluations.

It prints the time to fetch the range answers, the time to replay them through the engine, the
total (target: under 30 s), the requests made, the evaluations and what the replay found.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from watcher.backtest.clock import TimeRange
from watcher.backtest.history import VersionChange, VersionHistory
from watcher.backtest.rangedata import RangeFetcher
from watcher.backtest.replay import ReplayPlan, fetch_history, replay
from watcher.backtest.report import summarize, totals
from watcher.rules.config import load_config
from watcher.rules.rulefmt import load_rules
from watcher.ruletest.prometheus import PrometheusUnavailable, start_prometheus

logging.getLogger("watcher").setLevel(logging.ERROR)  # per-evaluation logs are not the point here

MODELS = 25
START = datetime(2024, 3, 1, tzinfo=UTC)
BAD_MODELS = 5
TARGET_SECONDS = 30.0
QUERIES = (
    ("latest", 'max(model_error_ratio{{model="{m}"}})'),
    ("mean-5m", 'avg_over_time(model_error_ratio{{model="{m}"}}[5m])'),
    ("max-2m", 'max_over_time(model_error_ratio{{model="{m}"}}[2m])'),
    ("p90-5m", 'quantile_over_time(0.9, model_error_ratio{{model="{m}"}}[5m])'),
)


def bad_window(model: int, hours: float) -> tuple[datetime, datetime] | None:
    if model >= BAD_MODELS:
        return None
    start = START + timedelta(hours=hours / 2, minutes=7 * model)
    return start, start + timedelta(minutes=20)


def openmetrics(hours: float) -> str:
    lines = ["# TYPE model_error_ratio gauge"]
    end = START + timedelta(hours=hours)
    for model in range(MODELS):
        bad = bad_window(model, hours)
        moment = START - timedelta(minutes=10)
        while moment <= end:
            value = 0.2 if bad and bad[0] <= moment < bad[1] else 0.01 + 0.001 * (model % 7)
            lines.append(f'model_error_ratio{{model="m{model}"}} {value} {int(moment.timestamp())}')
            moment += timedelta(seconds=15)
    return "\n".join([*lines, "# EOF", ""])


def write_workspace(directory: Path, url: str) -> None:
    (directory / "rules").mkdir()
    targets = []
    for model in range(MODELS):
        rules = [f"model: m{model}", f"target: m{model}-prod", "rules:"]
        for name, query in QUERIES:
            rules += [
                f"  - name: {name}",
                "    signal: error_rate",
                f"    prometheus: '{query.format(m=f'm{model}')}'",
                "    above: 0.05",
                "    for: 2m",
                "    every: 15s",
                "    action: rollback",
            ]
        (directory / "rules" / f"m{model}.yaml").write_text("\n".join(rules) + "\n")
        targets.append(f"  m{model}-prod:\n    adapter: command\n    argv: ['false']\n")
    config = f"database: sqlite:///watcher.db\nrules: rules/\nprometheus:\n  url: {url}\ntargets:\n"
    (directory / "watcher.yaml").write_text(config + "".join(targets))


def history(hours: float) -> VersionHistory:
    changes = [VersionChange(START - timedelta(days=1), f"m{m}-prod", "v1") for m in range(MODELS)]
    for model in range(BAD_MODELS):
        bad = bad_window(model, hours)
        assert bad is not None
        changes.append(VersionChange(bad[0] - timedelta(minutes=5), f"m{model}-prod", "v2"))
    return VersionHistory(changes)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hours", type=float, default=24.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as scratch:
        directory = Path(scratch)
        started = time.perf_counter()
        prometheus = start_prometheus(directory / "prometheus", openmetrics(args.hours))
        if isinstance(prometheus, PrometheusUnavailable):
            print(f"Prometheus unavailable: {prometheus.reason}")
            return 0
        print(f"Prometheus backfilled and started in {time.perf_counter() - started:.1f} s")
        try:
            return run(directory, prometheus.url, args.hours)
        finally:
            prometheus.stop()


def run(directory: Path, url: str, hours: float) -> int:
    write_workspace(directory, url)
    config = load_config(directory / "watcher.yaml").config
    assert config is not None and config.prometheus is not None
    rules = load_rules(config).rules
    window = TimeRange(START, START + timedelta(hours=hours))
    plan = ReplayPlan(rules, window, None, history(hours))
    fetcher = RangeFetcher(config.prometheus.url, {}, config.evaluation.timeout)
    started = time.perf_counter()
    failed = fetch_history(plan, fetcher)
    fetched = time.perf_counter()
    result = replay(plan, config, fetcher)
    done = time.perf_counter()
    found = totals(summarize(result))
    total = done - started
    verdict = "met" if total < TARGET_SECONDS else "MISSED"
    unjudged = sum(result.unjudged.values())
    print(
        f"{len(rules)} rules, {hours:g} h at 15 s steps: {result.evaluations} evaluations "
        f"({unjudged} more not judged: after a would-be rollback the record holds the other version)"
    )
    print(f"fetch (range queries):  {fetched - started:6.2f} s, {fetcher.requests_made} requests")
    print(f"replay (engine):        {done - fetched:6.2f} s")
    print(f"total:                  {total:6.2f} s (target under {TARGET_SECONDS:.0f} s: {verdict})")
    print(
        f"found: {found.incidents} incidents, {found.rollbacks} rollbacks; rules not replayed: {len(failed)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
