"""Summary templates: Jinja2 in an immutable sandbox, with a fixed set of variables.

Rule files are written by many hands and rendered inside the daemon, so a template is checked
when it is loaded (syntax, variables, no `_private` attribute, nothing that can never fit) and
rendered in a sandbox that also bounds what it builds (watcher.rules.template_limits); the
rendered summary is at most MAX_SUMMARY characters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes

from watcher.rules.findings import fragment
from watcher.rules.template_limits import MAX_SUMMARY, BoundedSandbox, TemplateTooLarge, oversized_constants

ALLOWED_VARIABLES = frozenset(
    {"value", "threshold", "samples", "labels", "rule", "model", "signal", "severity"}
)

# No loader: {% include %}, {% import %} and {% extends %} have nothing to reach. No globals
# either (range, lipsum, cycler, ...): a summary sees exactly ALLOWED_VARIABLES.
_ENVIRONMENT = BoundedSandbox(undefined=StrictUndefined, autoescape=False)
_ENVIRONMENT.globals.clear()


@dataclass(frozen=True)
class TemplateProblem:
    message: str
    line: int  # 1-based, within the template text


def template_problems(template: str) -> list[TemplateProblem]:
    """Everything wrong with a summary template, found without rendering it."""
    try:
        tree = _ENVIRONMENT.parse(template)
    except TemplateSyntaxError as error:
        return [TemplateProblem(f"template syntax error: {_sentence(error.message)}", error.lineno or 1)]
    allowed = ", ".join(sorted(ALLOWED_VARIABLES))
    problems = [
        TemplateProblem(f"template uses unknown variable '{fragment(name)}': allowed are {allowed}", 1)
        for name in sorted(_variables(tree) - ALLOWED_VARIABLES)
    ]
    problems.extend(_private_access(tree))
    problems.extend(_loading_tags(tree))
    problems.extend(TemplateProblem(message, line) for message, line in oversized_constants(tree))
    try:
        _ENVIRONMENT.from_string(template)  # compiling finds unknown filters and tests
    except TemplateError as error:
        problems.append(TemplateProblem(f"template error: {_sentence(error.message)}", 1))
    return problems


def _variables(tree: nodes.Template) -> set[str]:
    """The names a template reads from its context."""
    try:
        return set(meta.find_undeclared_variables(tree))
    except TemplateError:
        # The analysis compiles the template; with an unknown filter it cannot, so fall back to
        # every name read minus every name assigned (the compile error is reported anyway).
        loaded = {node.name for node in tree.find_all(nodes.Name) if node.ctx == "load"}
        return loaded - {node.name for node in tree.find_all(nodes.Name) if node.ctx == "store"}


def _sentence(message: str | None) -> str:
    text = (message or "invalid template").rstrip(".")
    return text[:1].lower() + text[1:]


def _private_access(tree: nodes.Template) -> list[TemplateProblem]:
    """`x.__class__`, `x['_y']` and `x|attr('_y')`: the sandbox would stop them at render time;
    they are refused at load time so the rule never reaches production."""
    problems = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        name = _accessed_name(node)
        if name is not None and name.startswith("_"):
            message = f"template accesses '{fragment(name)}': names beginning with '_' are not allowed"
            problems.append(TemplateProblem(message, node.lineno))
    return problems


def _accessed_name(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr):
        return str(node.attr)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return node.arg.value if isinstance(node.arg.value, str) else None
    if isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
        first = node.args[0]
        if isinstance(first, nodes.Const) and isinstance(first.value, str):
            return first.value
        return "_"  # a computed attribute name cannot be checked: refused like a private one
    return None


def _loading_tags(tree: nodes.Template) -> list[TemplateProblem]:
    kinds = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)
    return [
        TemplateProblem("templates cannot include, import or extend other templates", node.lineno)
        for node in tree.find_all(kinds)
    ]


def render_summary(template: str, **context: Any) -> str:
    """Render in the sandbox, at most MAX_SUMMARY characters. Never raises: a template that fails
    at render time (a variable missing for this evaluation, too large a value) gives its own
    text with the reason appended."""
    try:
        return _cut(_ENVIRONMENT.from_string(template).generate(**context))
    except TemplateError as error:
        reason = error.message or type(error).__name__
    except (TypeError, ValueError, ArithmeticError, LookupError, MemoryError) as error:
        reason = str(error) if isinstance(error, TemplateTooLarge) else type(error).__name__
    return _cut(iter((template, f" [summary could not be rendered: {reason}]")))


def _cut(chunks: Iterator[str]) -> str:
    """The chunks joined, stopping once MAX_SUMMARY characters are out: a template is rendered
    as a stream, so a loop that writes too much is cut short instead of run to the end."""
    parts: list[str] = []
    length = 0
    for chunk in chunks:
        parts.append(chunk)
        length += len(chunk)
        if length > MAX_SUMMARY:
            break
    text = "".join(parts)
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"
