"""Roll a model back by calling a webhook: a deploy service, a feature flag, a serving router.

Every request is signed so the receiver can tell it comes from watcher and is fresh:

    X-Watcher-Timestamp: <Unix time in seconds>
    X-Watcher-Signature: sha256=<hex of HMAC-SHA256(secret, "v1:" + timestamp + ":" + body)>

where ``body`` is the exact bytes sent (empty for GET). A receiver recomputes the HMAC with the
shared secret, compares in constant time and rejects timestamps more than 5 minutes away.

A rollback is ``POST url`` (templated like ``status_url`` below) with
``Idempotency-Key: <intent key>`` and the JSON body
``{"intent", "target", "from_version", "to_version", "timestamp"}`` (timestamp: RFC 3339 UTC, the
same instant as the header). The receiver's answer:

- 2xx: done. A replay (header ``Idempotent-Replayed: true`` or ``{"status": "already_done"}``)
  means already done. When ``status_url`` is set and the answer is not final (202, or a status
  other than done/failed), watcher polls ``GET status_url`` (templated with ``{{ intent }}``,
  ``{{ target }}``, ``{{ from_version }}``, ``{{ to_version }}``) every ``poll_interval`` until
  it answers ``{"status": "done"}`` or ``{"status": "failed"}``, up to ``poll_timeout``.
- 409 with ``{"error": "version_changed"}``: refused, the version to replace is no longer live.
- other 4xx: a permanent failure (408, 425 and 429 excepted: they are worth a retry);
  5xx, connection errors and timeouts: retryable. Retries reuse the Idempotency-Key, so the
  receiver carries out one intent once.

The live version is ``GET live_url`` answering ``{"version": "..."}``. Without ``live_url`` the
adapter cannot tell what is live: live_version and verify return a permanent failure saying so,
and reconciliation after a crash re-sends the rollback with the same Idempotency-Key, which the
receiver answers from its record of that key instead of acting twice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import requests
from pydantic import Field, SecretStr, field_validator, model_validator

from watcher.remediations.base import (
    AdapterFailure,
    AdapterSettings,
    LiveVersion,
    PreflightReport,
    RemediationAdapter,
    RollbackOutcome,
    RollbackResult,
    VerifyOutcome,
    VersionInfo,
    failed_outcome,
)
from watcher.remediations.templating import Scrubber, check_templates, looks_secret, render_arguments
from watcher.rules.durations import PositiveDuration, format_duration

_RESERVED_HEADERS = frozenset(
    {"content-type", "idempotency-key", "x-watcher-timestamp", "x-watcher-signature", "content-length"}
)
_RETRYABLE_4XX = frozenset({408, 425, 429})
_TEMPLATE_NAMES = frozenset({"intent", "target", "from_version", "to_version"})
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_FINAL = {
    "done": RollbackResult.DONE,
    "succeeded": RollbackResult.DONE,
    "already_done": RollbackResult.ALREADY_DONE,
}


class WebhookSettings(AdapterSettings):
    url: str
    secret: SecretStr | None = None
    secret_file: Path | None = None
    status_url: str | None = None
    live_url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: PositiveDuration = timedelta(seconds=10)
    poll_interval: PositiveDuration = timedelta(seconds=2)
    poll_timeout: PositiveDuration = timedelta(minutes=2)
    # The target's name (its key under `targets:`), sent as "target"; watcher fills it in.
    target: str | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookSettings:
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("set exactly one of secret or secret_file")
        return self

    @field_validator("url", "status_url", "live_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        if value is not None:
            check_templates([value], _TEMPLATE_NAMES)
        return value

    @field_validator("headers")
    @classmethod
    def _own_headers(cls, value: dict[str, str]) -> dict[str, str]:
        clash = sorted(name for name in value if name.lower() in _RESERVED_HEADERS)
        if clash:
            raise ValueError(f"headers {clash} are set by watcher and cannot be overridden")
        return value


@dataclass(frozen=True)
class _Answer:
    status: int
    body: dict[str, Any]
    replayed: bool


def _sign(secret: str, timestamp: str, body: bytes) -> str:
    message = b"v1:" + timestamp.encode() + b":" + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class WebhookAdapter:
    def __init__(
        self,
        settings: WebhookSettings,
        *,
        secret_file: Path | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._secret_file = secret_file
        self._clock = clock
        self._session = requests.Session()
        inline = settings.secret.get_secret_value() if settings.secret else None
        secret_headers = [
            value
            for name, value in settings.headers.items()
            if looks_secret(name) or name.lower() in _CREDENTIAL_HEADERS
        ]
        self._scrub = Scrubber.of([inline, *secret_headers])

    # -- plumbing -------------------------------------------------------------------------------

    def _secret(self) -> str | AdapterFailure:
        if self._settings.secret is not None:
            return self._settings.secret.get_secret_value()
        assert self._secret_file is not None, "settings guarantee one of secret or secret_file"
        try:  # read on every call, so a rotated secret is picked up without a restart
            value = self._secret_file.read_text().strip()
        except OSError as error:
            return AdapterFailure(f"cannot read secret_file {self._secret_file}: {error.strerror}", False)
        if not value:
            return AdapterFailure(f"secret_file {self._secret_file} is empty", retryable=False)
        self._scrub = Scrubber.of([value, *self._scrub.secrets])
        return value

    def _request(
        self, method: str, url: str, body: bytes, extra: Mapping[str, str]
    ) -> _Answer | AdapterFailure:
        secret = self._secret()
        if isinstance(secret, AdapterFailure):
            return secret
        timestamp = str(int(self._clock().timestamp()))
        headers = {**self._settings.headers, **extra, "X-Watcher-Timestamp": timestamp}
        headers["X-Watcher-Signature"] = _sign(secret, timestamp, body)
        if body:
            headers["Content-Type"] = "application/json"
        try:
            response = self._session.request(
                method,
                url,
                data=body or None,
                headers=headers,
                timeout=self._settings.timeout.total_seconds(),
                allow_redirects=False,
            )
        except requests.RequestException as error:
            return AdapterFailure(
                self._scrub(f"{method} {url}: {type(error).__name__}: {error}")[:1000], True
            )
        return _Answer(response.status_code, _json_object(response), _replayed(response))

    def _refusal(self, method: str, url: str, answer: _Answer) -> AdapterFailure:
        retryable = answer.status >= 500 or answer.status in _RETRYABLE_4XX
        text = json.dumps(answer.body)[:300] if answer.body else ""
        return AdapterFailure(self._scrub(f"{method} {url}: HTTP {answer.status} {text}").strip(), retryable)

    def _render(self, url: str, variables: Mapping[str, str]) -> str | AdapterFailure:
        rendered = render_arguments([url], variables)
        if isinstance(rendered, str):
            return AdapterFailure(f"cannot render URL template: {rendered}", retryable=False)
        return rendered[0]

    # -- protocol -------------------------------------------------------------------------------

    def live_version(self) -> LiveVersion | AdapterFailure:
        if self._settings.live_url is None:
            return AdapterFailure(
                "live_url is not configured: this webhook target cannot report its live version;"
                " watcher relies on the version it last set and on the receiver's Idempotency-Key",
                retryable=False,
            )
        url = self._render(self._settings.live_url, {"target": self._settings.target or ""})
        if isinstance(url, AdapterFailure):
            return url
        answer = self._request("GET", url, b"", {})
        if isinstance(answer, AdapterFailure):
            return answer
        if not 200 <= answer.status < 300:
            return self._refusal("GET", url, answer)
        version = answer.body.get("version")
        if version is None or isinstance(version, dict | list):
            return AdapterFailure(f'GET {url}: answer has no "version"', retryable=False)
        return LiveVersion(str(version))

    def history(self) -> Sequence[VersionInfo] | AdapterFailure:
        return ()  # a webhook has no history of its own; watcher keeps it in its database

    def previous_version(self) -> str | AdapterFailure | None:
        return None

    def preflight(self, to_version: str) -> PreflightReport:
        problems: list[str] = []
        secret = self._secret()
        if isinstance(secret, AdapterFailure):
            problems.append(secret.message)
        elif self._settings.live_url is not None:
            live = self.live_version()
            if isinstance(live, AdapterFailure):
                problems.append(live.message)
        return PreflightReport(tuple(problems))

    def rollback(self, *, intent_key: str, from_version: str, to_version: str) -> RollbackOutcome:
        record = {"idempotency_key": intent_key}
        if self._settings.live_url is not None:
            live = self.live_version()
            if isinstance(live, AdapterFailure):
                return failed_outcome(live, record)
            record["live_before"] = live.version
            if live.version not in (from_version, to_version):
                detail = f"live version is {live.version}, not {from_version}: refused"
                return RollbackOutcome(RollbackResult.VERSION_CHANGED, detail, None, record)
        now = self._clock()
        body = json.dumps(
            {
                "intent": intent_key,
                "target": self._settings.target,
                "from_version": from_version,
                "to_version": to_version,
                "timestamp": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            },
            separators=(",", ":"),
        ).encode()
        variables = {
            "intent": intent_key,
            "target": self._settings.target or "",
            "from_version": from_version,
            "to_version": to_version,
        }
        url = self._render(self._settings.url, variables)
        if isinstance(url, AdapterFailure):
            return failed_outcome(url, record)
        answer = self._request("POST", url, body, {"Idempotency-Key": intent_key})
        if isinstance(answer, AdapterFailure):
            return failed_outcome(answer, record)
        record["http_status"] = str(answer.status)
        outcome = self._conclude(url, answer, variables, record)
        if answer.replayed and outcome.result is RollbackResult.DONE:
            # The receiver answered from its record of this key: the change was made before.
            return RollbackOutcome(RollbackResult.ALREADY_DONE, outcome.detail, None, outcome.record)
        return outcome

    def verify(self, version: str) -> VerifyOutcome:
        live = self.live_version()
        if isinstance(live, AdapterFailure):
            return VerifyOutcome(False, live.message, live)
        if live.version != version:
            return VerifyOutcome(False, f"live version is {live.version}, not {version}")
        return VerifyOutcome(True, f"live version is {version}")

    # -- rollback steps -------------------------------------------------------------------------

    def _conclude(
        self, url: str, answer: _Answer, variables: Mapping[str, str], record: dict[str, str]
    ) -> RollbackOutcome:
        if answer.status == 409 and _says_version_changed(answer.body):
            live = answer.body.get("live_version")
            detail = "the receiver refused: version changed" + (f" (live: {live})" if live else "")
            return RollbackOutcome(RollbackResult.VERSION_CHANGED, detail, None, record)
        if not 200 <= answer.status < 300:
            return failed_outcome(self._refusal("POST", url, answer), record)
        status = str(answer.body.get("status", "")).lower()
        if status in _FINAL:
            return RollbackOutcome(_FINAL[status], f"the receiver answered {status}", None, record)
        if status == "failed":
            return failed_outcome(
                AdapterFailure(self._scrub(f"the receiver failed: {answer.body}")[:500], False), record
            )
        if self._settings.status_url is None:
            return RollbackOutcome(
                RollbackResult.DONE, f"the receiver answered HTTP {answer.status}", None, record
            )
        status_url = self._render(self._settings.status_url, variables)
        if isinstance(status_url, AdapterFailure):
            return failed_outcome(status_url, record)
        return self._poll(status_url, record)

    def _poll(self, url: str, record: dict[str, str]) -> RollbackOutcome:
        deadline = time.monotonic() + self._settings.poll_timeout.total_seconds()
        polls = 0
        last = "no answer yet"
        while time.monotonic() < deadline:
            time.sleep(
                min(self._settings.poll_interval.total_seconds(), max(0.0, deadline - time.monotonic()))
            )
            polls += 1
            record["polls"] = str(polls)
            answer = self._request("GET", url, b"", {})
            if isinstance(answer, AdapterFailure):
                last = answer.message  # the status endpoint hiccuping is no verdict: keep polling
                continue
            status = str(answer.body.get("status", "")).lower()
            last = f"HTTP {answer.status} status {status or '?'}"
            if 200 <= answer.status < 300 and status in _FINAL:
                return RollbackOutcome(_FINAL[status], f"the receiver reports {status}", None, record)
            if 200 <= answer.status < 300 and status == "failed":
                detail = self._scrub(str(answer.body.get("detail", "")))[:300]
                return failed_outcome(AdapterFailure(f"the receiver reports failed: {detail}", False), record)
        # The request was accepted; re-sending it under the same Idempotency-Key is safe.
        message = f"no final status from {url} within {format_duration(self._settings.poll_timeout)}: {last}"
        return failed_outcome(AdapterFailure(self._scrub(message), retryable=True), record)


def _json_object(response: requests.Response) -> dict[str, Any]:
    try:
        parsed = response.json()
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _replayed(response: requests.Response) -> bool:
    return response.headers.get("Idempotent-Replayed", "").lower() == "true"


def _says_version_changed(body: Mapping[str, Any]) -> bool:
    return "version_changed" in (str(body.get("error", "")).lower(), str(body.get("status", "")).lower())


class WebhookFactory:
    settings_model: ClassVar[type[AdapterSettings]] = WebhookSettings

    def create(self, settings: AdapterSettings, *, base_dir: Path) -> RemediationAdapter:
        if not isinstance(settings, WebhookSettings):
            raise TypeError(f"expected WebhookSettings, got {type(settings).__name__}")
        secret_file = settings.secret_file
        if secret_file is not None and not secret_file.is_absolute():
            secret_file = base_dir / secret_file
        return WebhookAdapter(settings, secret_file=secret_file)


factory = WebhookFactory()
