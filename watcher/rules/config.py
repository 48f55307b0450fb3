"""watcher.yaml, the daemon's configuration (SPEC.md section 1).

`load_config` reports every problem of the file at once, each at its line and column, and gives
a configuration only when there is none. Unknown keys are errors everywhere: a typo must never
silently disable a safety. Secrets are `SecretStr`, and database URLs show their password masked
in repr and str, so they never reach a log line or a finding.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    SerializeAsAny,
    StrictBool,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from watcher.remediations import base as remediation_base
from watcher.remediations.base import AdapterFactory, AdapterSettings
from watcher.rules.durations import Duration, PositiveDuration, RateLimit, RateLimitField
from watcher.rules.findings import Finding, did_you_mean, fragment, sorted_findings, validation_findings
from watcher.rules.yamlsafe import YamlDocument, YamlFailure, load_mapping_document, without_repeats

# Target, model and rule names: they end up in rule ids, metrics labels and Slack buttons.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
GLOB_CHARACTERS = frozenset("*?[")


class FrozenModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class MaskedUrlRepr(BaseModel):
    """Shows the URL fields named in `masked_urls` with their password masked in repr and str
    (the fields stay plain strings, ready for SQLAlchemy)."""

    masked_urls: ClassVar[tuple[str, ...]] = ()

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name in self.masked_urls and isinstance(value, str):
                yield name, mask_url_password(value)
            else:
                yield name, value


def mask_url_password(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Not a URL SQLAlchemy understands: mask anything between `://user:` and `@` anyway.
        return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", url)


def resolve_sqlite_url(url: str, base_dir: Path) -> str:
    """`sqlite:///rel.db` made absolute against `base_dir`, as Prometheus resolves rule_files."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if not parsed.drivername.startswith("sqlite") or not database or database == ":memory:":
        return url
    if database.startswith("file:") or Path(database).is_absolute():
        return url
    resolved = os.path.normpath(base_dir / database)
    return parsed.set(database=resolved).render_as_string(hide_password=False)


def context_base_dir(info: ValidationInfo) -> Path | None:
    """The directory relative paths are resolved against; None when built in code."""
    context = info.context if isinstance(info.context, dict) else {}
    base_dir = context.get("base_dir")
    return base_dir if isinstance(base_dir, Path) else None


def _database_url(value: Any, info: ValidationInfo) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not isinstance(value, str):
        return value  # pydantic reports the wrong type
    try:
        make_url(value)
    except (ArgumentError, ValueError):
        # The value itself stays out of the message: it may hold a password.
        raise ValueError(
            "not a database URL: expected e.g. sqlite:///file.db or postgresql+psycopg://host/db"
        ) from None
    base_dir = context_base_dir(info)
    return resolve_sqlite_url(value, base_dir) if base_dir is not None else value


# A SQLAlchemy URL; a relative SQLite file is resolved against the naming file's directory.
DatabaseUrl = Annotated[str, BeforeValidator(_database_url)]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _rule_location(value: Path, info: ValidationInfo) -> Path:
    base_dir = context_base_dir(info)
    if base_dir is None:
        return value
    located = base_dir / value
    if GLOB_CHARACTERS.isdisjoint(str(value)):
        if not located.exists():
            raise ValueError(f"'{value}' does not exist")
    elif not glob.glob(str(located), recursive=True):
        raise ValueError(f"no file matches '{value}'")
    return located


RuleLocation = Annotated[Path, AfterValidator(_rule_location)]


class EvaluationSettings(FrozenModel):
    every: PositiveDuration = timedelta(seconds=30)
    timeout: PositiveDuration = timedelta(seconds=10)

    @field_validator("timeout")
    @classmethod
    def _shorter_than_every(cls, timeout: timedelta, info: ValidationInfo) -> timedelta:
        every = info.data.get("every")
        if every is not None and timeout >= every:
            raise ValueError("must be shorter than evaluation.every, the default rule interval")
        return timeout


