"""watcher.yaml: every bad fixture with its exact findings, defaults, paths, secrets, adapters.

The fixtures are checked against stand-in adapter settings (`STAND_IN_ADAPTERS`) so that their
expected findings do not move when a real adapter's settings change; the repository's own
watcher.yaml is checked against the adapters really installed.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import ClassVar

import pytest

import watcher.remediations.base
from watcher.remediations.base import AdapterFactory, AdapterSettings, RemediationAdapter
from watcher.rules.config import (
    AdapterUnavailable,
    ConfigResult,
    WatcherConfig,
    load_config,
    mask_url_password,
)
from watcher.rules.durations import RateLimit
from watcher.rules.findings import Finding

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
CONFIG_FIXTURES = FIXTURES / "config"
RULES_CONFIG = CONFIG_FIXTURES / "for-rules.good.yaml"

# The environment the fixtures are loaded with; the bad ones name variables that are not here.
FIXTURE_ENV = {
    "ANALYTICS_DB_URL": "sqlite:///analytics.db",
    "PROM_TOKEN": "prom-token-value",
    "SLACK_BOT_TOKEN": "xoxb-from-the-environment",
    "SLACK_SIGNING_SECRET": "signing-secret-value",
    "SLACK_APP_TOKEN": "xapp-from-the-environment",
    "DB_PASSWORD": "hunter2",
    "DATABASE_URL_WITH_PASSWORD": "postgresql://watcher:hunter2@db/watcher",
}


class MlflowStandIn(AdapterSettings):
    tracking_uri: str
    model: str
    alias: str = "champion"


class KubernetesStandIn(AdapterSettings):
    namespace: str
    deployment: str


class _StandInFactory:
    def __init__(self, settings_model: type[AdapterSettings]) -> None:
        self.settings_model: type[AdapterSettings] = settings_model

    def create(self, settings: AdapterSettings, *, base_dir: Path) -> RemediationAdapter:
        raise NotImplementedError("configuration tests never build adapters")


class StandInAdapters:
    """An adapter catalog with two adapters, `mlflow` and `kubernetes`."""

    factories: ClassVar[dict[str, _StandInFactory]] = {
        "mlflow": _StandInFactory(MlflowStandIn),
        "kubernetes": _StandInFactory(KubernetesStandIn),
    }

    def find(self, name: str) -> AdapterFactory | AdapterUnavailable | None:
        return self.factories.get(name)  # type: ignore[return-value]

    def names(self) -> list[str]:
        return sorted(self.factories)


STAND_IN_ADAPTERS = StandInAdapters()


def load_fixture_config(path: Path, env: dict[str, str] | None = None) -> ConfigResult:
    return load_config(path, FIXTURE_ENV if env is None else env, adapters=STAND_IN_ADAPTERS)


def expected_findings(bad_file: Path) -> list[str]:
    expected = bad_file.with_name(bad_file.name.replace(".bad.yaml", ".bad.expected"))
    return expected.read_text().splitlines()


def as_lines(findings: list[Finding], file: Path) -> list[str]:
    assert {finding.file for finding in findings} <= {file}
    return [f"{finding.line}:{finding.column}: {finding.message}" for finding in findings]


BAD_CONFIGS = sorted(CONFIG_FIXTURES.glob("*.bad.yaml"))
GOOD_CONFIGS = sorted(CONFIG_FIXTURES.glob("*.good.yaml"))


def test_there_are_enough_bad_configurations() -> None:
    assert len(BAD_CONFIGS) >= 20


@pytest.mark.parametrize("path", BAD_CONFIGS, ids=lambda path: path.name)
def test_bad_configuration_gives_exactly_its_findings(path: Path) -> None:
    result = load_fixture_config(path)
    assert result.config is None
    assert not result.unreadable
    assert as_lines(result.findings, path) == expected_findings(path)


@pytest.mark.parametrize("path", GOOD_CONFIGS, ids=lambda path: path.name)
def test_good_configuration_loads_without_findings(path: Path) -> None:
    result = load_fixture_config(path)
    assert result.findings == []
    assert isinstance(result.config, WatcherConfig)


def test_defaults_are_the_spec_defaults(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    path = tmp_path / "watcher.yaml"
    path.write_text("{}\n")
    config = load_fixture_config(path).config
    assert config is not None
    assert config.database == f"sqlite:///{tmp_path}/watcher.db"
    assert config.rules == (tmp_path / "rules",)
    assert (config.evaluation.every, config.evaluation.timeout) == (
        timedelta(seconds=30),
        timedelta(seconds=10),
    )
    assert config.prometheus is None and config.slack is None
    assert (config.http.listen, config.http.host, config.http.port) == ("127.0.0.1:9460", "127.0.0.1", 9460)
    assert config.targets == {}
    safety = config.safety
    assert safety.auto_rollback is True
    assert safety.cooldown == timedelta(minutes=30)
    assert safety.max_rollbacks == RateLimit(3, timedelta(hours=24))
    assert (safety.verify_after, safety.stable_after) == (timedelta(minutes=5), timedelta(hours=1))
    assert (config.path, config.base_dir) == (path, tmp_path)


def test_every_section_is_read() -> None:
    config = load_fixture_config(CONFIG_FIXTURES / "full.good.yaml").config
    assert config is not None
    assert config.database == "postgresql+psycopg://watcher:hunter2@db.internal:5432/watcher"
    assert config.rules == (CONFIG_FIXTURES / "../rules/*.good.yaml", CONFIG_FIXTURES / "../rules/data")
    assert config.evaluation.every == timedelta(minutes=1)
    assert config.prometheus is not None
    assert config.prometheus.header_values() == {
        "Authorization": "Bearer prom-token-value",
        "X-Scope-OrgID": "ml",
    }
    slack = config.slack
    assert slack is not None
    assert slack.token.get_secret_value() == "xoxb-from-the-environment"
    assert slack.signing_secret.get_secret_value() == "signing-secret-value"
    assert slack.app_token is not None and slack.app_token.get_secret_value() == "xapp-from-the-environment"
    assert (slack.channel, slack.api_url, slack.approvers) == (
        "#ml-alerts",
        "http://127.0.0.1:3000/api/",
        ("U012ABCDEF", "S0ONCALL"),
    )
    assert (config.http.host, config.http.port) == ("::1", 9460)
    target = config.targets["fraud-prod"]
    assert (target.name, target.adapter) == ("fraud-prod", "mlflow")
    assert target.settings == MlflowStandIn(tracking_uri="sqlite:///mlflow.db", model="fraud-detector")
    assert config.safety.auto_rollback is False
    assert config.safety.max_rollbacks == RateLimit(5, timedelta(minutes=90))
    assert config.safety.cooldown == timedelta(0)


def test_relative_paths_follow_the_config_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc" / "watcher"
    (conf_dir / "rules").mkdir(parents=True)
    (conf_dir / "watcher.yaml").write_text("database: sqlite:///state/watcher.db\nrules: rules\n")
    monkeypatch.chdir(tmp_path)
    config = load_fixture_config(Path("etc/watcher/watcher.yaml")).config
    assert config is not None
    assert config.database == f"sqlite:///{conf_dir}/state/watcher.db"
    assert config.rules == (conf_dir / "rules",)
    assert config.base_dir == conf_dir


def test_absolute_and_in_memory_sqlite_urls_are_kept(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    for url in ("sqlite:////var/lib/watcher.db", "sqlite://", "sqlite:///:memory:"):
        path = tmp_path / "watcher.yaml"
        path.write_text(f"database: '{url}'\n")
        config = load_fixture_config(path).config
        assert config is not None and config.database == url


SECRETS = ("hunter2", "prom-token-value", "xoxb-from-the-environment", "signing-secret-value", "xapp-from")


def test_secrets_never_show_in_repr_or_str() -> None:
    config = load_fixture_config(CONFIG_FIXTURES / "full.good.yaml").config
    assert config is not None
    for shown in (repr(config), str(config), repr(config.slack), repr(config.prometheus)):
        for secret in SECRETS:
            assert secret not in shown
    assert "postgresql+psycopg://watcher:***@db.internal:5432/watcher" in repr(config)


def test_secrets_from_the_environment_never_show_in_findings(tmp_path: Path) -> None:
    path = tmp_path / "watcher.yaml"
    path.write_text(
        "rules: ${DB_PASSWORD}\n"
        "evaluation: {every: '${DATABASE_URL_WITH_PASSWORD}'}\n"
        "http: {listen: '${SLACK_BOT_TOKEN}'}\n"
        "targets: {t: {adapter: '${PROM_TOKEN}'}}\n"
    )
    findings = load_fixture_config(path).findings
    assert len(findings) == 4
    for finding in findings:
        for secret in SECRETS:
            assert secret not in str(finding)
    assert "'${DATABASE_URL_WITH_PASSWORD}'" in findings[1].message


def test_mask_url_password() -> None:
    assert mask_url_password("postgresql+psycopg://u:pw@h:5432/d") == "postgresql+psycopg://u:***@h:5432/d"
    assert mask_url_password("sqlite:///x.db") == "sqlite:///x.db"
    assert "s3cret" not in mask_url_password("not-a-url://u:s3cret@host")


def test_a_token_that_comes_through_the_environment_is_fine(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    path = tmp_path / "watcher.yaml"
    path.write_text("slack: {token: '${SLACK_BOT_TOKEN}', signing_secret: x, channel: '#a'}\n")
    result = load_fixture_config(path)
    assert result.findings == []


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    result = load_fixture_config(tmp_path / "nowhere.yaml")
    assert result.unreadable and result.config is None
    assert [str(finding) for finding in result.findings] == [
        f"{tmp_path}/nowhere.yaml:1:1: cannot read file: No such file or directory"
    ]


def test_a_directory_is_unreadable(tmp_path: Path) -> None:
    assert load_fixture_config(tmp_path).unreadable


def test_every_problem_is_reported_at_once() -> None:
    result = load_fixture_config(CONFIG_FIXTURES / "bad-durations.bad.yaml")
    assert len(result.findings) == 5


def test_adapter_settings_receive_the_target_name_when_they_want_it(tmp_path: Path) -> None:
    class Named(AdapterSettings):
        url: str
        target: str | None = None

    class Catalog(StandInAdapters):
        factories: ClassVar[dict[str, _StandInFactory]] = {"webhook": _StandInFactory(Named)}

    (tmp_path / "rules").mkdir()
    path = tmp_path / "watcher.yaml"
    path.write_text("targets: {ranker-prod: {adapter: webhook, url: 'http://127.0.0.1:8088/'}}\n")
    config = load_config(path, {}, adapters=Catalog()).config
    assert config is not None
    assert config.targets["ranker-prod"].settings == Named(url="http://127.0.0.1:8088/", target="ranker-prod")


def test_an_adapter_that_cannot_be_imported_is_a_finding(tmp_path: Path) -> None:
    class Broken(StandInAdapters):
        def find(self, name: str) -> AdapterFactory | AdapterUnavailable | None:
            return AdapterUnavailable("ModuleNotFoundError: No module named 'watcher.remediations.gone'")

    (tmp_path / "rules").mkdir()
    path = tmp_path / "watcher.yaml"
    path.write_text("targets:\n  t:\n    adapter: gone\n")
    findings = load_config(path, {}, adapters=Broken()).findings
    assert [str(f) for f in findings] == [
        f"{path}:3:14: adapter 'gone' cannot be loaded: "
        "ModuleNotFoundError: No module named 'watcher.remediations.gone'"
    ]


def test_the_default_lookup_is_the_installed_entry_points(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    path = tmp_path / "watcher.yaml"
    path.write_text("targets:\n  t:\n    adapter: no-such-adapter\n")
    findings = load_config(path, {}).findings
    installed = ", ".join(watcher.remediations.base.installed_adapter_names())
    assert [f.message for f in findings] == [
        f"unknown adapter 'no-such-adapter': installed adapters are {installed}"
    ]


def test_the_example_configuration_loads_with_the_installed_adapters() -> None:
    result = load_config(REPO / "watcher.yaml", {})
    assert result.findings == []
    config = result.config
    assert config is not None
    assert sorted(config.targets) == ["churn-prod", "fraud-prod", "ranker-prod", "recs-prod"]
    assert {name: target.adapter for name, target in config.targets.items()} == {
        "fraud-prod": "mlflow",
        "churn-prod": "kubernetes",
        "ranker-prod": "webhook",
        "recs-prod": "command",
    }
    assert config.safety.verify_after == timedelta(minutes=2)
    assert config.prometheus is not None and config.slack is None
