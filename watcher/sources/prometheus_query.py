"""A rule's PromQL made ready to send: parsed once, rendered with the live version, proven.

What is sent is never the text as written: it is the parsed tree re-printed (see
watcher.rules.promql), so a query that does not parse is never sent at all, and a query that is
sent is one complete expression, fit to be one arm of a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import promql_parser as pp

from watcher.model import ErrorKind, SourceError
from watcher.rules.promql import NeedsVersion, ParsedQuery, PromqlProblem, ResultType, render
from watcher.rules.promql_shape import Shape, shape


@dataclass(frozen=True)
class PreparedQuery:
    """One query as it is sent: `text` re-printed from its tree, `shape` that tree's structure."""

    text: str
    shape: Shape
    result_type: ResultType
    mentions: frozenset[str]
    tree: Any = field(default=None, compare=False, repr=False)  # the parsed text (pp.Expr)


def problem_error(problem: PromqlProblem) -> SourceError:
    where = f" (near character {problem.offset + 1})" if problem.offset is not None else ""
    return SourceError(ErrorKind.BAD_QUERY, f"PromQL parse error: {problem.message}{where}", False)


def prepare(parsed: ParsedQuery | PromqlProblem, version: str | None) -> PreparedQuery | SourceError:
    """The query to send with `version` in place of {{ version }}, or why it must not be sent."""
    if isinstance(parsed, PromqlProblem):
        return problem_error(parsed)
    text = render(parsed, version)
    if isinstance(text, NeedsVersion):
        return SourceError(ErrorKind.CONFIG, text.message, retryable=True)
    if isinstance(text, PromqlProblem):
        return problem_error(text)
    # render proved the text against the tree; this parse keeps the structure for batch proofs.
    tree = pp.parse(text)
    mentions = parsed.mentions | ({version} if version is not None and parsed.version_uses else set())
    return PreparedQuery(text, shape(tree), parsed.result_type, frozenset(mentions), tree)
