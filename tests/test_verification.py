"""The verdict on re-checking the triggering rule after a rollback."""

from __future__ import annotations

import pytest

from watcher.decisions.verification import DEFAULT_MAX_ATTEMPTS, VerifyVerdict, decide_verification
from watcher.model import Outcome

V = VerifyVerdict


@pytest.mark.parametrize(
    ("outcome", "attempts", "verdict"),
    [
        (Outcome.OK, 1, V.MITIGATED),
        (Outcome.OK, 3, V.MITIGATED),
        (Outcome.BREACH, 1, V.ESCALATED),
        (Outcome.BREACH, 3, V.ESCALATED),
        (Outcome.ERROR, 1, V.RETRY_LATER),
        (Outcome.ERROR, 2, V.RETRY_LATER),
        (Outcome.ERROR, 3, V.ESCALATED),
        (Outcome.NO_DATA, 1, V.RETRY_LATER),
        (Outcome.NO_DATA, 2, V.RETRY_LATER),
        (Outcome.NO_DATA, 3, V.ESCALATED),
        (Outcome.NO_DATA, 4, V.ESCALATED),
    ],
)
def test_default_attempts(outcome: Outcome, attempts: int, verdict: VerifyVerdict) -> None:
    assert DEFAULT_MAX_ATTEMPTS == 3
    assert decide_verification(outcome, attempts) is verdict


def test_custom_max_attempts() -> None:
    assert decide_verification(Outcome.ERROR, 4, max_attempts=5) is V.RETRY_LATER
    assert decide_verification(Outcome.ERROR, 5, max_attempts=5) is V.ESCALATED
    assert decide_verification(Outcome.NO_DATA, 1, max_attempts=1) is V.ESCALATED
