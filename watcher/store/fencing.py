"""Writes made under a claim are conditional on its fencing token; refused ones are audited.

A replica paused past its lease (a GC pause, SIGSTOP, a slow disk) wakes up believing it still
holds its claims. Checking a flag in memory cannot tell it otherwise; the database can. Each write
made under a claim starts with a conditional UPDATE on the claim's token in the same transaction,
and when another holder has a newer token the transaction writes nothing but an audit row saying
a stale holder's write was refused.

`FencedStore` does this for the engine: the daemon marks the thread that evaluates a group with
the group's claim (`fenced_by`), and every transaction opened on that thread checks it first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.engine import Engine

from watcher.store.group_leases import GroupClaim, confirm_group
from watcher.store.records import AuditEvent
from watcher.store.repository import Store, Tx

STALE_WRITE_REFUSED = "stale_write_refused"  # the audit kind


class ClaimKind(StrEnum):
    GROUP = "group"
    INTENT = "intent"
    MESSAGE = "message"
    LEASE = "lease"


@dataclass(frozen=True)
class Refusal:
    """A write refused because its claim was no longer current."""

    kind: ClaimKind
    claim: str  # the group key, intent key, message id or lease name
    holder: str
    fence: int
    write: str  # what was refused, e.g. "rollback_succeeded"


class StaleClaimError(RuntimeError):
    """Raised inside a fenced transaction whose claim is outdated: it rolls back, writing nothing."""

    def __init__(self, claim: GroupClaim) -> None:
        super().__init__(f"claim of group {claim.key!r} with token {claim.fence} is no longer current")
        self.claim = claim


def refusal_event(refusal: Refusal, now: datetime, **fields: Any) -> AuditEvent:
    """The audit row for a refused write (`fields`: incident_id, target, versions if known)."""
    return AuditEvent(
        at=now,
        actor=refusal.holder,
        kind=STALE_WRITE_REFUSED,
        detail={
            "claim": refusal.kind.value,
            "name": refusal.claim,
            "fence": refusal.fence,
            "write": refusal.write,
        },
        **fields,
    )


def record_refusal(store: Store, refusal: Refusal, now: datetime, **fields: Any) -> None:
    with store.transaction() as tx:
        tx.append_audit(refusal_event(refusal, now, **fields))


@dataclass
class FenceState:
    claim: GroupClaim
    refused: bool = False


_local = threading.local()


@contextmanager
def fenced_by(claim: GroupClaim) -> Iterator[FenceState]:
    """Every FencedStore transaction on this thread, inside the block, is made under `claim`."""
    state = FenceState(claim)
    previous = getattr(_local, "state", None)
    _local.state = state
    try:
        yield state
    finally:
        _local.state = previous


def current_fence() -> FenceState | None:
    state = getattr(_local, "state", None)
    return state if isinstance(state, FenceState) else None


class FencedStore(Store):
    """A Store whose write transactions check the calling thread's group claim first."""

    def __init__(self, engine: Engine, on_refused: Callable[[GroupClaim], None] | None = None) -> None:
        super().__init__(engine)
        self.on_refused = on_refused

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        state = current_fence()
        with self.engine.begin() as connection:
            if state is not None and (state.refused or not confirm_group(connection, state.claim)):
                first = not state.refused
                state.refused = True
                if first and self.on_refused is not None:
                    self.on_refused(state.claim)
                raise StaleClaimError(state.claim)
            yield Tx(connection)
