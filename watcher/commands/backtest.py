"""`watcher backtest`: replay rules over history; writes nothing, acts on nothing."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watcher.commands.common import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, load_or_report

if TYPE_CHECKING:
    from watcher.backtest.history import VersionHistory
    from watcher.backtest.rangedata import RangeFetcher
    from watcher.backtest.replay import ReplayPlan, ReplayResult
    from watcher.backtest.variant import Setting
    from watcher.rules.config import WatcherConfig
    from watcher.rules.rulefmt import Rule


def add_parsers(subparsers: Any) -> None:
    parser = subparsers.add_parser("backtest", help="replay rules over history; acts on nothing")
    parser.add_argument("selection", nargs="*", metavar="RULE_ID|FILE", help="default: every rule")
    parser.add_argument("--config")
    parser.add_argument("--from", dest="start", required=True, help="RFC 3339, or relative like -6h")
    parser.add_argument("--to", dest="end", default="now", help="RFC 3339, or relative (default: now)")
    parser.add_argument("--step", help="evaluate every rule at this step (default: each rule's every)")
    parser.add_argument("--versions", type=Path, help="CSV time,target,version: one row per change")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--plot", type=Path, metavar="FILE.html")
    parser.set_defaults(handler=cmd_backtest)


@dataclass(frozen=True)
class Usage:
    message: str


@dataclass(frozen=True)
class Options:
    start: datetime
    end: datetime
    step: timedelta | None
    settings: list[Setting]


def _options(args: argparse.Namespace, now: datetime) -> Options | Usage:
    from watcher.backtest.clock import BadMoment, parse_moment, whole_second
    from watcher.backtest.variant import BadSetting, parse_settings
    from watcher.rules.durations import InvalidDuration, parse_duration

    start, end = parse_moment(args.start, now), parse_moment(args.end, now)
    for given, moment in (("--from", start), ("--to", end)):
        if isinstance(moment, BadMoment):
            return Usage(f"{given} {moment.message}")
    assert isinstance(start, datetime) and isinstance(end, datetime)
    if end <= start:
        return Usage("--to must be later than --from")
    step: timedelta | None = None
    if args.step is not None:
        parsed = parse_duration(args.step)
        if isinstance(parsed, InvalidDuration) or parsed < timedelta(seconds=1):
            return Usage(f"--step {args.step!r}: expected a duration of at least 1s, like 15s or 1m")
        step = parsed
    settings = parse_settings(args.settings)
    if isinstance(settings, BadSetting):
        return Usage(settings.message)
    return Options(whole_second(start.astimezone(UTC)), whole_second(end.astimezone(UTC)), step, settings)


def _select(config: WatcherConfig, selection: list[str]) -> dict[str, Rule] | str:
    """The rules to replay, or why a named one cannot be (after printing the files' findings)."""
    from watcher.rules.rulefmt import load_rules

    files = [Path(item) for item in selection if item.endswith((".yaml", ".yml")) or Path(item).is_file()]
    ids = [item for item in selection if Path(item) not in files]
    loaded = load_rules(config, files) if files else load_rules(config)
    for finding in loaded.findings:
        print(finding, file=sys.stderr)
    if files and loaded.findings:
        return "the rule files named have problems (above)"
    if not ids:
        return dict(loaded.rules) if loaded.rules else "no rules to replay"
    everything = load_rules(config).rules if files else loaded.rules
    unknown = [rule_id for rule_id in ids if rule_id not in everything]
    if unknown:
        return f"no rule {', '.join(repr(rule_id) for rule_id in unknown)} (check `watcher check`)"
    chosen = dict(loaded.rules) if files else {}
    chosen.update({rule_id: everything[rule_id] for rule_id in ids})
    return chosen


def _history(config: WatcherConfig, versions: Path | None, targets: list[str]) -> VersionHistory | str:
    """watcher's records, with --versions for the times before them; or --versions alone."""
    from watcher.backtest.history import HistoryProblem, read_versions_csv, recorded_history

    recorded = recorded_history(config.database, targets)
    if versions is None:
        return recorded.message if isinstance(recorded, HistoryProblem) else recorded
    given = read_versions_csv(versions)
    if isinstance(given, HistoryProblem):
        return given.message
    if isinstance(recorded, HistoryProblem):
        print(f"watcher backtest: {recorded.message}; using {versions} alone", file=sys.stderr)
        return given
    return recorded.before_records(given)


def _fetcher(config: WatcherConfig, rules: dict[str, Rule]) -> RangeFetcher | None:
    from watcher.backtest.rangedata import RangeFetcher

    if config.prometheus is None or not any(rule.prometheus for rule in rules.values()):
        return None
    return RangeFetcher(config.prometheus.url, config.prometheus.header_values(), config.evaluation.timeout)


def _replay(plan: ReplayPlan, config: WatcherConfig, fetcher: RangeFetcher | None) -> ReplayResult | str:
    from watcher.backtest.replay import fetch_history, replay

    if fetcher is None and any(rule.prometheus for rule in plan.rules.values()):
        return "cannot replay PromQL rules: watcher.yaml has no prometheus section"
    failed = fetch_history(plan, fetcher) if fetcher is not None else []
    if failed:
        return "; ".join(f"cannot replay {item.rule_id}: {item.reason}" for item in failed)
    return replay(plan, config, fetcher)


def cmd_backtest(args: argparse.Namespace) -> int:
    """The replay, with watcher's per-evaluation logs quiet (the report is its output), and the
    loggers as they were afterwards (the command also runs in process, in tests)."""
    logger = logging.getLogger("watcher")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return _cmd_backtest_quietly(args)
    finally:
        logger.setLevel(level)


def _cmd_backtest_quietly(args: argparse.Namespace) -> int:
    from watcher.backtest.clock import TimeRange
    from watcher.backtest.replay import ReplayPlan
    from watcher.backtest.variant import apply_settings

    options = _options(args, datetime.now(UTC))
    if isinstance(options, Usage):
        print(f"watcher backtest: {options.message}", file=sys.stderr)
        return EXIT_USAGE
    config = load_or_report(args)
    if isinstance(config, int):
        return config
    rules = _select(config, args.selection)
    if isinstance(rules, str):
        print(f"watcher backtest: {rules}", file=sys.stderr)
        return EXIT_FINDINGS
    names = sorted({*config.targets, *(rule.target for rule in rules.values() if rule.target)})
    history = _history(config, args.versions, names)
    if isinstance(history, str):
        print(f"watcher backtest: {history}", file=sys.stderr)
        return EXIT_USAGE
    for name in sorted({rule.target for rule in rules.values() if rule.target} - set(history.targets)):
        print(f"watcher backtest: no version history for target {name} (see --versions)", file=sys.stderr)
    window = TimeRange(options.start, options.end)
    fetcher = _fetcher(config, rules)
    baseline = _replay(ReplayPlan(rules, window, options.step, history), config, fetcher)
    if isinstance(baseline, str):
        print(f"watcher backtest: {baseline}", file=sys.stderr)
        return EXIT_FINDINGS
    variant: ReplayResult | str | None = None
    if options.settings:
        changed = {rule_id: apply_settings(rule, options.settings) for rule_id, rule in rules.items()}
        variant = _replay(ReplayPlan(changed, window, options.step, history), config, fetcher)
    if isinstance(variant, str):
        print(f"watcher backtest: {variant}", file=sys.stderr)
        return EXIT_FINDINGS
    _print(baseline, variant, options, args.json)
    if args.plot is not None:
        _plot(args.plot, baseline, variant, options)
    return EXIT_OK


def _print(baseline: ReplayResult, variant: ReplayResult | None, options: Options, as_json: bool) -> None:
    from watcher.backtest.report import report_json, report_lines, side_by_side
    from watcher.backtest.variant import describe

    if as_json:
        document: dict[str, Any] = report_json(baseline)
        if variant is not None:
            document = {
                "baseline": document,
                "variant": report_json(variant),
                "set": describe(options.settings),
            }
        print(json.dumps(document, indent=2))
        return
    if variant is None:
        print("\n".join(report_lines(baseline)))
        return
    lines = side_by_side(
        "baseline (as written)",
        report_lines(baseline),
        f"variant ({describe(options.settings)})",
        report_lines(variant),
    )
    print("\n".join(lines))


def _plot(path: Path, baseline: ReplayResult, variant: ReplayResult | None, options: Options) -> None:
    from watcher.backtest.plot import render_page
    from watcher.backtest.variant import describe

    sections = [("as written", baseline)]
    if variant is not None:
        sections.append((describe(options.settings), variant))
    path.write_text(render_page(sections), encoding="utf-8")
