"""http.external_url: the pages' address in Slack links; `watcher check` wants an absolute http(s) URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.cli import main
from watcher.rules.config import load_config


def write_config(tmp_path: Path, http: str) -> Path:
    (tmp_path / "rules").mkdir()
    path = tmp_path / "watcher.yaml"
    path.write_text(f"database: sqlite:///w.db\nrules: rules/\nhttp:\n{http}")
    return path


def test_external_url_is_where_links_point_and_loses_its_trailing_slash(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "  listen: 127.0.0.1:9460\n  external_url: https://watcher.example.com/ops/\n"
    )
    config = load_config(path, {}).config
    assert config is not None
    assert config.http.base_url == "https://watcher.example.com/ops"


def test_without_external_url_links_use_the_listen_address(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "  listen: 127.0.0.1:9555\n"), {}).config
    assert config is not None and config.http.base_url == "http://127.0.0.1:9555"


@pytest.mark.parametrize(
    "url", ["watcher.example.com", "/incidents", "ftp://watcher.example.com", "https://"]
)
def test_check_reports_an_external_url_that_is_not_absolute_http_at_its_line(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, f"  external_url: '{url}'\n")
    assert main(["check", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:4:17:" in out and "absolute http:// or https:// URL" in out
