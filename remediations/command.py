"""Roll a model back by running a command: a deploy script, a CLI, anything with an exit code.

No shell is ever involved: ``argv`` is a list, each element rendered on its own as a sandboxed
Jinja2 template with ``{{ from_version }}``, ``{{ to_version }}``, ``{{ intent }}`` and
``{{ target }}``, so ``"x; rm -rf /"`` stays one literal argument. The command also finds
WATCHER_INTENT, WATCHER_TARGET, WATCHER_FROM_VERSION and WATCHER_TO_VERSION in its environment,
which holds only PATH, HOME, LANG, LC_ALL, TZ, TMPDIR, USER and LOGNAME from watcher's own
environment (where chat tokens live) plus the ``env`` entries configured; it runs in ``cwd``,
by default the directory of the configuration file.

Exit 0 is done; another code is a failure, worth a retry only if listed in ``retry_exit_codes``;
running past ``timeout`` kills the command's whole process group and is worth a retry. The exit
code, the duration and the last 2 KB of stdout and stderr go into the audit record, with the
values of ``env`` entries whose names look secret (TOKEN, SECRET, PASSWORD, KEY, ...) scrubbed.

With ``live_argv`` (a command printing the live version on stdout) a rollback first checks what
is live: already ``to_version`` is done, anything but ``from_version`` is refused. Without it the
command itself must be idempotent for one WATCHER_INTENT.

The command gets ``from_version`` so that it can check, as close to its own write as its target
allows, that the version to replace is still live; when it is not, it exits with
``version_changed_exit_code`` and the rollback is refused (reconciled, never done).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

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
)
from watcher.remediations.templating import (
    Scrubber,
    check_templates,
    looks_secret,
    read_tail,
    render_arguments,
)
from watcher.rules.durations import PositiveDuration, format_duration

_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME")
_ROLLBACK_NAMES = frozenset({"intent", "target", "from_version", "to_version"})
_LIVE_NAMES = frozenset({"target"})
_VERIFY_NAMES = frozenset({"version", "target"})
_KILL_GRACE_SECONDS = 5.0


class CommandSettings(AdapterSettings):
    argv: list[str] = Field(min_length=1)
    live_argv: list[str] | None = Field(default=None, min_length=1)
    verify_argv: list[str] | None = Field(default=None, min_length=1)
    timeout: PositiveDuration = timedelta(minutes=5)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None
    retry_exit_codes: list[int] = Field(default_factory=list)
    # The exit code by which the command says `from_version` is no longer live: refused, not failed.
    version_changed_exit_code: int | None = None
    # The target's name (its key under `targets:`), for {{ target }}; watcher fills it in.
    target: str | None = None

    @field_validator("argv")
    @classmethod
    def _rollback_templates(cls, value: list[str]) -> list[str]:
        return check_templates(value, _ROLLBACK_NAMES)

    @field_validator("live_argv")
    @classmethod
    def _live_templates(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_templates(value, _LIVE_NAMES)

    @field_validator("verify_argv")
    @classmethod
    def _verify_templates(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_templates(value, _VERIFY_NAMES)


@dataclass(frozen=True)
class _Run:
    exit_code: int | None  # None: killed after the timeout
    seconds: float
    stdout: str  # the last 2 KB, raw
    stderr: str


class CommandAdapter:
    def __init__(self, settings: CommandSettings, *, cwd: Path | None) -> None:
        self._settings = settings
        self._cwd = cwd
        self._scrub = Scrubber.of(value for name, value in settings.env.items() if looks_secret(name))

    # -- running --------------------------------------------------------------------------------

    def _environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        inherited = {name: os.environ[name] for name in _INHERITED if name in os.environ}
        return {**inherited, **self._settings.env, **extra}

    def _run(self, argv: Sequence[str], extra_env: Mapping[str, str]) -> _Run | AdapterFailure:
        timeout = self._settings.timeout.total_seconds()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            started = time.monotonic()
            try:
                process = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=self._cwd,
                    env=self._environment(extra_env),
                    start_new_session=True,  # its own process group, so a timeout can end all of it
                )
            except OSError as error:
                return AdapterFailure(self._scrub(f"cannot start {argv[0]!r}: {error.strerror}"), False)
            try:
                code: int | None = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                code = None
            seconds = time.monotonic() - started
            return _Run(code, seconds, read_tail(out), read_tail(err))

    def _record(self, run: _Run) -> dict[str, str]:
        return {
            "exit_code": "timeout" if run.exit_code is None else str(run.exit_code),
            "duration_seconds": f"{run.seconds:.3f}",
            "stdout_tail": self._scrub(run.stdout),
            "stderr_tail": self._scrub(run.stderr),
        }

    def _run_failure(self, what: str, run: _Run) -> AdapterFailure:
        """Why a finished run counts as failed, and whether trying again may help."""
        if run.exit_code is None:
            timeout = format_duration(self._settings.timeout)
            return AdapterFailure(f"{what} killed after the {timeout} timeout", retryable=True)
        if run.exit_code < 0:
            return AdapterFailure(f"{what} killed by signal {-run.exit_code}", retryable=False)
        tail = self._scrub(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "")[:300]
        retryable = run.exit_code in self._settings.retry_exit_codes
        return AdapterFailure(
            f"{what} exited with {run.exit_code}" + (f": {tail}" if tail else ""), retryable
        )

    def _render(self, argv: Sequence[str], variables: Mapping[str, str]) -> list[str] | AdapterFailure:
        rendered = render_arguments(argv, variables)
        if isinstance(rendered, str):
            return AdapterFailure(self._scrub(f"cannot render arguments: {rendered}"), retryable=False)
        return rendered

    # -- protocol -------------------------------------------------------------------------------

    def live_version(self) -> LiveVersion | AdapterFailure:
        if self._settings.live_argv is None:
            message = "live_argv is not configured: this command target cannot report its live version"
            return AdapterFailure(message, retryable=False)
        argv = self._render(self._settings.live_argv, {"target": self._settings.target or ""})
        if isinstance(argv, AdapterFailure):
            return argv
        run = self._run(argv, {"WATCHER_TARGET": self._settings.target or ""})
        if isinstance(run, AdapterFailure):
            return run
        if run.exit_code != 0:
            return self._run_failure("live_argv", run)
        lines = [line.strip() for line in run.stdout.splitlines() if line.strip()]
        if len(lines) != 1:
            return AdapterFailure(f"live_argv printed {len(lines)} lines; expected one: the version", False)
        return LiveVersion(lines[0])

    def history(self) -> Sequence[VersionInfo] | AdapterFailure:
        return ()  # a command has no history of its own; watcher keeps it in its database

    def previous_version(self) -> str | AdapterFailure | None:
        return None

    def preflight(self, to_version: str) -> PreflightReport:
        problems = [self._program_problem(argv) for argv in self._all_argvs()]
        if self._cwd is not None and not self._cwd.is_dir():
            problems.append(f"cwd {self._cwd} is not a directory")
        problems_found = [problem for problem in problems if problem]
        if not problems_found and self._settings.live_argv is not None:
            live = self.live_version()  # read-only by contract: it only prints the live version
            if isinstance(live, AdapterFailure):
                problems_found.append(live.message)
        return PreflightReport(tuple(problems_found))

    def rollback(self, *, intent_key: str, from_version: str, to_version: str) -> RollbackOutcome:
        record: dict[str, str] = {}
        if self._settings.live_argv is not None:
            live = self.live_version()
            if isinstance(live, AdapterFailure):
                return RollbackOutcome(RollbackResult.FAILED, live.message, live, record)
            record["live_before"] = live.version
            if live.version == to_version:
                return RollbackOutcome(
                    RollbackResult.ALREADY_DONE, f"{to_version} is already live", None, record
                )
            if live.version != from_version:
                detail = f"live version is {live.version}, not {from_version}: refused"
                return RollbackOutcome(RollbackResult.VERSION_CHANGED, detail, None, record)
        target = self._settings.target or ""
        variables = {
            "intent": intent_key,
            "target": target,
            "from_version": from_version,
            "to_version": to_version,
        }
        argv = self._render(self._settings.argv, variables)
        if isinstance(argv, AdapterFailure):
            return RollbackOutcome(RollbackResult.FAILED, argv.message, argv, record)
        environment = {f"WATCHER_{name.upper()}": value for name, value in variables.items()}
        run = self._run(argv, environment)
        if isinstance(run, AdapterFailure):
            return RollbackOutcome(RollbackResult.FAILED, run.message, run, record)
        record.update(self._record(run))
        if run.exit_code == 0:
            return RollbackOutcome(
                RollbackResult.DONE, f"command exited 0 in {run.seconds:.1f}s", None, record
            )
        if run.exit_code is not None and run.exit_code == self._settings.version_changed_exit_code:
            detail = f"the command says {from_version} is no longer live (exit {run.exit_code}): refused"
            return RollbackOutcome(RollbackResult.VERSION_CHANGED, detail, None, record)
        failure = self._run_failure("command", run)
        return RollbackOutcome(RollbackResult.FAILED, failure.message, failure, record)

    def verify(self, version: str) -> VerifyOutcome:
        if self._settings.verify_argv is not None:
            argv = self._render(
                self._settings.verify_argv, {"version": version, "target": self._settings.target or ""}
            )
            if isinstance(argv, AdapterFailure):
                return VerifyOutcome(False, argv.message, argv)
            run = self._run(argv, {"WATCHER_VERSION": version, "WATCHER_TARGET": self._settings.target or ""})
            if isinstance(run, AdapterFailure):
                return VerifyOutcome(False, run.message, run)
            if run.exit_code == 0:
                return VerifyOutcome(True, f"verify_argv exited 0 for {version}")
            failure = self._run_failure("verify_argv", run)
            return VerifyOutcome(False, failure.message, failure if failure.retryable else None)
        live = self.live_version()
        if isinstance(live, AdapterFailure):
            return VerifyOutcome(False, "neither verify_argv nor a working live_argv: " + live.message, live)
        if live.version != version:
            return VerifyOutcome(False, f"live version is {live.version}, not {version}")
        return VerifyOutcome(True, f"live version is {version}")

    # -- checks ---------------------------------------------------------------------------------

    def _all_argvs(self) -> list[list[str]]:
        settings = self._settings
        return [argv for argv in (settings.argv, settings.live_argv, settings.verify_argv) if argv]

    def _program_problem(self, argv: list[str]) -> str | None:
        program = argv[0]
        if "{{" in program or "{%" in program:
            return None  # known only once rendered
        if "/" in program:
            path = Path(program) if Path(program).is_absolute() else (self._cwd or Path.cwd()) / program
            if not (path.is_file() and os.access(path, os.X_OK)):
                return f"program {program!r} is not an executable file"
            return None
        if shutil.which(program, path=self._environment({}).get("PATH")) is None:
            return f"program {program!r} not found on PATH"
        return None


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Ask the whole process group to stop, then make it stop."""
    for sig, grace in ((signal.SIGTERM, _KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
            if sig == signal.SIGTERM:
                # The leader is gone; its children may linger in the group: end them too.
                os.killpg(process.pid, signal.SIGKILL)
            break
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            break


class CommandFactory:
    settings_model: ClassVar[type[AdapterSettings]] = CommandSettings

    def create(self, settings: AdapterSettings, *, base_dir: Path) -> RemediationAdapter:
        if not isinstance(settings, CommandSettings):
            raise TypeError(f"expected CommandSettings, got {type(settings).__name__}")
        cwd = settings.cwd
        if cwd is not None and not cwd.is_absolute():
            cwd = base_dir / cwd
        return CommandAdapter(settings, cwd=cwd or base_dir)


factory = CommandFactory()
