"""The one local Prometheus launcher (watcher.ruletest.prometheus): what `watcher test`, the test
suite, the scenario and the benchmarks all start their Prometheus with."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import requests

from tests.support.prometheus import binaries_missing
from tests.support.services import require
from watcher.ruletest.prometheus import LocalPrometheus, PrometheusUnavailable, start_prometheus

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _prometheus_installed() -> None:
    missing = binaries_missing()
    if missing is not None:
        require("prometheus", missing)


def _up(server: LocalPrometheus) -> bool:
    return requests.get(f"{server.url}/-/ready", timeout=5).status_code == 200


def test_a_port_taken_before_prometheus_binds_it_is_replaced_by_another(tmp_path: Path) -> None:
    server = LocalPrometheus(tmp_path)
    taken = server.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            assert server.start() is None
            assert server.port != taken and _up(server)
        finally:
            server.stop()


def test_a_port_the_caller_chose_is_kept_and_a_taken_one_is_reported(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = LocalPrometheus(tmp_path, port=port)
        failure = server.start()
    assert isinstance(failure, PrometheusUnavailable) and "address already in use" in failure.reason
    assert not server.running


def test_a_killed_prometheus_starts_again_on_the_same_port_with_its_data(tmp_path: Path) -> None:
    started = start_prometheus(tmp_path, 'up_total{job="x"} 1 1700000000\n# EOF\n')
    assert isinstance(started, LocalPrometheus)
    port = started.port
    try:
        started.kill()
        assert not started.running
        assert started.start() is None
        assert started.port == port and _up(started)
        answer = requests.get(
            f"{started.url}/api/v1/query", params={"query": "up_total", "time": "1700000000"}, timeout=10
        ).json()
        assert [r["value"][1] for r in answer["data"]["result"]] == ["1"]
    finally:
        started.stop()
    assert not started.running


def test_a_missing_binary_is_a_typed_failure_naming_it(tmp_path: Path) -> None:
    failure = LocalPrometheus(tmp_path, binary=tmp_path / "no-prometheus").start()
    assert isinstance(failure, PrometheusUnavailable) and "no-prometheus is missing" in failure.reason


def test_input_series_promtool_refuses_are_reported_and_nothing_starts(tmp_path: Path) -> None:
    failure = start_prometheus(tmp_path, "not openmetrics at all\n")
    assert isinstance(failure, PrometheusUnavailable)
    assert failure.reason.startswith("promtool refused the input series")
