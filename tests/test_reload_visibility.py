"""A bad rule reload is visible beyond the log: /metrics has watcher_rules_last_reload_successful
and the finding count, /readyz stays 200 on the previous rules, and Slack gets one notice per bad
reload naming file and line (not repeated while the same findings stay)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scenario.fake_slack import BOT_TOKEN, FakeSlack
from watcher.engine.daemon import Daemon
from watcher.engine.reload_report import NOTICE_FINDINGS, notice_text
from watcher.rules.config import load_config

GOOD = """\
model: fraud
rules:
  - name: errors
    signal: error_rate
    sql: {url: "sqlite:///x.db", query: "SELECT 1 AS value"}
    above: 0.5
"""
BAD = GOOD.replace("above: 0.5", "abvoe: 0.5")
ENV = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": "s3cr3t"}


@pytest.fixture
def daemon(tmp_path: Path, slack: FakeSlack) -> Iterator[Daemon]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "fraud.yaml").write_text(GOOD)
    (tmp_path / "watcher.yaml").write_text(
        f"database: sqlite:///{tmp_path / 'w.db'}\nrules: rules/\n"
        "slack:\n  token: ${SLACK_BOT_TOKEN}\n  signing_secret: ${SLACK_SIGNING_SECRET}\n"
        f'  channel: "#ml-alerts"\n  api_url: {slack.api_url}\n'
    )
    loaded = load_config(tmp_path / "watcher.yaml", ENV)
    assert loaded.config is not None, loaded.findings
    running = Daemon(loaded.config, env=ENV)
    running.prepare()
    running.ready = True
    yield running
    running.db.dispose()


def _gauge(daemon: Daemon, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", daemon.metrics.render().decode(), re.MULTILINE)
    assert match is not None, name
    return float(match.group(1))


def _notices(daemon: Daemon, slack: FakeSlack) -> list[str]:
    assert daemon.outbox is not None
    daemon.outbox.deliver_due(datetime.now(UTC))
    return [m.text for m in slack.channel_messages("C0MLALERTS") if "Rule files not reloaded" in m.text]


def test_a_bad_reload_shows_in_metrics_and_slack_once_and_readyz_stays_ready(
    daemon: Daemon, slack: FakeSlack, tmp_path: Path
) -> None:
    assert _gauge(daemon, "watcher_rules_last_reload_successful") == 1
    assert _gauge(daemon, "watcher_rules_last_reload_findings") == 0
    assert _gauge(daemon, "watcher_rules_last_reload_success_timestamp_seconds") > 0

    (tmp_path / "rules" / "fraud.yaml").write_text(BAD)
    daemon.reload()
    assert _gauge(daemon, "watcher_rules_last_reload_successful") == 0
    assert _gauge(daemon, "watcher_rules_last_reload_findings") == 2  # unknown key, no threshold
    assert list(daemon.rules.current.runtime) == ["fraud/errors"]  # the previous rules run on
    ready, _ = daemon.readiness()
    assert ready
    [notice] = _notices(daemon, slack)
    assert "`rules/fraud.yaml:6:5: unknown key 'abvoe' (did you mean 'above'?)`" in notice

    (tmp_path / "rules" / "other.yaml").write_text(GOOD.replace("fraud", "churn"))
    daemon.reload()  # another file changed; fraud.yaml is as bad as before: no second notice
    assert len(_notices(daemon, slack)) == 1
    assert _gauge(daemon, "watcher_rules_last_reload_successful") == 0

    (tmp_path / "rules" / "fraud.yaml").write_text(GOOD)
    daemon.reload()
    assert _gauge(daemon, "watcher_rules_last_reload_successful") == 1
    (tmp_path / "rules" / "fraud.yaml").write_text(BAD)
    daemon.reload()  # bad again after a clean load: told again
    assert len(_notices(daemon, slack)) == 2


def test_the_notice_lists_a_few_findings_and_escapes_slack_markup() -> None:
    lines = [f"rules/x.yaml:{n}:1: unknown key '<!channel>'" for n in range(1, NOTICE_FINDINGS + 4)]
    text = notice_text(lines)
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert text.count("\n• ") == NOTICE_FINDINGS and text.endswith("… and 3 more")
