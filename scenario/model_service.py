"""A scripted model service: serves whatever version the registry alias points at, with traffic.

    python -m scenario.model_service --port 9400 --db var/analytics.db \
        --tracking-uri sqlite:////abs/mlflow.db --bad-after 45

It polls the MLflow alias (`champion` of `fraud-detector`) every second and switches at once when
it moves. It simulates ~20-50 requests/s (seeded) and exposes, on `/metrics`, with labels
`model` and `version`: the histogram `model_request_seconds`, the counters
`model_requests_total{status}` and `model_feedback_total{verdict}`. Predictions, ground truth
labels (a little later) and input features go to an SQLite database. `/state` tells, as JSON, the
version served, whether it is degraded and when the bad version turned bad.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from scenario.registry import ALIAS, BAD_VERSION, MODEL
from scenario.service_outputs import AnalyticsDb, Metrics
from scenario.simulation import (
    HEALTHY,
    FeatureSampler,
    Profile,
    ReferenceFailure,
    Request,
    generated_reference,
    load_reference,
    profile_for,
    simulate_request,
)


@dataclass(frozen=True)
class ServiceSettings:
    db_path: Path
    tracking_uri: str
    port: int = 0
    model: str = MODEL
    alias: str = ALIAS
    bad_version: str = BAD_VERSION
    bad_after_s: float = 45.0
    rate_per_s: float = 35.0
    seed: int = 7
    reference_csv: Path | None = None
    poll_interval_s: float = 1.0
    label_delay_s: float = 2.0
    tick_s: float = 0.1


def registry_lookup(settings: ServiceSettings) -> Callable[[], str | None]:
    """Asks MLflow which version the alias points at; None when the registry can't answer now."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)

    def lookup() -> str | None:
        try:
            return str(client.get_model_version_by_alias(settings.model, settings.alias).version)
        except Exception:  # a registry hiccup (locked file, missing alias) must not stop the traffic
            return None

    return lookup


