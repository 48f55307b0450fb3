"""The project's one retry policy: capped exponential backoff, pure and without jitter.

Sources never retry inside one evaluation (the next tick is their retry); they only say whether a
failure is `retryable`. The outbox dispatcher (rollback intents, Slack messages) asks this policy
how long to wait after a failed attempt and whether to give up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """How often to try and how long to wait between tries.

    `attempts` counts every try including the first; None never gives up (a Slack message stays
    queued until Slack is back). The wait after the n-th failed attempt is
    `base_delay * multiplier ** (n - 1)`, capped at `max_delay`.
    """

    attempts: int | None
    base_delay: timedelta
    max_delay: timedelta
    multiplier: float

    def __post_init__(self) -> None:
        # A malformed policy is a programming error, not an expected failure: fail at construction.
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.base_delay < timedelta(0):
            raise ValueError("base_delay must not be negative")
        if self.max_delay < self.base_delay:
            raise ValueError("max_delay must not be shorter than base_delay")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")

    def delay_for(self, attempt: int) -> timedelta | None:
        """The wait after failed attempt number `attempt` (1-based); None means give up."""
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        if self.attempts is not None and attempt >= self.attempts:
            return None
        cap = self.max_delay.total_seconds()
        try:
            seconds = self.base_delay.total_seconds() * self.multiplier ** (attempt - 1)
        except OverflowError:
            # After enough attempts the exponential term leaves float range: the cap applies.
            seconds = cap
        return timedelta(seconds=min(seconds, cap))

    def next_attempt_at(self, attempt: int, failed_at: datetime) -> datetime | None:
        """When to try again after failed attempt number `attempt` at `failed_at`; None: give up."""
        delay = self.delay_for(attempt)
        return None if delay is None else failed_at + delay


# 1 s, 2 s, 4 s, ... 64 s: 8 tries spread over about two minutes, then give up.
DEFAULT_RETRY_POLICY = RetryPolicy(
    attempts=8,
    base_delay=timedelta(seconds=1),
    max_delay=timedelta(minutes=5),
    multiplier=2.0,
)
