"""Summary templates are bounded: what they build on the way, what they render, what `check` takes.

`summary: "{{ model * 20000000 }}"` passed `watcher check` and then took 2 GB at render time and
stored a 280 MB summary. Memory is measured with tracemalloc (an allocation count, not a time).
"""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pytest

from watcher.commands.check import run_check
from watcher.rules.template_limits import MAX_BUILT, MAX_SUMMARY
from watcher.rules.templates import render_summary, template_problems

CONTEXT = {
    "model": "fraud-detector",
    "value": 0.31234,
    "threshold": 0.25,
    "samples": 123456789.0,
    "labels": {f"label{i}": str(i) for i in range(200)},
    "rule": "p99",
    "signal": "latency",
    "severity": "critical",
}
HUGE = [
    "{{ model * 20000000 }}",
    "{{ 20000000 * model }}",
    "{{ [model] * 20000000 }}",
    "{{ model * (samples|int) }}",
    "{{ model|center(1000000000) }}",
    "{{ model.rjust(10**9) }}",
    "{{ model.zfill(10**9) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '%*d' % (999999999, 1) }}",
    "{{ '%0999999999d'|format(1) }}",
    "{{ '{:>999999999}'.format(model) }}",
    "{{ '{:>{w}}'.format(model, w=999999999) }}",
    "{{ 7 ** 99999999 }}",
    "{{ [1]|batch(999999999, 'x')|list }}",
    "{{ [1]|slice(999999999)|list }}",
    "{% for a in labels %}{% for b in labels %}{% for c in labels %}{{ model }}"
    "{% endfor %}{% endfor %}{% endfor %}",
    "{% set x = model ~ model ~ model ~ model %}{% set y = x ~ x ~ x ~ x %}{{ y * 1000 }}",
]


def _render_measured(template: str) -> tuple[str, int]:
    tracemalloc.start()
    try:
        rendered = render_summary(template, **CONTEXT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return rendered, peak


@pytest.mark.parametrize("template", HUGE)
def test_a_template_that_would_build_a_huge_value_takes_no_memory_and_renders_short(template: str) -> None:
    rendered, peak = _render_measured(template)
    assert len(rendered) <= MAX_SUMMARY
    assert peak < 5_000_000  # bytes; the unbounded sandbox took gigabytes


def test_the_refusal_says_why() -> None:
    rendered = render_summary("{{ model * 20000000 }}", **CONTEXT)
    assert rendered == (
        "{{ model * 20000000 }} [summary could not be rendered: "
        "'*' would build 280000000 characters or items]"
    )


def test_a_long_rendering_is_cut_at_the_maximum_length() -> None:
    rendered = render_summary("{% for k in labels %}{{ model }} {% endfor %}", **CONTEXT)
    assert len(rendered) == MAX_SUMMARY and rendered.endswith("…")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("p99 latency {{ value | round(3) }}s is over {{ threshold }}s", "p99 latency 0.312s is over 0.25s"),
        ("{{ '%d'|format(samples) }} samples", "123456789 samples"),  # big values are fine to format
        ("{{ '{:.2f}'.format(value) }}", "0.31"),
        ("{{ '%5.1f' % value }}", "  0.3"),
        ("{{ '-' * 20 }}", "-" * 20),
        ("{{ model|upper }} {{ labels.label3 }}", "FRAUD-DETECTOR 3"),
        ("{{ 2 ** 10 }}", "1024"),
        ("{{ model|replace('-', ' ') }}", "fraud detector"),
    ],
)
def test_ordinary_summaries_render_as_before(template: str, expected: str) -> None:
    assert render_summary(template, **CONTEXT) == expected
    assert template_problems(template) == []


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{{ model * 20000000 }}", "multiplies by 20000000"),
        ("{{ 3 * model * 20000 }}", "multiplies by 20000"),
        ("{{ 2 ** 100000 }}", "raises to the power of 100000"),
        ("{{ model|center(1000000000) }}", "width of 1000000000"),
        ("{{ '%0999999999d' % value }}", "format width 999999999"),
        ("{{ '{:>999999999}'.format(model) }}", "format width 999999999"),
        ("x" * (MAX_SUMMARY + 1), f"template text is {MAX_SUMMARY + 1} characters"),
    ],
)
def test_check_refuses_a_template_that_can_never_fit(template: str, words: str) -> None:
    [problem] = template_problems(template)
    assert words in problem.message
    assert f"at most {MAX_SUMMARY} characters" in problem.message


def test_watcher_check_reports_the_summary_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "watcher.yaml").write_text(f"database: sqlite:///{tmp_path / 'w.db'}\nrules: rules/\n")
    (tmp_path / "rules" / "fraud.yaml").write_text(
        "model: fraud\nrules:\n  - name: errors\n    signal: error_rate\n"
        '    sql: {url: "sqlite:///x.db", query: "SELECT 1 AS value"}\n    above: 0.5\n'
        '    summary: "{{ model * 20000000 }}"\n'
    )
    out, err = io.StringIO(), io.StringIO()
    assert run_check(tmp_path / "watcher.yaml", None, out=out, err=err, env={}) == 1
    assert "fraud.yaml:7:14: summary: template multiplies by 20000000" in out.getvalue()


def test_the_limits_leave_room_for_any_summary() -> None:
    assert MAX_BUILT > MAX_SUMMARY
