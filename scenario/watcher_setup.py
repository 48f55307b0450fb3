"""The daemon's side of the scenario: its rule file in the run directory, its watcher.yaml, and
`watcher run` started and awaited.

The example rule file is copied, unchanged, into `<run>/rules/` together with the `data/`
directory next to it. Relative paths in a rule file resolve against the file's own directory, so
its `sqlite:///../var/analytics.db` then means `<run>/var/analytics.db`, the database the model
service writes, and nothing the scenario writes lands in the repository outside `scenario-run/`.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import yaml

from scenario.processes import Child, Supervisor, wait_until
from scenario.registry import Registry

# The user id the scenario's approver presses buttons as (in the fake Slack).
SCENARIO_APPROVER = "U0SCENARIO"


@dataclass(frozen=True)
class SlackSetup:
    """Where the daemon's Slack messages go; secrets only ever travel in `environment`."""

    channel: str
    approvers: tuple[str, ...]
    api_url: str | None  # None: the real Slack Web API
    environment: Mapping[str, str] = field(repr=False)
    socket_mode: bool = False

    @property
    def fake(self) -> bool:
        return self.api_url is not None


def fake_slack_setup(api_url: str) -> SlackSetup:
    """Fresh credentials for one run against the local fake Slack."""
    environment = {
        "SLACK_BOT_TOKEN": f"xoxb-scenario-{secrets.token_hex(12)}",
        "SLACK_SIGNING_SECRET": secrets.token_hex(32),
    }
    return SlackSetup(
        channel="#ml-alerts", approvers=(SCENARIO_APPROVER,), api_url=api_url, environment=environment
    )


def real_slack_setup(environ: Mapping[str, str]) -> SlackSetup | None:
    """Real Slack when SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET and SLACK_CHANNEL are all set."""
    wanted = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_CHANNEL")
    if not all(environ.get(name) for name in wanted):
        return None
    approvers = tuple(a.strip() for a in environ.get("SLACK_APPROVERS", "").split(",") if a.strip())
    passed = {name: environ[name] for name in wanted}
    if environ.get("SLACK_APP_TOKEN"):
        passed["SLACK_APP_TOKEN"] = environ["SLACK_APP_TOKEN"]
    return SlackSetup(
        channel=environ["SLACK_CHANNEL"],
        approvers=approvers,
        api_url=None,
        environment=passed,
        socket_mode="SLACK_APP_TOKEN" in passed,
    )


@dataclass(frozen=True)
class CopiedRules:
    rule_file: Path
    analytics_db: Path


def copy_rules(rule_file: Path, run_dir: Path) -> CopiedRules | str:
    """Copy `rule_file` and the `data/` beside it into `<run>/rules/`; a message when it's missing."""
    if not rule_file.is_file():
        return f"{rule_file} is missing: the scenario runs the example rules of the repository"
    target_dir = run_dir / "rules"
    target_dir.mkdir(parents=True, exist_ok=True)
    copied = target_dir / rule_file.name
    shutil.copyfile(rule_file, copied)
    if (rule_file.parent / "data").is_dir():
        shutil.copytree(rule_file.parent / "data", target_dir / "data", dirs_exist_ok=True)
    return CopiedRules(rule_file=copied, analytics_db=run_dir / "var" / "analytics.db")


@dataclass(frozen=True)
class WatcherPorts:
    prometheus_url: str
    http_port: int


def slack_answers(slack: SlackSetup) -> bool:
    """The Slack Web API at `slack.api_url` accepts the bot token (auth.test)."""
    request = urllib.request.Request(
        f"{slack.api_url}auth.test",
        data=b"",
        method="POST",
        headers={"Authorization": f"Bearer {slack.environment['SLACK_BOT_TOKEN']}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(json.load(response).get("ok"))
    except (OSError, ValueError, urllib.error.URLError):
        return False


def write_watcher_config(
    run_dir: Path,
    rules: CopiedRules,
    registry: Registry,
    slack: SlackSetup,
    ports: WatcherPorts,
    *,
    shortest_every: timedelta,
    verify_after: timedelta,
) -> Path:
    """`<run>/watcher.yaml`: relative paths in it resolve against the run directory."""
    slack_section: dict[str, object] = {
        "token": "${SLACK_BOT_TOKEN}",
        "signing_secret": "${SLACK_SIGNING_SECRET}",
        "channel": slack.channel,
        "approvers": list(slack.approvers),
    }
    if slack.api_url is not None:
        slack_section["api_url"] = slack.api_url
    if slack.socket_mode:
        slack_section["app_token"] = "${SLACK_APP_TOKEN}"
    # A source call must end before the rule's next evaluation is due.
    timeout_s = max(1, min(5, int(shortest_every.total_seconds() // 2)))
    config = {
        "database": "sqlite:///watcher.db",
        "rules": [str(rules.rule_file.relative_to(run_dir))],
        "evaluation": {"every": "10s", "timeout": f"{timeout_s}s"},
        "prometheus": {"url": ports.prometheus_url},
        "slack": slack_section,
        "http": {"listen": f"127.0.0.1:{ports.http_port}"},
        "targets": {
            "fraud-prod": {
                "adapter": "mlflow",
                "tracking_uri": "sqlite:///mlflow.db",
                "model": registry.model,
                "alias": registry.alias,
            }
        },
        "safety": {
            "auto_rollback": True,
            "cooldown": "30m",
            "max_rollbacks": "3 per 24h",
            "verify_after": f"{verify_after.total_seconds():.0f}s",
            "stable_after": "1h",
        },
    }
    path = run_dir / "watcher.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass(frozen=True)
class DaemonFailure:
    message: str


def watcher_command() -> Path | None:
    """The `watcher` console script installed next to this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "watcher"
    if beside.exists():
        return beside
    found = shutil.which("watcher")
    return Path(found) if found else None


def start_daemon(
    supervisor: Supervisor,
    config: Path,
    environment: Mapping[str, str],
    *,
    command: Path | None,
    ready_url: str,
    attach: Callable[[Child], None],
    ready_timeout_s: float = 90.0,
) -> Child | DaemonFailure:
    """Start `watcher run --config FILE`, hand it to `attach` (which must read its output at once,
    or a full pipe stalls it) and wait for /readyz."""
    if command is None:
        return DaemonFailure(
            "the `watcher` command is not installed here: run `pip install -e .` "
            "in the repository (scripts/demo does it)"
        )
    try:
        child = supervisor.spawn(
            "watcher", [str(command), "run", "--config", str(config)], cwd=config.parent, env=environment
        )
    except OSError as error:
        return DaemonFailure(f"cannot start {command}: {error.strerror}")
    attach(child)
    if not wait_until(
        lambda: _ready(ready_url) or not child.running(), timeout_s=ready_timeout_s, interval_s=0.5
    ):
        return DaemonFailure(f"`watcher run` was not ready after {ready_timeout_s:.0f}s ({ready_url})")
    if not child.running():
        return DaemonFailure(f"`watcher run` exited with code {child.process.returncode} before it was ready")
    return child


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False
