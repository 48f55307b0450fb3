"""Text handling the adapters share: argument templates, secret scrubbing, output tails.

Everything an adapter returns (failure messages, details, audit records) passes through a
`Scrubber` first, so a token that leaks into a library's error text or a command's output never
reaches the database, the logs or Slack.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

REDACTED = "***"
# user:password@ inside any URI, and bearer tokens: scrubbed even when nobody told us the value.
_URI_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")
_BEARER = re.compile(r"(?i)\b(?P<word>bearer\s+)[A-Za-z0-9._~+/=-]+")
# Names of environment entries whose values are treated as secrets.
SECRET_NAME_PARTS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL")

OUTPUT_TAIL_BYTES = 2048


def looks_secret(name: str) -> bool:
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


@dataclass(frozen=True)
class Scrubber:
    """Replaces known secret values, URI credentials and bearer tokens in text."""

    secrets: tuple[str, ...] = ()

    @classmethod
    def of(cls, values: Iterable[str | None]) -> Scrubber:
        # Longest first, so a secret containing another is replaced whole.
        known = {value for value in values if value}
        return cls(tuple(sorted(known, key=len, reverse=True)))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        text = _URI_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
        return _BEARER.sub(lambda m: f"{m['word']}{REDACTED}", text)

    def record(self, record: Mapping[str, str]) -> dict[str, str]:
        return {key: self(value) for key, value in record.items()}


def uri_secrets(uri: str | None) -> list[str]:
    """The user name and password written into a URI, to be scrubbed wherever they appear."""
    if not uri:
        return []
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    found = [parts.password, unquote(parts.password) if parts.password else None]
    return [value for value in found if value]


def read_tail(stream: IO[bytes], limit: int = OUTPUT_TAIL_BYTES) -> str:
    """The last `limit` bytes of a seekable binary file, decoded leniently."""
    size = stream.seek(0, 2)
    stream.seek(max(0, size - limit))
    return stream.read().decode("utf-8", errors="replace")


# Autoescape is off on purpose: arguments are not HTML, and no shell ever sees them. No loader and
# no globals: a template sees exactly the variables it is given.
_SANDBOX = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)
_SANDBOX.globals.clear()


def check_templates(arguments: Sequence[str], allowed: frozenset[str]) -> list[str]:
    """Validate every argument as a template using only `allowed` names; raises ValueError."""
    for position, argument in enumerate(arguments):
        try:
            parsed = _SANDBOX.parse(argument)
        except TemplateError as error:
            raise ValueError(f"argument {position}: bad template: {error}") from None
        unknown = meta.find_undeclared_variables(parsed) - allowed
        if unknown:
            raise ValueError(
                f"argument {position}: unknown template variable(s) {sorted(unknown)};"
                f" known: {sorted(allowed)}"
            )
    return list(arguments)


def render_arguments(arguments: Sequence[str], variables: Mapping[str, str]) -> list[str] | str:
    """Each argument rendered on its own (one argument stays one argument); an error as text."""
    rendered: list[str] = []
    for position, argument in enumerate(arguments):
        try:
            rendered.append(_SANDBOX.from_string(argument).render(**variables))
        except TemplateError as error:
            return f"argument {position}: {error}"
    return rendered
