"""Replicas share the evaluation groups through PostgreSQL: one lease row per group.

Each replica, every pass: renews its row in `replicas` (how many are alive sets the fair share:
groups / live replicas, see `fair_share`), renews the group leases it holds, releases those above
its share and claims free ones (never held, released, or expired: their holder died or stalled) with
`SELECT ... FOR UPDATE SKIP LOCKED`, so replicas racing for groups never wait on each other and
never take the same one. Every claim raises the group's fencing token; a write made for a group
is conditional on the token it was claimed with (see `confirm_group`).

SQLite is one replica (checked at start): there the same code simply gives it every group.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from watcher.model import RollbackStatus
from watcher.store import tables as t
from watcher.store.repository import Store

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Rows of replicas gone this long are deleted; they no longer count long before.
FORGET_REPLICAS_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class GroupClaim:
    """What a write for a group is made under: the group, its holder and the fencing token."""

    key: str
    holder: str
    fence: int


@dataclass(frozen=True)
class Rebalance:
    """One pass: what this replica holds afterwards, and what changed."""

    held: dict[str, int]  # group key -> fencing token
    acquired: tuple[str, ...]
    lost: tuple[str, ...]  # taken over by another replica while we believed we held it
    released: tuple[str, ...]  # given up: above our share, or no longer a group of ours
    live_replicas: int
    share: int


def fair_share(groups: int, live: Sequence[str], replica: str) -> int:
    """This replica's target: groups / live replicas, the remainder going one each to the first
    replicas in id order, so the targets add up to the groups (ceil for all would leave a replica
    with nothing when there are few groups: 6 over 4 replicas is 2, 2, 1, 1, not 2, 2, 2, 0)."""
    base, remainder = divmod(groups, max(1, len(live)))
    ranked = sorted(live)
    rank = ranked.index(replica) if replica in ranked else len(ranked)
    return base + (1 if rank < remainder else 0)


def confirm_group(connection: Connection, claim: GroupClaim) -> bool:
    """The conditional write a group's writes start with: True while `claim` is current. In
    PostgreSQL the row stays locked until the caller's transaction ends, so a new holder's claim
    waits for it and cannot slip in between this check and the writes it guards."""
    c = t.group_leases.c
    statement = update(t.group_leases).where(
        c.key == claim.key, c.holder == claim.holder, c.fence == claim.fence
    )
    return bool(connection.execute(statement.values(fence=c.fence)).rowcount)


class GroupLeases:
    def __init__(self, store: Store, replica: str) -> None:
        self.store = store
        self.replica = replica
        self._known: frozenset[str] = frozenset()

    def heartbeat(self, now: datetime, ttl: timedelta) -> list[str]:
        """Say this replica is alive until now + ttl; the live replicas, this one included."""
        c = t.replicas.c
        with self.store.engine.begin() as connection:
            seen = connection.execute(
                update(t.replicas).where(c.id == self.replica).values(expires_at=now + ttl)
            ).rowcount
            if not seen:
                connection.execute(
                    insert(t.replicas).values(id=self.replica, started_at=now, expires_at=now + ttl)
                )
            connection.execute(delete(t.replicas).where(c.expires_at < now - FORGET_REPLICAS_AFTER))
            live = [str(row[0]) for row in connection.execute(select(c.id).where(c.expires_at >= now))]
        return live if self.replica in live else [*live, self.replica]

    def rebalance(
        self, keys: Collection[str], held: Mapping[str, int], now: datetime, ttl: timedelta
    ) -> Rebalance:
        """One pass: heartbeat, renew, release extras, claim up to the fair share."""
        live = self.heartbeat(now, ttl)
        wanted = frozenset(keys)
        share = fair_share(len(wanted), live, self.replica)
        with self.store.engine.begin() as connection:
            self._ensure_rows(connection, wanted)
            renewed = self._renew(connection, now + ttl)
            mine = {key: fence for key, fence in renewed.items() if key in wanted}
            extras = sorted(set(renewed) - set(mine)) + sorted(mine)[share:]
            for key in extras:
                mine.pop(key, None)
            self._release(connection, extras)
            claimed = self._claim(connection, wanted, share - len(mine), now, now + ttl)
        mine.update(claimed)
        lost = tuple(sorted(key for key, fence in held.items() if renewed.get(key) != fence))
        acquired = tuple(sorted(key for key, fence in mine.items() if held.get(key) != fence))
        return Rebalance(mine, acquired, lost, tuple(extras), len(live), share)

    def release_all(self) -> None:
        """On a clean stop: hand every group over at once instead of letting the leases run out."""
        c = t.group_leases.c
        with self.store.engine.begin() as connection:
            connection.execute(
                update(t.group_leases).where(c.holder == self.replica).values(holder=None, expires_at=EPOCH)
            )
            connection.execute(delete(t.replicas).where(t.replicas.c.id == self.replica))

    def holders(self) -> dict[str, str | None]:
        """Every group's current holder (for tests and operators)."""
        c = t.group_leases.c
        with self.store.engine.connect() as connection:
            return {row[0]: row[1] for row in connection.execute(select(c.key, c.holder))}

    # --- steps --------------------------------------------------------------------------------
    def _ensure_rows(self, connection: Connection, wanted: frozenset[str]) -> None:
        """A lease row for every group this replica knows (once per rule set, not every pass)."""
        if wanted <= self._known:
            return
        rows = [
            {"key": key, "holder": None, "fence": 0, "expires_at": EPOCH}
            for key in sorted(wanted - self._known)
        ]
        dialect = connection.dialect.name
        if dialect == "postgresql":
            connection.execute(postgresql.insert(t.group_leases).on_conflict_do_nothing(), rows)
        elif dialect == "sqlite":
            connection.execute(sqlite.insert(t.group_leases).on_conflict_do_nothing(), rows)
        else:  # pragma: no cover - the store supports PostgreSQL and SQLite only
            raise NotImplementedError(dialect)
        self._known = wanted

    def _renew(self, connection: Connection, expires_at: datetime) -> dict[str, int]:
        """Extend every lease this replica still holds; what it holds, with the tokens."""
        c = t.group_leases.c
        rows = connection.execute(
            update(t.group_leases)
            .where(c.holder == self.replica)
            .values(expires_at=expires_at)
            .returning(c.key, c.fence)
        ).all()
        return {str(row[0]): int(row[1]) for row in rows}

    def _release(self, connection: Connection, keys: list[str]) -> None:
        if not keys:
            return
        c = t.group_leases.c
        connection.execute(
            update(t.group_leases)
            .where(c.holder == self.replica, c.key.in_(bindparam("keys", expanding=True)))
            .values(holder=None, expires_at=EPOCH),
            {"keys": keys},
        )

    def _claim(
        self, connection: Connection, wanted: frozenset[str], room: int, now: datetime, expires_at: datetime
    ) -> dict[str, int]:
        """Take up to `room` free groups, skipping rows another replica is claiming right now."""
        if room <= 0:
            return {}
        c = t.group_leases.c
        free = connection.execute(
            select(c.key)
            .where(c.expires_at < now, c.key.in_(bindparam("keys", expanding=True)))
            .order_by(c.key)
            .limit(room)
            .with_for_update(skip_locked=True),
            {"keys": sorted(wanted)},
        ).all()
        if not free:
            return {}
        rows = connection.execute(
            update(t.group_leases)
            .where(c.key.in_(bindparam("free", expanding=True)), c.expires_at < now)
            .values(holder=self.replica, fence=c.fence + 1, expires_at=expires_at)
            .returning(c.key, c.fence),
            {"free": [row[0] for row in free]},
        ).all()
        return {str(row[0]): int(row[1]) for row in rows}


def reclaim_intents_of_dead_replicas(store: Store, now: datetime) -> int:
    """Make claimable now the rollback intents claimed by replicas no longer alive: a new claim
    raises the intent's token, so the dead (or stalled) claimer can write nothing more for it."""
    c = t.rollback_intents.c
    live = select(t.replicas.c.id).where(t.replicas.c.expires_at >= now)
    with store.engine.begin() as connection:
        return connection.execute(
            update(t.rollback_intents)
            .where(
                c.status == RollbackStatus.RUNNING.value, c.claimed_until >= now, c.claimed_by.not_in(live)
            )
            .values(claimed_until=now - timedelta(seconds=1))
        ).rowcount
