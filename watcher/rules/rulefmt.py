"""Rule files (SPEC.md section 2): one file per model, validated like `promtool check rules`.

A file is checked twice over: its schema (types, allowed values, unknown keys) by pydantic, and
what a schema cannot say (one source, one comparison, unique names, known targets, intervals
against the timeout, safe templates) by watcher.rules.rulecheck, on the raw tree.
Every problem of a file is reported at its line and column; a file with any problem contributes
no rule, and never hides the other files' rules or findings.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    Strict,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    ValidationInfo,
)

from watcher.model import Action, DriftMethod, NoDataPolicy, Severity, Signal
from watcher.rules.config import (
    NAME_PATTERN,
    DatabaseUrl,
    FrozenModel,
    MaskedUrlRepr,
    WatcherConfig,
    context_base_dir,
    mask_url_password,
)
from watcher.rules.discovery import discover_rule_files
from watcher.rules.durations import Duration, PositiveDuration
from watcher.rules.findings import Finding, fragment, sorted_findings, validation_findings
from watcher.rules.name_templates import is_template, valid_template
from watcher.rules.rulecheck import semantic_findings
from watcher.rules.yamlsafe import YamlDocument, YamlFailure, load_mapping_document, without_repeats

DATA_FILE_SUFFIXES = (".csv", ".parquet")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")  # as Prometheus has them


def _name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError(f"'{fragment(value)}' is not a valid name: use letters, digits, '-', '_' and '.'")
    return value


def _label_name(value: str) -> str:
    if not LABEL_NAME.fullmatch(value):
        raise ValueError(f"'{fragment(value)}' is not a valid label name: use letters, digits and '_'")
    return value


Name = Annotated[StrictStr, AfterValidator(_name)]


def _name_or_template(value: str) -> str:
    if "{{" in value:
        if not valid_template(value):
            raise ValueError(
                f"'{fragment(value)}' is not a valid name template: use name characters and "
                "{{ labels.NAME }} only"
            )
        return value
    return _name(value)


# A model or target that may be built from a series' labels (see watcher.rules.instances).
NameOrTemplate = Annotated[StrictStr, AfterValidator(_name_or_template)]
Labels = dict[Annotated[StrictStr, AfterValidator(_label_name)], StrictStr]
Number = Annotated[float, Strict()]  # an int is a number too; "0.5" and true are not


def _data_file(value: Path, info: ValidationInfo) -> Path:
    if value.suffix.lower() not in DATA_FILE_SUFFIXES:
        raise ValueError(f"'{fragment(value)}' is neither a .csv nor a .parquet file")
    base_dir = context_base_dir(info)
    if base_dir is None:
        return value
    located = Path(os.path.normpath(base_dir / value))
    if not located.is_file():
        raise ValueError(f"data file '{fragment(value)}' does not exist")
    return located


def _kind(value: Any, mapping_tag: str, other_tag: str, other: type) -> str | None:
    """Which member of a file-or-mapping / count-or-mapping union a raw value is meant to be."""
    if isinstance(value, dict | FrozenModel):
        return mapping_tag
    if isinstance(value, other) and not isinstance(value, bool):
        return other_tag
    return None


class SqlQuery(MaskedUrlRepr, FrozenModel):
    """A query returning one row (value[, samples]); `window` is bound as :window_start and
    :window_end (timezone-aware UTC), never pasted into the text."""

    masked_urls: ClassVar[tuple[str, ...]] = ("url",)

    url: DatabaseUrl
    query: StrictStr = Field(min_length=1)
    window: PositiveDuration | None = None


class MinSamplesQuery(FrozenModel):
    prometheus: StrictStr = Field(min_length=1)
    at_least: Number = Field(ge=0)


DataRef = Annotated[
    Annotated[Annotated[Path, AfterValidator(_data_file)], Tag("<file>")]
    | Annotated[SqlQuery, Tag("<query>")],
    Discriminator(
        lambda value: _kind(value, "<query>", "<file>", str | Path),
        custom_error_type="data_reference",
        custom_error_message="expected a .csv/.parquet file path or a mapping {url:, query:[, window:]}",
    ),
]
MinSamples = Annotated[
    Annotated[StrictInt, Field(ge=0), Tag("<count>")] | Annotated[MinSamplesQuery, Tag("<query>")],
    Discriminator(
        lambda value: _kind(value, "<query>", "<count>", int),
        custom_error_type="min_samples",
        custom_error_message="expected a whole number or a mapping {prometheus:, at_least:}",
    ),
]


class DriftSpec(FrozenModel):
    reference: DataRef
    current: DataRef
    columns: tuple[StrictStr, ...] | None = Field(default=None, min_length=1)  # None: every column in both
    method: DriftMethod = DriftMethod.AUTO
    threshold: Number | None = Field(default=None, gt=0)  # per column, as Evidently means it


class RuleSpec(FrozenModel):
    """One entry of `rules:` as written."""

    # What a familiar word is called here, for the did-you-mean of an unknown key.
    key_hints: ClassVar[dict[str, str]] = {
        "threshold": "'above' or 'below'",
        "interval": "'every'",
        "duration": "'for'",
        "query": "'prometheus', 'sql' or 'drift'",
        "expr": "'prometheus'",
    }

    name: Name
    signal: Signal
    target: NameOrTemplate | None = None
    prometheus: StrictStr | None = Field(default=None, min_length=1)
    sql: SqlQuery | None = None
    drift: DriftSpec | None = None
    above: Number | None = None
    below: Number | None = None
    for_: Duration = Field(default=timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(0)
    every: PositiveDuration | None = None
    action: Action = Action.NOTIFY
    severity: Severity = Severity.WARNING
    on_no_data: NoDataPolicy = NoDataPolicy.KEEP
    min_samples: MinSamples | None = None
    summary: StrictStr | None = None
    labels: Labels = Field(default_factory=dict)


class RuleFileSpec(FrozenModel):
    model: NameOrTemplate
    target: NameOrTemplate | None = None
    labels: Labels = Field(default_factory=dict)
    rules: tuple[RuleSpec, ...]


@dataclass(frozen=True)
class Rule:
    model: str
    target: str | None
    name: str
    signal: Signal
    prometheus: str | None
    sql: SqlQuery | None
    drift: DriftSpec | None
    above: float | None
    below: float | None
    for_: timedelta
    keep_firing_for: timedelta
    every: timedelta | None  # as written; `interval` is what runs
    interval: timedelta
    action: Action
    severity: Severity
    on_no_data: NoDataPolicy
    min_samples: int | MinSamplesQuery | None
    summary: str | None  # a Jinja2 template, see watcher.rules.templates
    labels: Mapping[str, str] = field(hash=False)  # the file's labels, then the rule's
    file: Path = Path()
    line: int = 1
    column: int = 1
    content_hash: str = ""  # everything that defines the rule
    state_hash: str = ""  # what lets its state carry over a reload: source(s) and comparison
    key: str = ""  # the id when it is not model/name: a templated model, or an instance
    series: Mapping[str, str] = field(default_factory=dict, hash=False)  # an instance's labels

    @property
    def id(self) -> str:
        return self.key or f"{self.model}/{self.name}"

    @property
    def threshold(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]

    def breaches(self, value: float) -> bool:
        """value > above, or value < below (NaN never breaches)."""
        if self.above is not None:
            return value > self.above
        return self.below is not None and value < self.below


@dataclass(frozen=True)
class RuleFile:
    path: Path
    model: str
    target: str | None
    labels: Mapping[str, str]
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class RuleFileResult:
    rule_file: RuleFile | None  # None when the file has any finding
    findings: list[Finding]


@dataclass(frozen=True)
class RulesResult:
    rules: dict[str, Rule]  # by id, from the files without findings
    findings: list[Finding]
    files: list[Path]


def rule_file_paths(config: WatcherConfig, paths: Sequence[Path] | None = None) -> list[Path]:
    """Every rule file named by `paths` (or the configuration's `rules:`), the refused links too
    (see watcher.rules.discovery): what a reload watches."""
    return discover_rule_files(config, paths).watched


def load_rules(
    config: WatcherConfig, paths: Sequence[Path] | None = None, env: Mapping[str, str] | None = None
) -> RulesResult:
    """Every rule file of the configuration (or `paths`), checked against it."""
    discovered = discover_rule_files(config, paths)
    rules: dict[str, Rule] = {}
    findings: list[Finding] = list(discovered.refused)
    for path in discovered.readable:
        result = load_rule_file(path, config, env)
        findings.extend(result.findings)
        if result.rule_file is None:
            continue
        repeated = [rule for rule in result.rule_file.rules if rule.id in rules]
        if repeated:
            findings.extend(_repeated_id(rule, rules[rule.id]) for rule in repeated)
            continue
        rules.update((rule.id, rule) for rule in result.rule_file.rules)
    return RulesResult(rules=rules, findings=sorted_findings(findings), files=discovered.watched)


def _repeated_id(rule: Rule, first: Rule) -> Finding:
    message = f"rule id '{rule.id}' is already defined in {first.file}:{first.line}"
    return Finding(rule.file, rule.line, rule.column, message)


def load_rule_file(path: Path, config: WatcherConfig, env: Mapping[str, str] | None = None) -> RuleFileResult:
    doc = load_mapping_document(path, os.environ if env is None else env)
    if isinstance(doc, YamlFailure):
        return RuleFileResult(None, sorted_findings(doc.findings))
    findings = semantic_findings(doc, config)
    spec: RuleFileSpec | None = None
    try:
        spec = RuleFileSpec.model_validate(doc.data, context={"base_dir": path.parent.absolute()})
    except ValidationError as error:
        findings.extend(validation_findings(error, doc, RuleFileSpec))
    findings = [*doc.findings, *without_repeats(doc, findings)]
    if findings or spec is None:
        return RuleFileResult(None, sorted_findings(findings))
    rules = tuple(_rule(doc, index, spec, rule, config) for index, rule in enumerate(spec.rules))
    rule_file = RuleFile(path=path, model=spec.model, target=spec.target, labels=spec.labels, rules=rules)
    return RuleFileResult(rule_file, [])


def _rule(doc: YamlDocument, index: int, file: RuleFileSpec, spec: RuleSpec, config: WatcherConfig) -> Rule:
    line, column = doc.position(("rules", index))
    rule = Rule(
        model=file.model,
        target=spec.target or file.target,
        name=spec.name,
        signal=spec.signal,
        prometheus=spec.prometheus,
        sql=spec.sql,
        drift=spec.drift,
        above=spec.above,
        below=spec.below,
        for_=spec.for_,
        keep_firing_for=spec.keep_firing_for,
        every=spec.every,
        interval=spec.every or config.evaluation.every,
        action=spec.action,
        severity=spec.severity,
        on_no_data=spec.on_no_data,
        min_samples=spec.min_samples,
        summary=spec.summary,
        labels={**file.labels, **spec.labels},
        file=doc.path,
        line=line,
        column=column,
        # No one model names a rule whose model is built per series: its file does.
        key=f"{doc.path.stem}/{spec.name}" if is_template(file.model) else "",
    )
    return _with_hashes(rule)


def _with_hashes(rule: Rule) -> Rule:
    source = _source_identity(rule)
    comparison = {"above": rule.above} if rule.above is not None else {"below": rule.below}
    content = {
        "id": rule.id,
        "target": rule.target,
        "signal": rule.signal.value,
        "source": source,
        "comparison": comparison,
        "for": rule.for_.total_seconds(),
        "keep_firing_for": rule.keep_firing_for.total_seconds(),
        "interval": rule.interval.total_seconds(),
        "action": rule.action.value,
        "severity": rule.severity.value,
        "on_no_data": rule.on_no_data.value,
        "min_samples": _min_samples_identity(rule.min_samples),
        "summary": rule.summary,
        "labels": dict(rule.labels),
    }
    return replace(
        rule,
        content_hash=_digest(content),
        state_hash=_digest({"source": source, "comparison": comparison}),
    )


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _source_identity(rule: Rule) -> dict[str, Any]:
    if rule.sql is not None:
        return {"sql": _query_identity(rule.sql)}
    if rule.drift is not None:
        drift = rule.drift
        return {
            "drift": {
                "reference": _data_identity(drift.reference),
                "current": _data_identity(drift.current),
                "columns": list(drift.columns) if drift.columns is not None else None,
                "method": drift.method.value,
                "threshold": drift.threshold,
            }
        }
    return {"prometheus": rule.prometheus}


def _query_identity(query: SqlQuery) -> dict[str, Any]:
    # The masked URL: a password changed in the environment is the same rule, and a hash of a
    # password is not something to store.
    window = query.window.total_seconds() if query.window is not None else None
    return {"url": mask_url_password(query.url), "query": query.query, "window": window}


def _data_identity(reference: Path | SqlQuery) -> Any:
    return _query_identity(reference) if isinstance(reference, SqlQuery) else str(reference)


def _min_samples_identity(min_samples: int | MinSamplesQuery | None) -> Any:
    if isinstance(min_samples, MinSamplesQuery):
        return {"prometheus": min_samples.prometheus, "at_least": min_samples.at_least}
    return min_samples


# What a schema cannot say, checked on the raw tree so it is reported together with the schema's
# findings (a rule with a type error still gets its missing threshold reported).
