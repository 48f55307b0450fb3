"""The live local scenario: a model release goes bad, watcher notices, rolls back, verifies.

    python -m scenario.run [--keep-running] [--bad-after 30] [--timeout 420]

Everything runs locally under `scenario-run/` (wiped at start): a real MLflow registry on SQLite
(`fraud-detector` v1..3, alias `champion` on 3), a scripted model service serving the champion,
Debian's Prometheus scraping it every second, a fake Slack printing messages here (or real Slack
when SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET and SLACK_CHANNEL are set), and `watcher run`.
Version 3 turns bad `--bad-after` seconds after the service starts. The run ends by itself with a
summary; exit 0 when the rollback and its verification happened, 1 otherwise. Nothing is left
running, whether it ends, fails or is interrupted.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from scenario.model_service import service_state, serving
from scenario.monitor import Monitor, print_summary
from scenario.processes import Child, Supervisor, python_module_argv, wait_until
from scenario.progress import Console, forward_output
from scenario.prometheus_setup import PrometheusServer, start_prometheus, wait_for_first_data
from scenario.registry import BAD_VERSION, Registry, create_registry
from scenario.timeline import (
    RuleTiming,
    describe_log_line,
    read_rule_timings,
    seconds,
    timing_table,
)
from scenario.watcher_setup import (
    DaemonFailure,
    SlackSetup,
    WatcherPorts,
    copy_rules,
    fake_slack_setup,
    real_slack_setup,
    slack_answers,
    start_daemon,
    watcher_command,
    write_watcher_config,
)
from watcher.ruletest.prometheus import free_port

REPO = Path(__file__).resolve().parent.parent
RUN_DIR = REPO / "scenario-run"
DEFAULT_RULES = REPO / "rules" / "fraud-detector.yaml"
# A minimum: watcher also waits until each rule's window holds only the restored version.
VERIFY_AFTER = timedelta(seconds=20)
# Only a directory holding this file (or an empty or absent one) is ever wiped.
RUN_MARKER = ".scenario-run"


@dataclass(frozen=True)
class Options:
    keep_running: bool
    bad_after_s: float
    timeout_s: float
    rule_file: Path
    rate_per_s: float
    run_dir: Path
    verify_after: timedelta | None  # None: long enough for the rules' windows
    press_undo: bool = False  # after the summary, press `Undo rollback` with a signed request


class ScenarioFailure(Exception):
    """Ends the run early: a step could not be done. The message says which and why."""


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m scenario.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--keep-running", action="store_true", help="keep everything up after the summary")
    parser.add_argument("--bad-after", type=float, default=30.0, help="seconds until version 3 turns bad")
    parser.add_argument("--timeout", type=float, default=420.0, help="give up after this many seconds")
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES, help="the rule file to run")
    parser.add_argument("--rate", type=float, default=35.0, help="simulated requests per second")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR, help="where everything lives (wiped)")
    parser.add_argument(
        "--verify-after",
        type=float,
        help="seconds (default: the longest window of a rollback rule + 1 interval)",
    )
    parser.add_argument(
        "--press-undo",
        action="store_true",
        help="after the summary, press `Undo rollback` (a signed request) and wait for the alias to go back",
    )
    args = parser.parse_args(argv)
    verify_after = timedelta(seconds=args.verify_after) if args.verify_after is not None else None
    return Options(
        keep_running=args.keep_running, bad_after_s=args.bad_after, timeout_s=args.timeout,
        rule_file=args.rules.resolve(), rate_per_s=args.rate, run_dir=args.run_dir.resolve(),
        verify_after=verify_after, press_undo=args.press_undo,
    )  # fmt: skip


@dataclass
class Endpoints:
    service: str = ""
    prometheus: str = ""
    watcher: str = ""


class Scenario:
    def __init__(self, options: Options, console: Console, supervisor: Supervisor) -> None:
        self.options = options
        self.run_dir = options.run_dir
        self.console = console
        self.supervisor = supervisor
        self.urls = Endpoints()

    def run(self) -> int:
        self._prepare_run_dir()
        copied = copy_rules(self.options.rule_file, self.run_dir)
        if isinstance(copied, str):
            raise ScenarioFailure(copied)
        timings = read_rule_timings(copied.rule_file, default_every=timedelta(seconds=10))
        if isinstance(timings, str):
            raise ScenarioFailure(timings)
        verify_after = self.options.verify_after or VERIFY_AFTER
        self._show_rules(timings, verify_after)
        service_port, watcher_port = free_port(), free_port()
        self.urls.service, self.urls.watcher = (
            f"http://127.0.0.1:{service_port}",
            f"http://127.0.0.1:{watcher_port}",
        )
        # Started first: Prometheus applies new scrape targets only every 5 s, which passes meanwhile.
        prometheus = self._start_prometheus(service_port, watcher_port)
        registry = self._create_registry()
        slack = self._start_slack()
        self._start_service(registry, copied.analytics_db, copied.rule_file.parent, service_port)
        self._await_first_scrape(prometheus)
        shortest_every = min((t.every for t in timings), default=timedelta(seconds=10))
        ports = WatcherPorts(self.urls.prometheus, watcher_port)
        config = write_watcher_config(
            self.run_dir,
            copied,
            registry,
            slack,
            ports,
            shortest_every=shortest_every,
            verify_after=verify_after,
        )
        self._write_press_settings(slack)
        daemon = self._start_daemon(config, slack, copied.analytics_db)
        monitor = self._watch(daemon, registry)
        code = print_summary(self.console, monitor.observations, timings, verify_after=verify_after)
        if monitor.observations.incident_id is not None:
            page = f"{self.urls.watcher}/incidents/{monitor.observations.incident_id}"
            hint = "" if self.options.keep_running else " (add --keep-running to keep it up)"
            self.console.say(f"  incident page: {page}{hint}")
        if code == 0 and self.options.press_undo:
            code = self._press_undo(monitor.observations.incident_id, registry)
        if self.options.keep_running:
            self._keep_running(daemon, monitor, config)
        return code

    def _press_undo(self, incident: int | None, registry: Registry) -> int:
        """Press `Undo rollback` as a Slack approver would: the alias must go back to the bad version."""
        from scenario.press import PressFailure, load_settings, send, signed_press
        from scenario.registry import champion_version

        settings = load_settings(self.run_dir, os.environ)
        if incident is None or isinstance(settings, PressFailure):
            self.console.say("undo: nothing to press (no incident, or real Slack: press it there)")
            return 1
        status, answer = send(signed_press(settings, incident, "undo", at=time.time()))
        self.console.say(f"pressed `Undo rollback` on incident #{incident}: HTTP {status} {answer.strip()}")
        back = wait_until(lambda: champion_version(registry) == BAD_VERSION, timeout_s=60)
        self.console.say(
            f"undo: alias is back on {BAD_VERSION}" if back else "undo: the alias did not go back in 60 s"
        )
        return 0 if status == 200 and back else 1

    def _show_rules(self, timings: list[RuleTiming], verify_after: timedelta) -> None:
        self.console.say(f"rules ({self.options.rule_file.name}):")
        for line in timing_table(timings):
            self.console.say(self.console.dim(line))
        self.console.say(
            self.console.dim(
                f"  verify_after {seconds(verify_after)} (at least; each rule is re-checked once its window "
                "holds only the restored version)"
            )
        )

    def _prepare_run_dir(self) -> None:
        with self.console.step(f"preparing {self._shown(self.run_dir)}/"):
            prepare_run_dir(self.run_dir)

    def _start_prometheus(self, service_port: int, watcher_port: int) -> PrometheusServer:
        with self.console.step("starting Prometheus (scrapes every 1s)") as step:
            jobs = {"model-service": [f"127.0.0.1:{service_port}"], "watcher": [f"127.0.0.1:{watcher_port}"]}
            server = start_prometheus(self.run_dir / "prometheus", jobs)
            if not isinstance(server, PrometheusServer):
                raise ScenarioFailure(f"Prometheus: {server.message}")
            self.supervisor.adopt(server.child)
            self.urls.prometheus = server.url
            step.note(server.url)
        return server

    def _create_registry(self) -> Registry:
        with self.console.step("creating the MLflow registry: fraud-detector v1, v2, v3, champion → 3"):
            return create_registry(self.run_dir)

    def _start_slack(self) -> SlackSetup:
        real = real_slack_setup(os.environ)
        if real is not None:
            self.console.say(f"Slack: the real workspace, channel {real.channel}", stamp=True)
            return real
        with self.console.step("starting the fake Slack (its messages are printed here)") as step:
            port = free_port()
            slack = fake_slack_setup(f"http://127.0.0.1:{port}/api/")
            token = slack.environment["SLACK_BOT_TOKEN"]
            argv = python_module_argv("scenario.fake_slack", "--port", str(port), "--token", token)
            child = self._spawn_shown("fake-slack", argv, self.console.yellow("slack  │"), "slack.log")
            if not wait_until(lambda: slack_answers(slack) or not child.running(), timeout_s=30):
                raise ScenarioFailure("the fake Slack did not answer within 30s; see slack.log")
            if not child.running():
                raise ScenarioFailure("the fake Slack exited; see slack.log")
            step.note(slack.api_url or "")
        return slack

    def _start_service(self, registry: Registry, analytics_db: Path, rules_dir: Path, port: int) -> None:
        title = f"starting the model service (version 3 turns bad after {self.options.bad_after_s:.0f}s)"
        with self.console.step(title) as step:
            reference = rules_dir / "data" / "fraud_reference.csv"
            argv = python_module_argv(
                "scenario.model_service", "--port", str(port), "--db", str(analytics_db),
                "--tracking-uri", registry.tracking_uri, "--bad-after", str(self.options.bad_after_s),
                "--rate", str(self.options.rate_per_s),
                *(["--reference", str(reference)] if reference.exists() else []),
            )  # fmt: skip
            child = self._spawn_shown("model-service", argv, self.console.yellow("service│"), "service.log")
            if not wait_until(lambda: serving(self.urls.service) or not child.running(), timeout_s=60):
                raise ScenarioFailure("the model service did not serve within 60s; see service.log")
            if not child.running():
                raise ScenarioFailure("the model service exited; see service.log")
            step.note(self.urls.service)

    def _spawn_shown(self, name: str, argv: list[str], label: str, log_name: str) -> Child:
        child = self.supervisor.spawn(name, argv, cwd=REPO)
        forward_output(child.process.stdout, self.console, label, self.run_dir / log_name)
        return child

    def _await_first_scrape(self, prometheus: PrometheusServer) -> None:
        with self.console.step("waiting for Prometheus' first scrape of the model service"):
            if not wait_for_first_data(prometheus, "model-service", timeout_s=30):
                raise ScenarioFailure("Prometheus has no data from the model service after 30s")

    def _write_press_settings(self, slack: SlackSetup) -> None:
        from scenario.fake_slack import TEAM_ID

        settings: dict[str, Any] = {"watcher_url": self.urls.watcher, "team_id": None,
                                    "approver": slack.approvers[0] if slack.approvers else None}  # fmt: skip
        if slack.fake:  # a secret made up for this run only; real secrets stay in the environment
            settings["team_id"] = TEAM_ID
            settings["signing_secret"] = slack.environment["SLACK_SIGNING_SECRET"]
        path = self.run_dir / "press.json"
        path.touch(mode=0o600)
        path.write_text(json.dumps(settings, indent=2))

    def _start_daemon(self, config: Path, slack: SlackSetup, analytics_db: Path) -> Child:
        environment = {**os.environ, **slack.environment, "PYTHONUNBUFFERED": "1",
                       "ANALYTICS_DB_URL": f"sqlite:///{analytics_db.resolve()}"}  # fmt: skip
        log = self.run_dir / "watcher.log"

        def attach(child: Child) -> None:
            forward_output(
                child.process.stdout, self.console, self.console.bold("watcher│"), log, describe_log_line
            )

        with self.console.step(f"starting `watcher run --config {self._shown(config)}`") as step:
            daemon = start_daemon(
                self.supervisor, config, environment, command=watcher_command(),
                ready_url=f"{self.urls.watcher}/readyz", attach=attach,
            )  # fmt: skip
            if isinstance(daemon, DaemonFailure):
                step.fail("failed")
                raise ScenarioFailure(daemon_failure_text(daemon, log))
            step.note(self.urls.watcher)
        return daemon

    def _watch(self, daemon: Child, registry: Registry) -> Monitor:
        bad_since = service_state(self.urls.service).get("bad_since")
        bad_at = datetime.fromisoformat(bad_since) if isinstance(bad_since, str) else datetime.now(UTC)
        monitor = Monitor(self.console, registry, self.urls.watcher, bad_at, bad_version=BAD_VERSION)
        self.console.say(
            self.console.bold("watching: the daemon's timeline, Slack and the registry"), stamp=True
        )
        deadline = time.monotonic() + max(0.0, self.options.timeout_s - self.console.elapsed_s())
        seen = monitor.observations
        while not seen.finished and time.monotonic() < deadline and daemon.running():
            monitor.poll()
            time.sleep(1.0)
        if not daemon.running():
            seen.missing.append(f"`watcher run` exited with code {daemon.process.returncode}")
        elif not seen.finished:
            seen.missing.append(f"the scenario timed out after {self.options.timeout_s:.0f}s")
        return monitor

    def _keep_running(self, daemon: Child, monitor: Monitor, config: Path) -> None:
        incident = monitor.observations.incident_id or "ID"
        shown = self._shown(config)
        say = self.console.say
        say()
        say(self.console.bold("Everything keeps running. Look around (Ctrl-C stops it all):"))
        say(f"  curl -s {self.urls.service}/metrics | grep model_requests_total")
        say(f"  Prometheus UI: {self.urls.prometheus}/graph")
        say(f"  Incident page: {self.urls.watcher}/incidents/{incident}   (the board: {self.urls.watcher}/)")
        say(f"  curl -s {self.urls.watcher}/api/incidents | python3 -m json.tool")
        say(f"  curl -s {self.urls.watcher}/metrics | grep watcher_rule_state")
        say(f"  .venv/bin/watcher incidents --config {shown}")
        say(f"  .venv/bin/watcher incident {incident} --config {shown}")
        say(f"  .venv/bin/python -m scenario.press --incident {incident} --action undo   # signed like Slack")
        say(f"  logs: {self._shown(self.run_dir)}/{{watcher,service,slack}}.log, prometheus/prometheus.log")
        while daemon.running():
            monitor.poll()
            time.sleep(1.0)
        say(f"`watcher run` exited with code {daemon.process.returncode}", stamp=True)

    @staticmethod
    def _shown(path: Path) -> str:
        return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def prepare_run_dir(run_dir: Path) -> None:
    """Wipe and recreate `run_dir`, refusing a directory that is not a scenario's or is in use."""
    if run_dir.exists() and any(run_dir.iterdir()) and not (run_dir / RUN_MARKER).exists():
        raise ScenarioFailure(f"{run_dir} is not empty and was not made by the scenario: not wiping it")
    _refuse_when_another_run_is_live(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / RUN_MARKER).write_text("made by python -m scenario.run; wiped at its next start\n")
    (run_dir / "scenario.pid").write_text(str(os.getpid()))


