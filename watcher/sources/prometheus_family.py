"""Rules that ask the same query of different models, asked as one query (see rules.promql_factor).

In a batch, the queries that are members of one family (the same text but for one label's value)
become one arm: `model=~"a|b|c"`, the label kept through every step, proven against the members'
tree before it is sent. Its answer is split back by the label's value, so each query gets exactly
the series it would have got alone. A family whose query failed is not formed again (its members
are then asked as they are), and a family is at most MAX_FAMILY queries.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import promql_parser as pp

from watcher.model import ErrorKind, SourceError
from watcher.rules.promql import ResultType
from watcher.rules.promql_factor import Member, factored_text, member_of, proven
from watcher.rules.promql_shape import shape
from watcher.sources.prometheus import InstantVector, QueryResult, Sample
from watcher.sources.prometheus_query import PreparedQuery

MAX_FAMILY = 500
_MAX_CACHED = 100_000

Answer = QueryResult | SourceError


@dataclass(frozen=True)
class Family:
    """One query standing for several: `members` maps the label's value to a member's text."""

    query: PreparedQuery
    label: str
    members: Mapping[str, str]
    keeps_label: bool

    def split(self, answer: Answer) -> dict[str, Answer]:
        """Each member's answer: its own series, the label taken off when its query drops it."""
        if isinstance(answer, SourceError):
            return dict.fromkeys(self.members.values(), answer)
        if not isinstance(answer, InstantVector):
            error = SourceError(ErrorKind.BAD_ANSWER, "a query of many models answered a scalar", False)
            return dict.fromkeys(self.members.values(), error)
        buckets: dict[str, list[Sample]] = {value: [] for value in self.members}
        for sample in answer.samples:
            bucket = buckets.get(sample.labels.get(self.label, ""))
            if bucket is None:
                continue  # not one of the members' values: the regex admits no other
            labels = (
                sample.labels
                if self.keeps_label
                else {name: value for name, value in sample.labels.items() if name != self.label}
            )
            bucket.append(Sample(labels, sample.value))
        return {text: InstantVector(tuple(buckets[value])) for value, text in self.members.items()}


class Families:
    """Forms the families of a batch's queries; remembers each query's membership and each proof."""

    def __init__(self) -> None:
        self._members: dict[str, Member | None] = {}
        self._built: dict[tuple[str, ...], PreparedQuery | None] = {}
        self._lock = threading.Lock()

    def form(
        self, queries: Mapping[str, PreparedQuery], refused: frozenset[str]
    ) -> tuple[dict[str, PreparedQuery], list[Family]]:
        """The queries to ask, families in place of their members, and those families."""
        grouped: dict[tuple[str, str], dict[str, PreparedQuery]] = {}
        for query in queries.values():
            member = self._member(query)
            if member is not None:
                grouped.setdefault((member.key, member.label), {})[member.value] = query
        pool = dict(queries)
        families: list[Family] = []
        for (_key, label), members in grouped.items():
            values = sorted(members)
            for start in range(0, len(values), MAX_FAMILY):
                chunk = {value: members[value] for value in values[start : start + MAX_FAMILY]}
                family = self._family(label, chunk, refused) if len(chunk) > 1 else None
                if family is None:
                    continue
                for kept in chunk.values():
                    del pool[kept.text]
                pool[family.query.text] = family.query
                families.append(family)
        return pool, families

    def _member(self, query: PreparedQuery) -> Member | None:
        with self._lock:
            if query.text in self._members:
                return self._members[query.text]
        member = member_of(query.tree) if query.tree is not None else None
        with self._lock:
            if len(self._members) >= _MAX_CACHED:
                self._members.clear()
            self._members[query.text] = member
        return member

    def _family(
        self, label: str, members: Mapping[str, PreparedQuery], refused: frozenset[str]
    ) -> Family | None:
        texts = tuple(query.text for query in members.values())
        with self._lock:
            cached = self._built.get(texts, ...)
        if cached is ...:
            cached = self._build(label, members)
            with self._lock:
                if len(self._built) >= _MAX_CACHED:
                    self._built.clear()
                self._built[texts] = cached
        if cached is None or cached.text in refused:
            return None
        first = next(iter(members.values()))
        member = self._member(first)
        assert member is not None
        return Family(cached, label, {value: q.text for value, q in members.items()}, member.keeps_label)

    @staticmethod
    def _build(label: str, members: Mapping[str, PreparedQuery]) -> PreparedQuery | None:
        """The family's query, proven against the tree of its first member (all members share it
        but for the label's value); None when the proof fails (never expected)."""
        first = next(iter(members.values()))
        values = list(members)
        text = factored_text(first.tree, label, values)
        if not proven(text, first.tree, label, values):
            return None
        mentions = frozenset().union(*(query.mentions for query in members.values()))
        return PreparedQuery(text, shape(pp.parse(text)), ResultType.VECTOR, mentions, pp.parse(text))


def spread(families: Sequence[Family], answers: dict[str, Answer]) -> None:
    """Replace each family's answer by its members' answers."""
    for family in families:
        answer = answers.pop(family.query.text, None)
        if answer is not None:
            answers.update(family.split(answer))
