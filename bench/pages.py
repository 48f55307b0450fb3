"""Web pages with 10,000 incidents in the database: the time of each page, next to the 300 ms target.

    .venv/bin/python bench/pages.py                          # SQLite, 10,000 incidents
    .venv/bin/python bench/pages.py --database postgresql+psycopg://127.0.0.1/test --incidents 10000

The pages are served over a real socket by uvicorn from the same Starlette routes the daemon
mounts; each page is fetched `--repeat` times after one warm-up, and the median and the worst are
printed. Charts query no Prometheus here (none is configured): this measures the store side.
Reports and never fails on a missed target.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_MS = 300.0


def _store(database: str | None, work: Path):  # type: ignore[no-untyped-def]
    from sqlalchemy import make_url, text

    from watcher.store.database import open_engine
    from watcher.store.migrate import upgrade
    from watcher.store.repository import Store

    url = database or f"sqlite:///{work / 'pages.db'}"
    engine = open_engine(url)
    if database:  # a fresh schema of its own on a shared PostgreSQL
        schema = f"bench_pages_{int(time.time())}"
        with engine.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        url = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
        engine = open_engine(url)
    upgrade(engine)
    return Store(engine)


def _serve(app, port_box: list[int]) -> threading.Thread:  # type: ignore[no-untyped-def]
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)

    def run() -> None:
        server.run()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port_box.append(server.servers[0].sockets[0].getsockname()[1])
    return thread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--database", help="a PostgreSQL URL (default: a SQLite file)")
    args = parser.parse_args()

    import httpx
    from starlette.applications import Starlette

    from tests.support.pages_seed import seed_bulk, seed_story
    from watcher.http.page_data import PageSources
    from watcher.http.pages import page_routes

    work = Path(tempfile.mkdtemp(prefix="bench-pages-"))
    store = _store(args.database, work)
    now = datetime.now(UTC)
    started = time.perf_counter()
    story = seed_story(store, now - timedelta(hours=2))
    seed_bulk(store, args.incidents - 3, now - timedelta(days=1))
    print(
        f"seeded {args.incidents} incidents in {time.perf_counter() - started:.1f} s",
        f"({store.engine.url.drivername})",
    )

    class Context:
        def __init__(self) -> None:
            self.store = store
            self.now = lambda: datetime.now(UTC)

    app = Starlette(routes=list(page_routes(Context(), PageSources(rules=dict))))
    port: list[int] = []
    _serve(app, port)
    pages = {
        "board": "/",
        "board, page 100": "/?page=100",
        "board, status=resolved": "/?status=resolved",
        "board, target filter": "/?target=model-07-prod",
        "incident page": f"/incidents/{story.incident_id}",
        "incident page (old)": "/incidents/17",
        "rules page": "/rules",
    }
    print(f"{'page':<26} {'median':>9} {'worst':>9}  target {TARGET_MS:.0f} ms")
    with httpx.Client(base_url=f"http://127.0.0.1:{port[0]}") as client:
        for name, path in pages.items():
            client.get(path).raise_for_status()  # warm-up: template compile, connection pool
            times = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                client.get(path).raise_for_status()
                times.append((time.perf_counter() - began) * 1000)
            median, worst = statistics.median(times), max(times)
            verdict = "ok" if worst <= TARGET_MS else "OVER"
            print(f"{name:<26} {median:>7.1f}ms {worst:>7.1f}ms  {verdict}")
    if args.database:
        from sqlalchemy import text

        schema = store.engine.url.query["options"].split("=", 1)[1]
        store.engine.dispose()
        with _plain_engine(args.database).begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    return 0


def _plain_engine(url: str):  # type: ignore[no-untyped-def]
    from watcher.store.database import open_engine

    return open_engine(url)


if __name__ == "__main__":
    sys.exit(main())