def daemon_failure_text(failure: DaemonFailure, log: Path) -> str:
    tail = log.read_text(errors="replace").strip().splitlines()[-8:] if log.exists() else []
    hint = ""
    if any("No module named 'watcher.cli'" in line for line in tail):
        hint = "\n  the daemon's command line (watcher.cli) is not in this checkout yet"
    shown = "".join(f"\n  │ {line}" for line in tail)
    return f"{failure.message}{hint}{shown}\n  full output: {log}"


def _refuse_when_another_run_is_live(run_dir: Path) -> None:
    try:
        pid = int((run_dir / "scenario.pid").read_text())
    except (OSError, ValueError):
        return
    if pid == os.getpid():
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    except PermissionError:
        pass
    raise ScenarioFailure(f"another scenario is running (pid {pid}); stop it first")


def _release_run_dir(run_dir: Path) -> None:
    pid_file = run_dir / "scenario.pid"
    with contextlib.suppress(OSError, ValueError):
        if int(pid_file.read_text()) == os.getpid():
            pid_file.unlink()


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops every child


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    # MLflow and Alembic announce every table they create; the scenario's own lines say enough.
    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    console = Console()
    supervisor = Supervisor()
    atexit.register(supervisor.stop_all)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    console.say(console.bold("model-watcher: a release goes bad, watcher rolls it back"))
    try:
        return Scenario(options, console, supervisor).run()
    except ScenarioFailure as failure:
        console.say(f"{console.red('scenario failed:')} {failure}", stamp=True)
        return 1
    except KeyboardInterrupt:
        console.say("interrupted", stamp=True)
        return 130
    finally:
        stopping = supervisor.children()
        if stopping:
            console.say(f"stopping {', '.join(child.name for child in reversed(stopping))}", stamp=True)
        supervisor.stop_all()
        _release_run_dir(options.run_dir)


if __name__ == "__main__":
    sys.exit(main())
