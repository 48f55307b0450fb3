"""Rules placed into shards of bounded size by a hash of their id, so that membership is stable.

Prometheus rules of one interval and datasource are evaluated in shards, each at most one batched
request's worth of queries (watcher.sources.prometheus_batch). Which shard a rule lands in depends
only on its id and on the number of shards, never on the file it is in or on the order the files
were read:

- the number of shards is the class's load (queries) over a target a little under a request's
  limit, so a shard has room for the unevenness of hashing;
- each rule's preferred shard is Lamping and Veach's jump consistent hash of its id: going from n
  to n + 1 shards moves only a 1/(n + 1) share of the rules, and adding or removing a rule moves
  none of the others;
- a shard takes at most `capacity` (a little over the mean, never over a request's limit); a rule
  whose preferred shard is full goes to the next one with room, rules placed in the order of their
  hashes ("consistent hashing with bounded loads"), so the spill-over is the same on every replica
  and at every reload, and shards stay about equal in size (replicas share them by count).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class ShardSizing:
    """How big shards are: `limit` queries at most (one request), about `target` on average."""

    limit: int
    target: int
    slack: float = 0.15  # how far over the mean a shard may fill before rules spill over


def rule_hash(rule_id: str) -> int:
    """A 64-bit hash of a rule id, the same in every process (Python's hash() is salted)."""
    return int.from_bytes(hashlib.blake2b(rule_id.encode(), digest_size=8).digest(), "big")


def jump_hash(key: int, buckets: int) -> int:
    """Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014)."""
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * 2862933555777941757 + 1) & _MASK64
        jump = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def shard_count(load: int, sizing: ShardSizing) -> int:
    return max(1, math.ceil(load / sizing.target))


def place(weights: Mapping[str, int], sizing: ShardSizing) -> dict[int, list[str]]:
    """The rules (id -> queries it asks) by shard number, each shard's ids sorted (an empty shard
    is left out, and the others keep their numbers).

    A rule heavier than `limit` still gets a place (a shard of its own, asked in several requests
    by the batch): grouping never drops a rule."""
    load = sum(weights.values())
    count = shard_count(load, sizing)
    heaviest = max(weights.values(), default=1)
    capacity = max(heaviest, min(sizing.limit, math.ceil(load / count * (1 + sizing.slack))))
    shards: list[list[str]] = [[] for _ in range(count)]
    filled = [0] * count
    hashes = {rule_id: rule_hash(rule_id) for rule_id in weights}
    for rule_id in sorted(weights, key=lambda rid: (hashes[rid], rid)):
        weight = weights[rule_id]
        preferred = jump_hash(hashes[rule_id], count)
        index = _with_room(filled, preferred, weight, capacity)
        if index is None:  # every shard full (only when heavy rules crowd them): open another
            shards.append([])
            filled.append(0)
            index = len(shards) - 1
        shards[index].append(rule_id)
        filled[index] += weight
    return {number: sorted(shard) for number, shard in enumerate(shards) if shard}


def _with_room(filled: list[int], start: int, weight: int, capacity: int) -> int | None:
    for step in range(len(filled)):
        index = (start + step) % len(filled)
        if filled[index] + weight <= capacity:
            return index
    return None
