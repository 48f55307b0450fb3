"""What a summary template may build: the sandbox's operator and call hooks, bounded.

Jinja's sandbox stops escapes (`__class__`, `_private`), but not size: `{{ model * 20000000 }}` is
a 280 MB string, `{{ 'x'|center(10**9) }}` a gigabyte. A summary is one line of a Slack message,
so every way a template can multiply text is checked *before* it runs: `*` and `**`, `%` and
`str.format` widths, and the integer arguments of filters and method calls (`center`, `rjust`,
`batch`, `slice`, ...). Each is refused past MAX_BUILT with a `TemplateTooLarge`. What a template
renders is cut at MAX_SUMMARY characters as it streams out, so a loop that writes is cut short too.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sized
from functools import wraps
from typing import Any

from jinja2 import nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_SUMMARY = 1000  # characters of a rendered summary, a Slack message's one line
MAX_BUILT = 10_000  # length of any string or list, or width, a template may ask for on the way
MAX_POWER_BITS = 4096  # `2 ** 100000` is a 30,000-digit number: refused
_PRINTF_NUMBERS = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_SEQUENCES = (str, bytes, list, tuple)


class TemplateTooLarge(ValueError):
    """A template asked for more than a summary can hold."""


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with every operator and call that can multiply text checked first."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(__obj, "__name__", "") not in ("format", "format_map"):
            _check_arguments(args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        check_format_string(str(value.__self__))
        return wrapped


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `text * n`, `[x] * n`, `a ** b` and `fmt % args` that would build too much."""
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, _SEQUENCES) and _over(len(sequence) * _count(times), MAX_BUILT):
                raise TemplateTooLarge(f"'*' would build {len(sequence) * _count(times)} characters or items")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        if abs(left) > 1 and right > 0 and abs(left).bit_length() * right > MAX_POWER_BITS:
            raise TemplateTooLarge("'**' would build a number too large for a summary")
    elif operator == "%" and isinstance(left, str):
        check_printf_string(left)
    elif operator == "+" and _sized_over(left, right):
        raise TemplateTooLarge("'+' would build too long a value")


def _sized_over(left: Any, right: Any) -> bool:
    """Concatenation is linear, but no value this long fits in a summary."""
    return isinstance(left, Sized) and isinstance(right, Sized) and len(left) + len(right) > MAX_BUILT


def _count(times: Any) -> int:
    return times if isinstance(times, int) and not isinstance(times, bool) else 0


def check_printf_string(text: str) -> None:
    """`%0999999999d` and `%*d` (a width taken from the arguments) are refused."""
    for match in _PRINTF_NUMBERS.finditer(text):
        for number in match.groups():
            _check_width(number)


def check_format_string(text: str) -> None:
    """`{:>999999999}` and `{:{width}}` (a width taken from the arguments) are refused."""
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError:
        return  # str.format raises the same error itself
    for _, _, spec, _ in fields:
        if spec and "{" in spec:
            raise TemplateTooLarge("a format width taken from a value is not allowed")
        for number in re.findall(r"\d+", spec or ""):
            _check_width(number)


def _check_width(number: str | None) -> None:
    if number == "*":
        raise TemplateTooLarge("a format width taken from a value is not allowed")
    if number is not None and int(number) > MAX_BUILT:
        raise TemplateTooLarge(f"format width {number} is over {MAX_BUILT}")


def _check_arguments(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """A width or count beyond MAX_BUILT (`center(10**9)`, `batch(10**9)`) is refused."""
    for argument in (*args, *kwargs.values()):
        if isinstance(argument, int) and not isinstance(argument, bool) and abs(argument) > MAX_BUILT:
            raise TemplateTooLarge(f"argument {argument} is over {MAX_BUILT}")


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """The filter with its arguments (not the value it filters) checked; `format`'s arguments are
    the values it formats, so its format string is checked instead."""
    if name == "format":

        @wraps(function)
        def format_filter(value: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(value, str):
                check_printf_string(value)
            return function(value, *args, **kwargs)

        return format_filter
    pass_arg = getattr(function, "jinja_pass_arg", None)

    @wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        skip = 2 if pass_arg is not None else 1  # the context or environment, then the value
        _check_arguments(args[skip:], kwargs)
        return function(*args, **kwargs)

    return bounded


def oversized_constants(tree: nodes.Template) -> list[tuple[str, int]]:
    """What can never fit, seen without rendering: a literal `* 20000000`, `** 100000`, or a
    literal text longer than a whole summary. (message, line) pairs."""
    problems: list[tuple[str, int]] = []
    for node in tree.find_all((nodes.Mul, nodes.Pow)):
        for side in (node.left, node.right):
            mul = isinstance(node, nodes.Mul)
            if isinstance(side, nodes.Const) and _over(side.value, MAX_BUILT if mul else MAX_POWER_BITS):
                what = "multiplies by" if mul else "raises to the power of"
                problems.append((f"template {what} {side.value}: {_LIMITS}", node.lineno))
    problems.extend(_literal_format_widths(tree))
    for call in tree.find_all((nodes.Filter, nodes.Call)):
        if getattr(call, "name", "") == "format":
            continue  # its arguments are the values it formats
        for argument in getattr(call, "args", ()):
            if isinstance(argument, nodes.Const) and _over(argument.value, MAX_BUILT):
                problems.append((f"template asks for a width of {argument.value}: {_LIMITS}", call.lineno))
    text = sum(len(data.data) for data in tree.find_all(nodes.TemplateData))
    if text > MAX_SUMMARY:
        problems.append((f"template text is {text} characters: {_LIMITS}", 1))
    return problems


def _literal_format_widths(tree: nodes.Template) -> list[tuple[str, int]]:
    """`'%0999999999d' % x` and `'{:>999999999}'.format(x)` written out in the template."""
    found: list[tuple[str, nodes.Node, Callable[[str], None]]] = [
        (node.left.value, node, check_printf_string)
        for node in tree.find_all(nodes.Mod)
        if isinstance(node.left, nodes.Const) and isinstance(node.left.value, str)
    ]
    for call in tree.find_all(nodes.Call):
        called = call.node
        literal = called.node if isinstance(called, nodes.Getattr) and called.attr == "format" else None
        if isinstance(literal, nodes.Const) and isinstance(literal.value, str):
            found.append((literal.value, call, check_format_string))
    problems = []
    for text, node, check in found:
        try:
            check(text)
        except TemplateTooLarge as error:
            problems.append((f"template {error}: {_LIMITS}", node.lineno))
    return problems


def _over(value: Any, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > limit


_LIMITS = f"a summary is at most {MAX_SUMMARY} characters and builds nothing over {MAX_BUILT}"
