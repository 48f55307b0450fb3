"""Processes and measurements the benchmarks share: a real Prometheus, a synthetic exporter it
scrapes, `watcher run` as a subprocess, and what /proc says about a process.

CPU and memory are read from /proc (utime + stime, VmRSS, VmHWM), so the same numbers are taken
for the Go and the Python process alike.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from string import Template

from prometheus_client.parser import text_string_to_metric_families

# The repository's root: the benchmarks share the tests' stands (tests/support).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.prometheus import MetricsExporter
from watcher.rules.promql import ParsedQuery, parse_query, render
from watcher.ruletest.prometheus import LocalPrometheus, free_port
from watcher.sources.prometheus_batch import BATCH_LABEL_PREFIX

WATCHER = Path(sys.executable).parent / "watcher"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Bounds on waiting for a process to come up or go away: waits, never measurements.
READY_WITHIN = 60.0
STOP_WITHIN = 30.0


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """Status and body; status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


# --- /proc -----------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def memory_bytes(pid: int, field: str) -> int:
    """A memory line of /proc/PID/status (VmRSS: now, VmHWM: peak resident), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def mapped_files(pid: int) -> set[str]:
    """Every file mapped into the process: its shared libraries and extension modules."""
    paths = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            paths.add(parts[5])
    return paths


# --- metrics text ---------------------------------------------------------------------------------
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of a /metrics page, keyed by name and sorted labels."""
    status, body = http_get(url, timeout=30)
    if status != 200:
        raise RuntimeError(f"{url} answered {status}")
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample called `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (n, pairs), value in samples.items() if n == name and wanted <= set(pairs))


# --- a synthetic exporter ---------------------------------------------------------------------------
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Share of requests at or under each bucket: a p50 near 40 ms and a p99 near 0.4 s.
LATENCY_SHARES = (0.02, 0.08, 0.25, 0.55, 0.80, 0.95, 0.992, 0.999, 1.0)


class ModelExporter:
    """/metrics of `models` model servers whose counters grow steadily with time.

    Per model: a request-latency histogram, requests by status code, feedback by verdict and an
    accuracy gauge; about 17 series a model.
    """

    def __init__(
        self, models: Sequence[str], requests_per_second: float = 40.0, vector_series: int = 0
    ) -> None:
        self.models = tuple(models)
        self.rate = requests_per_second
        # `vector_value{model="v-00000"}` ...: one gauge per model, for a rule over many series.
        self._vector = "".join(f'vector_value{{model="v-{i:05d}"}} 1\n' for i in range(vector_series))
        self.started = time.monotonic()
        # The tests' /metrics stand, serving this text as it is at each scrape.
        self._server = MetricsExporter(lambda: self.text(time.monotonic() - self.started))

    @property
    def target(self) -> str:
        return self._server.target

    def text(self, elapsed: float) -> str:
        lines = []
        for index, model in enumerate(self.models):
            # Models differ a little in traffic, so their series are not copies of each other.
            requests = elapsed * self.rate * (1 + index / len(self.models))
            m = f'model="{model}"'
            for le, share in zip(LATENCY_BUCKETS, LATENCY_SHARES, strict=True):
                lines.append(f'request_seconds_bucket{{{m},le="{le}"}} {math.floor(requests * share)}')
            lines.append(f'request_seconds_bucket{{{m},le="+Inf"}} {math.floor(requests)}')
            lines.append(f"request_seconds_sum{{{m}}} {requests * 0.06:.3f}")
            lines.append(f"request_seconds_count{{{m}}} {math.floor(requests)}")
            lines.append(f'requests_total{{{m},code="200"}} {math.floor(requests * 0.99)}')
            lines.append(f'requests_total{{{m},code="500"}} {math.floor(requests * 0.01)}')
            lines.append(f'feedback_total{{{m},verdict="good"}} {math.floor(requests * 0.097)}')
            lines.append(f'feedback_total{{{m},verdict="bad"}} {math.floor(requests * 0.003)}')
            lines.append(f"model_accuracy{{{m}}} {0.95 + 0.01 * math.sin(elapsed / 60 + index):.4f}")
        return "\n".join(lines) + "\n" + self._vector

    def close(self) -> None:
        self._server.close()


# --- Prometheus -------------------------------------------------------------------------------------
class Prometheus(LocalPrometheus):
    """The product's LocalPrometheus scraping the exporter; its configuration can be rewritten and
    reloaded, and every query it answers goes to a query log."""

    def __init__(
        self, work_dir: Path, scrape_target: str, scrape_interval: str, *, log_queries: bool = True
    ) -> None:
        self.query_log = work_dir / "queries.jsonl"
        self._log_queries = log_queries
        self._scrape_target = scrape_target
        self._scrape_interval = scrape_interval
        work_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(work_dir, config=self._config_text([]), retention="15d")

    def write_rules(self, rule_files: Sequence[Path]) -> None:
        self.write_config(self._config_text(rule_files))

    def _config_text(self, rule_files: Sequence[Path]) -> str:
        # Every query, the rule engine's included, goes to the query log: the same cost in every
        # phase, and the per-query timings the cycle figures are read from.
        lines = [
            "global:",
            f"  scrape_interval: {self._scrape_interval}",
            "  evaluation_interval: 15s",
            *([f"  query_log_file: {self.query_log}"] if self._log_queries else []),
            "scrape_configs:",
            "  - job_name: models",
            "    static_configs:",
            f'      - targets: ["{self._scrape_target}"]',
        ]
        if rule_files:
            lines.append("rule_files:")
            lines += [f"  - {path}" for path in rule_files]
        return "\n".join(lines) + "\n"

    def start(self, ready_within: float = READY_WITHIN) -> None:
        failure = super().start(ready_within)
        if failure is not None:
            raise RuntimeError(failure.reason)

    def reload(self) -> None:
        """Re-read the configuration (SIGHUP) and wait until the reload has been applied."""
        before = self._reloads()
        os.kill(self.pid, signal.SIGHUP)
        wait_until(lambda: self._reloads() > before, "Prometheus configuration reload")

    def _reloads(self) -> float:
        samples = scrape(f"{self.url}/metrics")
        if total(samples, "prometheus_config_last_reload_successful") != 1:
            raise RuntimeError("Prometheus rejected its configuration; see prometheus.log")
        return total(samples, "prometheus_config_last_reload_success_timestamp_seconds")

    def query(self, promql: str) -> list[object]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, body = http_get(url)
        if status != 200:
            raise RuntimeError(f"query {promql!r} answered {status}: {body[:200]}")
        result: list[object] = json.loads(body)["data"]["result"]
        return result


# --- the daemon -------------------------------------------------------------------------------------
class Watcher:
    """`watcher run --config FILE` as a subprocess; its log (JSON lines) goes to a file."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.spawned = time.monotonic()
        self.spawned_wall = time.time()
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [str(WATCHER), "run", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self) -> float:
        """Seconds from spawning the process to /readyz answering 200 (polled every 10 ms)."""
        deadline = self.spawned + READY_WITHIN
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"watcher exited with {self.process.returncode} before it was ready")
            if http_get(f"{self.url}/readyz", timeout=1)[0] == 200:
                return time.monotonic() - self.spawned
            time.sleep(0.01)
        raise RuntimeError(f"watcher not ready after {READY_WITHIN:.0f}s")

    def metrics(self) -> Samples:
        return scrape(f"{self.url}/metrics")

    def stop(self) -> None:
        stop_process(self.process)
        self._log.close()


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_WITHIN)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(condition: Callable[[], object], what: str, within: float = READY_WITHIN) -> None:
    """Poll `condition` until it returns something true; a bounded wait, not a measurement."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, RuntimeError, KeyError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gave up waiting for {what} after {within:.0f}s")


# --- Prometheus' query log ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LoggedQuery:
    """One line of the query log: the evaluation time asked for, when it was logged (its end)."""

    query: str
    at: float  # the `time` parameter of the instant query (Unix seconds)
    logged: float  # when Prometheus finished it (Unix seconds)
    seconds: float  # Prometheus' own execution time (execTotalTime)
    from_rule_engine: bool
    rules: int = 1  # rule evaluations it answers (watcher batches a rule file's queries)


# The label's name is drawn at random by each watcher process: only its prefix is known here.
_ARM = re.compile(r'label_replace\(\(\n(.*?)\n\), "' + BATCH_LABEL_PREFIX + r'\w*"', re.DOTALL)


def arms(query: str) -> list[str]:
    """The rule queries a logged query answers: the arms of a watcher batch, or itself."""
    return _ARM.findall(query) or [query]


def read_query_log(
    path: Path, offset: int = 0, uses: Mapping[str, int] | None = None
) -> Iterator[LoggedQuery]:
    """Queries logged after byte `offset` of the query log. `uses`: how many rules ask each query
    (watcher asks a query shared by several rules of a file once); 1 for any other."""
    if not path.exists():
        return
    with path.open("rb") as log:
        log.seek(offset)
        for raw in log:
            entry = json.loads(raw)
            params = entry.get("params", {})
            timings = entry.get("stats", {}).get("timings", {})
            yield LoggedQuery(
                query=params.get("query", ""),
                at=_unix(params.get("end") or params.get("start") or entry["ts"]),
                logged=_unix(entry["ts"]),
                seconds=float(timings.get("execTotalTime", 0.0)),
                from_rule_engine="ruleGroup" in entry,
                rules=sum(_rules_asking(arm, uses or {}) for arm in arms(params.get("query", ""))),
            )


# A family of rules asked as one query (watcher/rules/promql_factor.py): `model=~"a|b|..."`.
_FAMILY = re.compile(r'model=~"((?:[^"\\]|\\.)*)"')


def _rules_asking(arm: str, uses: Mapping[str, int]) -> int:
    """How many rules an arm answers: those asking its text, or one per model of a family."""
    if arm in uses:
        return uses[arm]
    family = _FAMILY.search(arm)
    return len(family.group(1).split("|")) if family else 1


def _unix(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- the workload: rules for watcher and the same expressions for Prometheus ---------------------------
INTERVAL = 15.0  # seconds: every rule's `every` and every rule group's `interval`
HEAVY_PACKAGES = ("pandas", "numpy", "scipy", "pyarrow", "sklearn", "evidently")


@dataclass(frozen=True)
class RuleSpec:
    model: str
    name: str
    query: str
    above: bool  # breach when the value is above `threshold` (else below)
    threshold: float
    for_: str = "0s"


def model_names(count: int) -> list[str]:
    return [f"model-{index:02d}" for index in range(count)]


# Per rule kind: name, PromQL ($m: model, $w: range, $q: quantile digits), above?, threshold.
# None of these breach on the exporter's data (p99 ~0.45 s, 1% errors, 3% bad feedback, accuracy
# ~0.95, 40+ requests/s).
_QUANTILE = 'histogram_quantile(0.$q, sum by (le) (rate(request_seconds_bucket{model="$m"}[$w])))'
_ERRORS = 'sum(rate(requests_total{model="$m",code="500"}[$w])) / sum(rate(requests_total{model="$m"}[$w]))'
_TEMPLATES: tuple[tuple[str, str, bool, float], ...] = (
    ("p$q-latency", _QUANTILE, True, 2.0),
    ("error-rate", _ERRORS, True, 0.05),
    (
        "bad-feedback",
        'sum(rate(feedback_total{model="$m",verdict="bad"}[$w])) / sum(rate(feedback_total{model="$m"}[$w]))',
        True,
        0.2,
    ),
    (
        "mean-latency",
        'sum(rate(request_seconds_sum{model="$m"}[$w])) / sum(rate(request_seconds_count{model="$m"}[$w]))',
        True,
        1.0,
    ),
    ("accuracy", 'avg_over_time(model_accuracy{model="$m"}[$w])', False, 0.8),
    ("traffic", 'sum(rate(requests_total{model="$m"}[$w]))', False, 1.0),
)
_RANGES = ("1m", "5m", "10m")
_QUANTILES = ("5", "9", "95", "99")


def rule_specs(models: int, per_model: int, *, shared: bool = False) -> list[RuleSpec]:
    """`per_model` rules for each model. With 10 or more, the last two of each model breach (one
    at once, one after `for: 1m`), so incidents open as in production (action notify: no rollback).

    The templates repeat within a model (about 24 distinct queries in 50 rules). watcher asks a
    query shared by several rules of one file once, which the rule engine cannot; unless `shared`,
    each rule's query is made distinct (`+ 0 * index`, the same value) so that both do the same
    amount of query work."""
    rules = []
    for model in model_names(models):
        for index in range(per_model):
            name, text, above, threshold = _TEMPLATES[index % len(_TEMPLATES)]
            variant = index // len(_TEMPLATES)
            values = {"m": model, "w": _RANGES[variant % len(_RANGES)], "q": _QUANTILES[variant % 4]}
            for_ = "0s"
            if per_model >= 10 and index >= per_model - 2:
                breach_at_once = index == per_model - 2
                text, threshold = (_QUANTILE, 0.01) if breach_at_once else (_ERRORS, 0.001)
                above, for_ = True, "0s" if breach_at_once else "1m"
            query = Template(text).substitute(values)
            if not shared:
                query = f"({query}) + 0 * {index}"
            rule_name = f"{Template(name).substitute(values)}-{index:02d}"
            rules.append(RuleSpec(model, rule_name, query, above, threshold, for_))
    return rules


def query_uses(rules: Sequence[RuleSpec]) -> dict[str, int]:
    """How many rules ask each query, by the text watcher sends: the query re-printed from its tree."""
    return dict(Counter(_as_sent(rule.query) for rule in rules))


def _as_sent(query: str) -> str:
    parsed = parse_query(query)
    text = render(parsed, None) if isinstance(parsed, ParsedQuery) else query
    return text if isinstance(text, str) else query


def _by_model(rules: Sequence[RuleSpec]) -> dict[str, list[RuleSpec]]:
    grouped: dict[str, list[RuleSpec]] = {}
    for rule in rules:
        grouped.setdefault(rule.model, []).append(rule)
    return grouped


def write_watcher_setup(directory: Path, rules: Sequence[RuleSpec], prometheus_url: str) -> tuple[Path, int]:
    """watcher.yaml (SQLite in `directory`) and one rule file per model; the config and its port."""
    (directory / "rules").mkdir(parents=True, exist_ok=True)
    for model, specs in _by_model(rules).items():
        lines = [f"model: {model}", "rules:"]
        for rule in specs:
            lines += [
                f"  - name: {rule.name}",
                "    signal: custom",
                f"    prometheus: {json.dumps(rule.query)}",
                f"    {'above' if rule.above else 'below'}: {rule.threshold}",
                f"    for: {rule.for_}",
                "    every: 15s",
                "    action: notify",
                "    severity: info",
            ]
        (directory / "rules" / f"{model}.yaml").write_text("\n".join(lines) + "\n")
    port = free_port()
    config = directory / "watcher.yaml"
    config.write_text(
        "database: sqlite:///watcher.db\nrules: rules/\n"
        "evaluation: {every: 15s, timeout: 10s}\n"
        f"prometheus: {{url: {json.dumps(prometheus_url)}}}\n"
        f"http: {{listen: 127.0.0.1:{port}}}\n"
    )
    return config, port


def write_prometheus_rules(directory: Path, rules: Sequence[RuleSpec]) -> list[Path]:
    """The same expressions as alerting rules: one group per model, interval 15s."""
    directory.mkdir(parents=True)
    files = []
    for model, specs in _by_model(rules).items():
        lines = ["groups:", f"  - name: {model}", "    interval: 15s", "    rules:"]
        for rule in specs:
            compare = ">" if rule.above else "<"
            lines += [
                f"      - alert: {rule.name.replace('-', '_')}",
                f"        expr: {json.dumps(f'({rule.query}) {compare} {rule.threshold}')}",
                f"        for: {rule.for_}",
                "        labels: {severity: info}",
            ]
        path = directory / f"{model}.yaml"
        path.write_text("\n".join(lines) + "\n")
        files.append(path)
    return files


def wait_for_data(prometheus: Prometheus, models: int) -> None:
    """Until every model has a rate over the shortest range the rules use."""
    wait_until(
        lambda: len(prometheus.query("sum by (model) (rate(requests_total[1m]))")) == models, "scraped data"
    )


def loaded_rule_count(prometheus: Prometheus) -> int:
    status, body = http_get(f"{prometheus.url}/api/v1/rules")
    groups = json.loads(body)["data"]["groups"] if status == 200 else []
    return sum(len(group["rules"]) for group in groups)


def first_cycle_start(query_log: Path, rules: int, since: float, uses: Mapping[str, int]) -> float:
    """The evaluation time of watcher's first query, once its whole first cycle is logged."""
    found: list[float] = []

    def complete() -> bool:
        found[:] = [
            q.at
            for q in read_query_log(query_log, uses=uses)
            if not q.from_rule_engine and q.at >= since
            for _ in range(q.rules)
        ]
        return len(found) >= rules

    wait_until(complete, "watcher's first cycle")
    return min(found)


def heavy_packages(files: set[str]) -> list[str]:
    """Heavy packages with a file mapped into the process (their compiled extension modules)."""
    return sorted({name for name in HEAVY_PACKAGES for path in files if f"/{name}/" in path})
