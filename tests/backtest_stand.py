"""A recorded episode for `watcher backtest` tests: a real Prometheus backfilled with promtool
(watcher.ruletest.prometheus), a watcher.yaml, a rule file and a version history.

The episode, from T0 = 2024-03-01T00:00:00Z (one gauge sample every 15 s):
- fraud-prod runs v1 from T0-3h; the error ratio is 0.01;
- a blip to 0.2 from T0+30m to T0+31m30s, on v1: shorter than the rule's `for: 3m`;
- v2 released at T0+60m; from T0+70m the error ratio is 0.2;
- at T0+90m the record has v1 back and the ratio is 0.01 again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support.services import require
from watcher.ruletest.prometheus import LocalPrometheus, PrometheusUnavailable, start_prometheus

T0 = datetime(2024, 3, 1, tzinfo=UTC)
BLIP = (T0 + timedelta(minutes=30), T0 + timedelta(minutes=31, seconds=30))
BAD = (T0 + timedelta(minutes=70), T0 + timedelta(minutes=90))
RELEASE = T0 + timedelta(minutes=60)
RECOVERY = T0 + timedelta(minutes=90)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def error_ratio(at: datetime) -> float:
    if BLIP[0] <= at <= BLIP[1] or BAD[0] <= at < BAD[1]:
        return 0.2
    return 0.01


def openmetrics(start: datetime, end: datetime, value: Callable[[datetime], float]) -> str:
    lines = ["# TYPE model_error_ratio gauge"]
    moment = start
    while moment <= end:
        lines.append(f'model_error_ratio{{model="fraud"}} {value(moment)} {int(moment.timestamp())}')
        moment += timedelta(seconds=15)
    return "\n".join([*lines, "# EOF", ""])


RULES = """\
model: fraud
target: fraud-prod
rules:
  - name: error-rate
    signal: error_rate
    prometheus: max(model_error_ratio{model="fraud"})
    above: 0.05
    for: 3m
    every: 30s
    action: rollback
"""

CONFIG = """\
database: sqlite:///watcher.db
rules: rules/
prometheus:
  url: {url}
targets:
  fraud-prod:
    adapter: command
    argv: ["touch", "{acted}"]
safety:
  stable_after: 1h
  verify_after: 5m
"""

VERSIONS = f"""\
time,target,version
{iso(T0 - timedelta(hours=3))},fraud-prod,v1
{iso(RELEASE)},fraud-prod,v2
{iso(RECOVERY)},fraud-prod,v1
"""


@dataclass(frozen=True)
class Stand:
    prometheus: LocalPrometheus
    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "watcher.yaml"

    @property
    def versions(self) -> Path:
        return self.directory / "versions.csv"

    @property
    def acted(self) -> Path:
        """A file the target's command would create, were it ever run."""
        return self.directory / "rolled-back"


def episode_stand(directory: Path) -> Iterator[Stand]:
    started = start_prometheus(
        directory / "prometheus",
        openmetrics(T0 - timedelta(minutes=10), T0 + timedelta(hours=3), error_ratio),
    )
    if isinstance(started, PrometheusUnavailable):
        require("prometheus", started.reason)
        return
    try:
        (directory / "rules").mkdir()
        (directory / "rules" / "fraud.yaml").write_text(RULES)
        stand = Stand(started, directory)
        stand.config.write_text(CONFIG.format(url=started.url, acted=stand.acted))
        stand.versions.write_text(VERSIONS)
        yield stand
    finally:
        started.stop()