class ModelService:
    """The running service: an alias poller, a traffic loop and an HTTP server, each a thread."""

    def __init__(
        self,
        settings: ServiceSettings,
        lookup: Callable[[], str | None],
        sampler: FeatureSampler,
        say: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics(settings.model)
        self._lookup = lookup
        self._sampler = sampler
        self._say = say
        self._rng = random.Random(settings.seed)
        self._stop = threading.Event()
        self._version: str | None = None
        self._profile: Profile = HEALTHY
        self._requests = 0
        self._started_mono = time.monotonic()
        self._started_at = datetime.now(UTC)
        self._server = ThreadingHTTPServer(("127.0.0.1", settings.port), _handler_for(self))
        self._threads = [
            threading.Thread(target=self._poll_alias, name="alias", daemon=True),
            threading.Thread(target=self._serve_traffic, name="traffic", daemon=True),
            threading.Thread(target=self._server.serve_forever, name="http", daemon=True),
        ]

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def state(self) -> dict[str, Any]:
        bad_since = self._started_at + timedelta(seconds=self.settings.bad_after_s)
        return {
            "model": self.settings.model,
            "version": self._version,
            "profile": self._profile.name,
            "bad_version": self.settings.bad_version,
            "bad_since": bad_since.isoformat(),
            "started_at": self._started_at.isoformat(),
            "requests": self._requests,
        }

    def _poll_alias(self) -> None:
        while True:
            version = self._lookup()
            if version is not None and version != self._version:
                self.metrics.ensure_version(version)
                self._version = version
                self._say(f"now serving {self.settings.model} version {version}")
            if self._stop.wait(self.settings.poll_interval_s):
                return

    def _serve_traffic(self) -> None:
        db = AnalyticsDb(self.settings.db_path)
        pending_labels: deque[tuple[float, str, int]] = deque()
        carry = 0.0
        last = time.monotonic()
        try:
            while not self._stop.wait(self.settings.tick_s):
                now_mono = time.monotonic()
                carry += self.settings.rate_per_s * (now_mono - last) * self._rng.uniform(0.6, 1.4)
                last = now_mono
                batch = int(min(carry, self.settings.rate_per_s * 2))
                carry -= int(carry)
                requests = self._simulate(batch, now_mono)
                due = _due_labels(pending_labels, now_mono)
                for request, _ in requests:
                    pending_labels.append(
                        (now_mono + self.settings.label_delay_s, request.request_id, request.label)
                    )
                db.record(self.settings.model, requests, due)
        finally:
            db.close()

    def _simulate(self, count: int, now_mono: float) -> list[tuple[Request, datetime]]:
        version = self._version
        if version is None:
            return []
        profile = profile_for(
            version,
            bad_version=self.settings.bad_version,
            elapsed_s=now_mono - self._started_mono,
            bad_after_s=self.settings.bad_after_s,
        )
        if profile != self._profile:
            self._profile = profile
            self._say(
                f"version {version} is {profile.name} now "
                f"(p99 ~{profile.latency_p99_s * 1000:.0f} ms, errors {profile.error_rate:.0%}, "
                f"bad feedback {profile.bad_feedback_rate:.0%}, accuracy {profile.accuracy:.0%}"
                f"{', inputs drifting' if profile.drifting else ''})"
            )
        now = datetime.now(UTC)
        batch = []
        for _ in range(count):
            self._requests += 1
            request = simulate_request(
                self._rng,
                profile,
                self._sampler,
                version=version,
                request_id=f"{self.settings.seed}-{self._requests:09d}",
            )
            self.metrics.observe(request)
            batch.append((request, now))
        return batch


def _due_labels(pending: deque[tuple[float, str, int]], now_mono: float) -> list[tuple[str, int]]:
    due = []
    while pending and pending[0][0] <= now_mono:
        _, request_id, label = pending.popleft()
        due.append((request_id, label))
    return due


def _handler_for(service: ModelService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, service.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
            elif self.path == "/state":
                self._answer(200, json.dumps(service.state()), "application/json")
            elif self.path == "/healthz":
                self._answer(200, "ok\n", "text/plain")
            else:
                self._answer(404, "not found\n", "text/plain")

        def _answer(self, status: int, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape would bury the scenario's timeline

    return Handler


def sampler_for(reference_csv: Path | None, seed: int, say: Callable[[str], None]) -> FeatureSampler:
    if reference_csv is not None:
        rows = load_reference(reference_csv)
        if not isinstance(rows, ReferenceFailure):
            return FeatureSampler(rows)
        say(f"reference data unusable, generating similar inputs: {rows.message}")
    return FeatureSampler(generated_reference(seed))


def service_state(url: str) -> dict[str, Any]:
    """A running service's /state, or {} when it does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/state", timeout=2) as response:
            state: dict[str, Any] = json.load(response)
            return state
    except (OSError, ValueError, urllib.error.URLError):
        return {}


def serving(url: str) -> bool:
    """The running service at `url` knows which version it serves."""
    return service_state(url).get("version") is not None


def _parse_args(argv: Sequence[str] | None) -> ServiceSettings:
    parser = argparse.ArgumentParser(
        prog="python -m scenario.model_service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=0, help="HTTP port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--db", type=Path, required=True, help="SQLite analytics database to write")
    parser.add_argument(
        "--tracking-uri", required=True, help="MLflow registry, e.g. sqlite:////abs/mlflow.db"
    )
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--alias", default=ALIAS)
    parser.add_argument("--bad-version", default=BAD_VERSION)
    parser.add_argument(
        "--bad-after", type=float, default=45.0, help="seconds until the bad version degrades"
    )
    parser.add_argument("--rate", type=float, default=35.0, help="mean requests per second")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reference", type=Path, help="reference CSV to draw healthy inputs like")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between alias lookups")
    parser.add_argument("--label-delay", type=float, default=2.0, help="seconds until ground truth arrives")
    args = parser.parse_args(argv)
    return ServiceSettings(
        db_path=args.db,
        tracking_uri=args.tracking_uri,
        port=args.port,
        model=args.model,
        alias=args.alias,
        bad_version=args.bad_version,
        bad_after_s=args.bad_after,
        rate_per_s=args.rate,
        seed=args.seed,
        reference_csv=args.reference,
        poll_interval_s=args.poll_interval,
        label_delay_s=args.label_delay,
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = _parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    service = ModelService(
        settings, registry_lookup(settings), sampler_for(settings.reference_csv, settings.seed, say), say
    )
    service.start()
    say(f"listening on http://127.0.0.1:{service.port}")
    stop.wait()
    service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
