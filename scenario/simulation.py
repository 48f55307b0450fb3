"""What the scripted fraud model does for one request: pure functions of a seeded RNG and a profile.

No real model runs. A version is either healthy or degraded, and the profile says how requests
look then: latency drawn from a log-normal (p99 = median * e^(2.326 sigma)), error rate, share of
bad feedback, accuracy against the ground truth label, and whether the inputs drift.
"""

from __future__ import annotations

import csv
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

# The 99th percentile of a standard normal: p99 = median * exp(Z99 * sigma) for a log-normal.
Z99 = 2.326


class Status(StrEnum):
    OK = "ok"
    ERROR = "error"


class Verdict(StrEnum):
    GOOD = "good"
    BAD = "bad"


@dataclass(frozen=True)
class Profile:
    name: str
    latency_median_s: float
    latency_sigma: float
    error_rate: float
    bad_feedback_rate: float
    accuracy: float
    drifting: bool

    @property
    def latency_p99_s(self) -> float:
        return self.latency_median_s * math.exp(Z99 * self.latency_sigma)


HEALTHY = Profile(
    "healthy",
    latency_median_s=0.032,
    latency_sigma=0.40,
    error_rate=0.01,
    bad_feedback_rate=0.05,
    accuracy=0.96,
    drifting=False,
)
DEGRADED = Profile(
    "degraded",
    latency_median_s=0.16,
    latency_sigma=0.40,
    error_rate=0.10,
    bad_feedback_rate=0.35,
    accuracy=0.70,
    drifting=True,
)

# Share of answered requests whose user leaves feedback, and of transactions that are fraud.
FEEDBACK_SHARE = 0.3
FRAUD_SHARE = 0.05


def profile_for(version: str, *, bad_version: str, elapsed_s: float, bad_after_s: float) -> Profile:
    """The bad version is degraded once `bad_after_s` have passed since the start; others never."""
    if version == bad_version and elapsed_s >= bad_after_s:
        return DEGRADED
    return HEALTHY


@dataclass(frozen=True)
class Features:
    amount: float
    merchant_category: str
    hour: int
    country: str


@dataclass(frozen=True)
class Request:
    request_id: str
    version: str
    latency_s: float
    status: Status
    predicted: int | None  # None when the request failed: no prediction was made
    label: int  # ground truth, known some time later
    verdict: Verdict | None
    features: Features


@dataclass(frozen=True)
class ReferenceFailure:
    message: str


class FeatureSampler:
    """Inputs drawn like the reference data; drifting inputs are scaled and shifted from it."""

    def __init__(self, rows: Sequence[Features]) -> None:
        if not rows:
            raise ValueError("a feature sampler needs at least one reference row")
        self._rows = list(rows)
        counts = Counter(row.merchant_category for row in self._rows)
        # Drift moves traffic towards the category the reference sees least.
        self.rare_category = min(sorted(counts), key=lambda category: counts[category])

    def draw(self, rng: random.Random, *, drifting: bool) -> Features:
        row = rng.choice(self._rows)
        if not drifting:
            return row
        category = self.rare_category if rng.random() < 0.6 else row.merchant_category
        hour = rng.randrange(0, 5) if rng.random() < 0.5 else row.hour
        return Features(
            amount=round(row.amount * 4.0, 2), merchant_category=category, hour=hour, country=row.country
        )


def simulate_request(
    rng: random.Random, profile: Profile, sampler: FeatureSampler, *, request_id: str, version: str
) -> Request:
    features = sampler.draw(rng, drifting=profile.drifting)
    latency = rng.lognormvariate(math.log(profile.latency_median_s), profile.latency_sigma)
    label = 1 if rng.random() < FRAUD_SHARE else 0
    if rng.random() < profile.error_rate:
        return Request(request_id, version, latency, Status.ERROR, None, label, None, features)
    predicted = label if rng.random() < profile.accuracy else 1 - label
    verdict: Verdict | None = None
    if rng.random() < FEEDBACK_SHARE:
        verdict = Verdict.BAD if rng.random() < profile.bad_feedback_rate else Verdict.GOOD
    return Request(request_id, version, latency, Status.OK, predicted, label, verdict, features)


def load_reference(path: Path) -> list[Features] | ReferenceFailure:
    """Rows of a reference CSV with columns amount, merchant_category, hour, country."""
    try:
        with path.open(newline="") as handle:
            rows = [_features_from(record) for record in csv.DictReader(handle)]
    except OSError as error:
        return ReferenceFailure(f"{path}: {error.strerror}")
    except (KeyError, ValueError, TypeError) as error:
        return ReferenceFailure(f"{path}: not a fraud reference table ({error})")
    if not rows:
        return ReferenceFailure(f"{path}: no rows")
    return rows


def _features_from(record: dict[str, str]) -> Features:
    return Features(
        amount=float(record["amount"]),
        merchant_category=record["merchant_category"],
        hour=int(float(record["hour"])),
        country=record["country"],
    )


_CATEGORIES = {
    "grocery": 30,
    "restaurants": 20,
    "online_retail": 18,
    "fuel": 12,
    "travel": 8,
    "electronics": 6,
    "entertainment": 4,
    "jewelry": 2,
}
_COUNTRIES = {"US": 45, "GB": 15, "DE": 12, "FR": 10, "NL": 8, "ES": 6, "BR": 4}


def generated_reference(seed: int, rows: int = 5000) -> list[Features]:
    """A plausible reference table for when no reference CSV is at hand."""
    rng = random.Random(seed)
    categories, category_weights = zip(*_CATEGORIES.items(), strict=True)
    countries, country_weights = zip(*_COUNTRIES.items(), strict=True)
    hour_weights = [1 + 4 * math.exp(-((hour - 14) ** 2) / 18) for hour in range(24)]
    return [
        Features(
            amount=round(rng.lognormvariate(math.log(45.0), 0.9), 2),
            merchant_category=rng.choices(categories, category_weights)[0],
            hour=rng.choices(range(24), hour_weights)[0],
            country=rng.choices(countries, country_weights)[0],
        )
        for _ in range(rows)
    ]