class PrometheusSettings(FrozenModel):
    url: StrictStr
    headers: dict[StrictStr, SecretStr] = {}

    def header_values(self) -> dict[str, str]:
        """The headers to send, secrets revealed: for the HTTP client only, never for a log."""
        return {name: value.get_secret_value() for name, value in self.headers.items()}

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", url):
            raise ValueError("expected an http:// or https:// URL")
        return url


class SlackSettings(FrozenModel):
    token: SecretStr
    signing_secret: SecretStr
    channel: StrictStr = Field(min_length=1)
    api_url: StrictStr = "https://slack.com/api/"
    app_token: SecretStr | None = None  # receive button presses over Socket Mode
    approvers: tuple[StrictStr, ...] = ()  # Slack user or user-group ids; empty: nobody


class HttpSettings(FrozenModel):
    listen: StrictStr = "127.0.0.1:9460"
    # Where people reach the web pages (a proxy's address, say): Slack links point there.
    external_url: StrictStr | None = None

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, listen: str) -> str:
        match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})", listen)
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:9460 or [::1]:9460")
        return listen

    @field_validator("external_url")
    @classmethod
    def _absolute_http_url(cls, url: str | None) -> str | None:
        if url is not None and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", url):
            raise ValueError("expected an absolute http:// or https:// URL, e.g. https://watcher.example.com")
        return url.rstrip("/") if url is not None else None

    @property
    def base_url(self) -> str:
        """The pages' address as links give it: external_url, else the listen address."""
        return self.external_url or f"http://{self.listen}"

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class SafetySettings(FrozenModel):
    auto_rollback: StrictBool = True
    cooldown: Duration = timedelta(minutes=30)
    max_rollbacks: RateLimitField = RateLimit(count=3, period=timedelta(hours=24))
    verify_after: PositiveDuration = timedelta(minutes=5)
    stable_after: PositiveDuration = timedelta(hours=1)


class TargetConfig(FrozenModel):
    """One target: the adapter's name and its settings, validated by the adapter's own model."""

    name: str
    adapter: str
    settings: SerializeAsAny[AdapterSettings]


class ConfigFile(MaskedUrlRepr, FrozenModel):
    """What watcher.yaml may say."""

    masked_urls: ClassVar[tuple[str, ...]] = ("database",)

    database: DatabaseUrl = Field(default="sqlite:///watcher.db", validate_default=True)
    rules: Annotated[tuple[RuleLocation, ...], BeforeValidator(_one_or_many)] = Field(
        default=(Path("rules/"),), validate_default=True
    )
    evaluation: EvaluationSettings = EvaluationSettings()
    prometheus: PrometheusSettings | None = None
    slack: SlackSettings | None = None
    http: HttpSettings = HttpSettings()
    targets: dict[str, TargetConfig] = {}
    safety: SafetySettings = SafetySettings()


class WatcherConfig(ConfigFile):
    """The loaded configuration, with the file it came from (relative paths are resolved)."""

    path: Path = Path("watcher.yaml")
    base_dir: Path = Path(".")


@dataclass(frozen=True)
class ConfigResult:
    config: WatcherConfig | None
    findings: list[Finding] = field(default_factory=list)
    unreadable: bool = False  # missing or unreadable: there is nothing to work from


@dataclass(frozen=True)
class AdapterUnavailable:
    reason: str


class AdapterCatalog(Protocol):
    """Where adapter names are looked up: the installed entry points, or a stand-in in tests."""

    def find(self, name: str) -> AdapterFactory | AdapterUnavailable | None: ...

    def names(self) -> list[str]: ...


class InstalledAdapters:
    """Adapters registered under the entry point group `watcher.remediations`."""

    def find(self, name: str) -> AdapterFactory | AdapterUnavailable | None:
        try:
            return remediation_base.load_factory(name)
        except Exception as error:  # a broken plug-in is a finding, never a crash of the checker
            return AdapterUnavailable(f"{type(error).__name__}: {error}")

    def names(self) -> list[str]:
        return remediation_base.installed_adapter_names()


