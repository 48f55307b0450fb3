"""The verdict on re-evaluating the triggering rule `verify_after` a rollback (SPEC.md section 3).

ok: the rollback helped (mitigated). breach: it did not (escalated: notify, no further automatic
rollback). error or no data prove nothing either way: try again later, and escalate once
`max_attempts` attempts have all been inconclusive, so that a human looks at it.
"""

from __future__ import annotations

from enum import StrEnum

from watcher.model import Outcome

DEFAULT_MAX_ATTEMPTS = 3


class VerifyVerdict(StrEnum):
    MITIGATED = "mitigated"
    ESCALATED = "escalated"
    RETRY_LATER = "retry_later"


def decide_verification(
    outcome: Outcome, attempts: int, max_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> VerifyVerdict:
    """`attempts` counts the verification attempts made so far, this one included (1 on the first)."""
    if outcome is Outcome.OK:
        return VerifyVerdict.MITIGATED
    if outcome is Outcome.BREACH:
        return VerifyVerdict.ESCALATED
    if attempts >= max_attempts:
        return VerifyVerdict.ESCALATED
    return VerifyVerdict.RETRY_LATER
