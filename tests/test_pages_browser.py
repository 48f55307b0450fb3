"""The web pages in headless Chromium (Debian's /usr/bin/chromium through Playwright), served by
the daemon's HTTP app on a free port, over a real database and a real Prometheus.

Each page must load with no console error and no request off the host; the incident page's
chart must be an SVG holding the series Prometheus has. Screenshots go to artifacts/pages/.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import start_prometheus_in
from tests.support.pages_seed import LATENCY_RULE, RULES_YAML, Story, latency_series, seed_bulk, seed_story
from tests.support.prometheus import PrometheusServer
from tests.test_incident_json import migrated_sqlite_store
from watcher.charts.series import PrometheusRange
from watcher.http.context import HttpContext
from watcher.http.page_data import PageSources
from watcher.http.pages import page_route_set
from watcher.http.serve import HttpServer
from watcher.metrics import Metrics
from watcher.rules.config import load_config
from watcher.rules.rulefmt import load_rules

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "pages"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Site:
    url: str
    story: Story
    prometheus: PrometheusServer


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not CHROMIUM.is_file():
        pytest.fail("Debian's chromium is not installed (scripts/setup installs it)") if os.environ.get(
            "CI"
        ) == "true" else pytest.skip("no /usr/bin/chromium")
    work = tmp_path_factory.mktemp("pages")
    # The story lies three hours back: its data is backfilled, and it resolved long before "now".
    at = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
    prometheus = start_prometheus_in(work / "prometheus", latency_series(at))
    (work / "rules").mkdir()
    (work / "rules" / "fraud.yaml").write_text(RULES_YAML)
    (work / "watcher.yaml").write_text(
        f"rules: rules/\nprometheus: {{url: '{prometheus.url}'}}\n"
        "targets: {fraud-prod: {adapter: command, argv: [/bin/true]}}\n"
    )
    config = load_config(work / "watcher.yaml", {}).config
    assert config is not None, load_config(work / "watcher.yaml", {}).findings
    loaded = load_rules(config)
    assert not loaded.findings, loaded.findings
    rules = loaded.rules
    store = migrated_sqlite_store(work)
    story = seed_story(store, at)
    seed_bulk(store, 300, at - timedelta(days=1))
    sources = PageSources(
        rules=lambda: rules, prometheus=PrometheusRange(prometheus.url, {}, timedelta(seconds=3))
    )
    context = HttpContext(store=store, metrics=Metrics(), loop_alive=lambda: True, ready=lambda: (True, ""))
    server = HttpServer("127.0.0.1", 0, context, extra=[page_route_set(sources)])
    server.start()
    yield Site(f"http://127.0.0.1:{server.bound_port}", story, prometheus)
    server.stop()
    prometheus.kill()


@dataclass
class Visit:
    errors: list[str]
    off_host: list[str]
    svgs: list[dict[str, str]]
    text: str


def visit(site: Site, path: str, shot: str) -> Visit:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    off_host: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(
            "request",
            lambda r: None if r.url.startswith((site.url, "data:")) else off_host.append(r.url),
        )
        response = page.goto(site.url + path, wait_until="networkidle")
        assert response is not None and response.status == 200, path
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
        svgs = page.eval_on_selector_all(
            "figure.chart-box svg, td.spark svg",
            "els => els.map(e => ({points: e.getAttribute('data-points') || '', "
            "series: Array.from(e.querySelectorAll('polyline.series'))"
            ".map(p => p.getAttribute('points')).join(' ')}))",
        )
        text = page.inner_text("main")
        browser.close()
    return Visit(errors, off_host, svgs, text)


def test_the_board_lists_open_incidents_first_and_loads_clean(site: Site) -> None:
    seen = visit(site, "/", "board.png")
    assert seen.errors == [] and seen.off_host == []
    first_rows = re.findall(r"#(\d+)", seen.text)[:13]  # 12 bulk open incidents, and this one
    assert str(site.story.open_id) in first_rows  # open incidents lead the board
    assert "page 1 of" in seen.text


def test_the_board_filters_by_status_and_target(site: Site) -> None:
    seen = visit(site, "/?status=mitigated&target=fraud-prod", "board-filtered.png")
    assert seen.errors == [] and seen.off_host == []
    assert f"#{site.story.incident_id}" in seen.text and f"#{site.story.open_id}" not in seen.text


def test_the_incident_page_charts_the_series_prometheus_holds(site: Site) -> None:
    seen = visit(site, f"/incidents/{site.story.incident_id}", "incident.png")
    assert seen.errors == [] and seen.off_host == []
    chart = seen.svgs[0]
    drawn = len(chart["series"].split())
    assert drawn == sum(int(n) for n in chart["points"].split(",")) and drawn > 40
    assert "rollback" in seen.text and "v3 → v2" in seen.text
    assert LATENCY_RULE in seen.text


def test_the_drift_incident_shows_its_columns_and_links_the_report(site: Site) -> None:
    seen = visit(site, f"/incidents/{site.story.drift_id}", "incident-drift.png")
    assert seen.errors == [] and seen.off_host == []
    assert "Drift per column" in seen.text and "Evidently's drift report" in seen.text


def test_the_rules_page_shows_every_rule_with_a_small_chart(site: Site) -> None:
    seen = visit(site, "/rules", "rules.png")
    assert seen.errors == [] and seen.off_host == []
    assert LATENCY_RULE in seen.text and "fraud-detector/error-rate" in seen.text
    assert len(seen.svgs) >= 2