def load_config(
    path: Path, env: Mapping[str, str] | None = None, *, adapters: AdapterCatalog | None = None
) -> ConfigResult:
    """Read, expand and validate watcher.yaml; a configuration only when nothing is wrong."""
    doc = load_mapping_document(path, os.environ if env is None else env)
    if isinstance(doc, YamlFailure):
        return ConfigResult(None, sorted_findings(doc.findings), unreadable=doc.unreadable)
    base_dir = path.parent.absolute()
    data = dict(doc.data)
    targets, findings = _targets(data.pop("targets", None), doc, adapters or InstalledAdapters(), base_dir)
    data["targets"] = targets
    validated: ConfigFile | None = None
    try:
        validated = ConfigFile.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as error:
        findings.extend(validation_findings(error, doc, ConfigFile))
    findings = [*doc.findings, *without_repeats(doc, findings)]
    if findings or validated is None:
        return ConfigResult(None, sorted_findings(findings))
    config = WatcherConfig.model_construct(**dict(validated), path=path.absolute(), base_dir=base_dir)
    return ConfigResult(config)


def _targets(
    raw: Any, doc: YamlDocument, adapters: AdapterCatalog, base_dir: Path
) -> tuple[dict[str, TargetConfig], list[Finding]]:
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        line, column = doc.position(("targets",))
        return {}, [Finding(doc.path, line, column, "targets: expected a mapping of target names")]
    targets: dict[str, TargetConfig] = {}
    findings: list[Finding] = []
    for name, spec in raw.items():
        target = _target(name, spec, doc, adapters, base_dir)
        if isinstance(target, TargetConfig):
            targets[name] = target
        else:
            findings.extend(target)
    return targets, findings


def _target(
    name: str, spec: Any, doc: YamlDocument, adapters: AdapterCatalog, base_dir: Path
) -> TargetConfig | list[Finding]:
    path = ("targets", name)

    def finding_at(where: tuple[int, int], message: str) -> list[Finding]:
        return [Finding(doc.path, where[0], where[1], message)]

    if not NAME_PATTERN.fullmatch(name):
        return finding_at(
            doc.key_position(path), f"target name '{fragment(name)}': use letters, digits, '-', '_', '.'"
        )
    if not isinstance(spec, dict) or "adapter" not in spec:
        message = f"target '{fragment(name)}' needs a mapping with an adapter: {_installed(adapters)}"
        return finding_at(doc.key_position(path), message)
    adapter = spec["adapter"]
    where = doc.position((*path, "adapter"))
    if not isinstance(adapter, str):
        return finding_at(where, f"adapter: expected an adapter name: {_installed(adapters)}")
    factory = adapters.find(adapter)
    if factory is None:
        hint = did_you_mean(adapter, adapters.names())
        shown = doc.shown((*path, "adapter"), adapter)
        return finding_at(where, f"unknown adapter '{fragment(shown)}'{hint}: {_installed(adapters)}")
    if isinstance(factory, AdapterUnavailable):
        return finding_at(where, f"adapter '{fragment(adapter)}' cannot be loaded: {factory.reason}")
    settings = {key: value for key, value in spec.items() if key != "adapter"}
    if "target" in factory.settings_model.model_fields:
        settings.setdefault("target", name)  # adapters that report their target's name get it
    try:
        validated = factory.settings_model.model_validate(settings, context={"base_dir": base_dir})
    except ValidationError as error:
        return validation_findings(error, doc, factory.settings_model, prefix=path)
    return TargetConfig(name=name, adapter=adapter, settings=validated)


def _installed(adapters: AdapterCatalog) -> str:
    names = adapters.names()
    return f"installed adapters are {', '.join(names)}" if names else "no adapter is installed"
