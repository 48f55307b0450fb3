"""Evaluation groups shared by replicas through PostgreSQL leases: fair shares, a replica that
joins takes its share, one that dies has its groups taken, never two holders at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.services import fresh_postgres_schema
from watcher.store import migrate
from watcher.store.group_leases import GroupLeases, Rebalance, fair_share
from watcher.store.repository import Store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TTL = timedelta(seconds=3)
KEYS = [f"group-{n}" for n in range(10)]


@pytest.mark.parametrize(
    ("groups", "replicas", "targets"),
    [(300, 3, [100, 100, 100]), (10, 3, [4, 3, 3]), (6, 4, [2, 2, 1, 1]), (1, 2, [1, 0]), (0, 2, [0, 0])],
)
def test_fair_shares_add_up_to_the_groups(groups: int, replicas: int, targets: list[int]) -> None:
    live = [f"r{n}" for n in range(replicas)]
    assert [fair_share(groups, live, replica) for replica in live] == targets


@pytest.fixture
def store() -> Iterator[Store]:
    with fresh_postgres_schema() as schema:
        migrate.upgrade(schema.engine)
        yield Store(schema.engine)


def _passes(
    replicas: dict[str, GroupLeases], held: dict[str, dict[str, int]], start: datetime, seconds: int
) -> datetime:
    """A pass of every replica each second (well within the lease), as their lease jobs make them."""
    for second in range(seconds):
        at = start + timedelta(seconds=second)
        for name, leases in replicas.items():
            result: Rebalance = leases.rebalance(KEYS, held.get(name, {}), at, TTL)
            held[name] = result.held
    return start + timedelta(seconds=seconds)


def test_replicas_share_groups_take_over_the_dead_and_make_room_for_the_new(store: Store) -> None:
    replicas = {name: GroupLeases(store, name) for name in ("a", "b", "c")}
    held: dict[str, dict[str, int]] = {}
    now = _passes(replicas, held, T0, 2)
    assert sorted(len(keys) for keys in held.values()) == [3, 3, 4]
    assert sorted(key for keys in held.values() for key in keys) == sorted(KEYS)  # each once

    dead = held.pop("c")
    del replicas["c"]  # c is killed: its leases and its row run out
    now = _passes(replicas, held, now, 5)  # past its lease
    assert sorted(len(keys) for keys in held.values()) == [5, 5]
    # taken over with a newer token: c's late writes would be refused
    assert all(held["a"].get(key, held["b"].get(key)) == fence + 1 for key, fence in dead.items())

    replicas["d"] = GroupLeases(store, "d")  # a new replica joins: the others make room
    _passes(replicas, held, now, 2)
    assert sorted(len(keys) for keys in held.values()) == [3, 3, 4]
    assert GroupLeases(store, "observer").holders().keys() == set(KEYS)
