"""The pages' answers over HTTP (no browser): filters, pagination, errors, headers, no secrets."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.support.pages_seed import Story, seed_bulk, seed_story
from tests.test_incident_json import migrated_sqlite_store
from watcher.http.page_data import PageSources
from watcher.http.pages import page_routes
from watcher.store.repository import NewIncident, Store

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Context:
    store: Store
    now: object = lambda: NOW


@dataclass
class Site:
    client: TestClient
    story: Story
    store: Store


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    store = migrated_sqlite_store(tmp_path)
    story = seed_story(store, NOW - timedelta(hours=2))
    seed_bulk(store, 120, NOW - timedelta(days=1))
    app = Starlette(routes=list(page_routes(Context(store), PageSources(rules=dict))))  # type: ignore[arg-type]
    with TestClient(app) as client:
        yield Site(client, story, store)


def ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<a href="/incidents/(\d+)">', html)]


def test_the_board_pages_through_every_incident_open_ones_first(site: Site) -> None:
    seen: list[int] = []
    page = 1
    while True:
        html = site.client.get(f"/?page={page}").text
        if not ids(html):
            break
        seen += ids(html)
        page += 1
    assert sorted(seen) == list(range(1, 124))  # each once, none lost between pages
    assert page - 1 == 3  # 50 a page
    assert site.story.open_id in seen[:13] and site.story.incident_id not in seen[:13]


def test_filters_narrow_the_board_and_survive_paging_links(site: Site) -> None:
    html = site.client.get("/?status=mitigated&target=fraud-prod").text
    assert ids(html) == [site.story.incident_id]
    html = site.client.get("/?status=resolved").text
    assert "status=resolved&amp;page=2" in html


@pytest.mark.parametrize("query", ["status=sideways", "page=0", "page=x", "page=99999999"])
def test_bad_filters_are_a_400_page(site: Site, query: str) -> None:
    answer = site.client.get(f"/?{query}")
    assert answer.status_code == 400 and answer.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/incidents/99999", "/incidents/abc", "/incidents/99999999999999"])
def test_unknown_incidents_are_a_404_page(site: Site, path: str) -> None:
    assert site.client.get(path).status_code == 404


def test_pages_allow_nothing_from_elsewhere_and_no_script(site: Site) -> None:
    answer = site.client.get("/")
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert "<script" not in answer.text and "http://" not in answer.text.replace(
        "http://www.w3.org/2000/svg", ""
    )


def test_an_incident_page_never_shows_a_password_from_its_evidence(site: Site) -> None:
    with site.store.transaction() as tx:
        incident_id = tx.open_incident(
            NewIncident(
                "m/sql-rule",
                "h",
                "m",
                None,
                "accuracy",
                "warning",
                "notify",
                "accuracy low",
                NOW,
                None,
                {
                    "value": 0.8,
                    "threshold": 0.9,
                    "comparison": "below",
                    "query": "SELECT 1 -- postgresql://app:hunter2@db/x",
                },
            )
        )
    html = site.client.get(f"/incidents/{incident_id}").text
    assert "hunter2" not in html and "accuracy low" in html


def test_the_incident_page_escapes_what_rules_wrote(site: Site) -> None:
    with site.store.transaction() as tx:
        incident_id = tx.open_incident(
            NewIncident(
                "m/x",
                "h",
                "m",
                None,
                "custom",
                "warning",
                "notify",
                "<img src=x onerror=alert(1)>",
                NOW,
                None,
                {"value": 1.0, "threshold": 0.5},
            )
        )
    html = site.client.get(f"/incidents/{incident_id}").text
    assert "<img src=x" not in html and "&lt;img src=x" in html


def test_static_css_is_served_by_the_daemon(site: Site) -> None:
    answer = site.client.get("/static/pages.css")
    assert answer.status_code == 200 and "text/css" in answer.headers["content-type"]
