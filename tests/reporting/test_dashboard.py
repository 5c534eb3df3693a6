"""The report and the offline dashboard, opened in headless Debian Chromium driven over the DevTools protocol.

Checked in the browser: every chart renders (plotly's .js-plotly-plot with its .main-svg), hover shows details,
the run selector redraws the run's figures, nothing is logged as an error, and the page makes no network request
at all (every request the page issues is recorded through Network.requestWillBeSent).
Needs `apt-get install -y chromium` (CI installs it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlperf_assets.reporting import build_report
from support.browser import CHROMIUM, RENDERED, Browser, assert_offline_and_clean, needs_chromium
from support.reportdata import full_store, shared_base, submission_store

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium not installed: apt-get install -y chromium")
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return shared_base(tmp_path_factory)


@pytest.fixture(scope="module")
def full_report(base: Path, mlperf_logs_dir: Path, stories_dir: Path, tmp_path_factory):
    return build_report(full_store(base, mlperf_logs_dir, stories_dir), tmp_path_factory.mktemp("report-full"))


@pytest.fixture(scope="module")
def submission_report(base: Path, mlperf_logs_dir: Path, tmp_path_factory):
    return build_report(submission_store(base, mlperf_logs_dir), tmp_path_factory.mktemp("report-submissions"))




@needs_chromium
def test_every_chart_renders_offline(browser: Browser, full_report) -> None:
    assert set(full_report.charts_drawn) == {"throughput_over_time", "server_ttft_tpot", "latency_percentiles",
                                             "latency_distribution", "throughput_timeline", "rouge_vs_target"}
    browser.open(full_report.dashboard_path)
    assert browser.wait_for(RENDERED) == str(len(full_report.charts_drawn))
    counts = browser.evaluate("""Array.from(document.querySelectorAll('.chart[data-chart]')).map(d =>
        [d.id, d.classList.contains('js-plotly-plot'), d.querySelectorAll('.main-svg').length,
         d.querySelectorAll('.trace, .table').length])""")
    assert sorted(c[0] for c in counts) == sorted(f"chart-{k}" for k in full_report.charts_drawn)
    for chart_id, is_plot, svgs, traces in counts:
        assert is_plot and svgs >= 1 and traces >= 1, (chart_id, is_plot, svgs, traces)
    # hover details: ask plotly to hover the first point of the throughput chart
    hover = browser.evaluate("""(() => { const d = document.getElementById('chart-throughput_over_time');
        Plotly.Fx.hover(d, [{curveNumber: 0, pointNumber: 0}]);
        return Array.from(d.querySelectorAll('.hoverlayer .hovertext')).map(e => e.textContent).join(' '); })()""")
    assert "tokens/s" in hover and "run " in hover
    assert_offline_and_clean(browser, full_report.dashboard_path)


@needs_chromium
def test_run_selector_shows_the_chosen_run(browser: Browser, full_report) -> None:
    browser.open(full_report.dashboard_path)
    browser.wait_for(RENDERED)
    choose = """(() => { const s = document.getElementById('run-select');
        const o = Array.from(s.options).find(o => o.text.includes(%s) && o.text.endsWith('performance'));
        s.value = o.value; s.dispatchEvent(new Event('change')); return o.text; })()"""
    visible = """Array.from(document.querySelectorAll('.run-chart')).filter(d => d.style.display !== 'none'
        && d.classList.contains('js-plotly-plot') && d.querySelector('.main-svg')).map(d => d.id).sort()"""
    label = browser.evaluate(choose % json.dumps("node-a · Server"))
    assert "harness ceiling" in label
    shown = browser.wait_for(f"(() => {{ const v = {visible}; return v.length === 3 ? v : null; }})()")
    assert shown == ["run-histogram", "run-percentiles", "run-progress"]
    details = browser.evaluate("document.getElementById('run-details').textContent")
    assert "node-a-Server-night-" in details and "harness ceiling" in details
    limits = browser.evaluate("""Array.from(document.querySelectorAll('#run-percentiles .annotation-text'))
        .map(e => e.textContent)""")
    assert any("2000 ms" in t for t in limits) and any("100 ms" in t for t in limits)
    # a submission run: percentiles only, no harness figures
    browser.evaluate(choose % json.dumps("Intel-1-node-2S-GNR_128C · Server"))
    shown = browser.wait_for(f"(() => {{ const v = {visible}; return v.length === 1 ? v : null; }})()")
    assert shown == ["run-percentiles"]
    assert "1,740.6 ms" in browser.evaluate("document.getElementById('run-details').textContent")
    assert_offline_and_clean(browser, full_report.dashboard_path)


@needs_chromium
def test_submission_only_dashboard_and_report(browser: Browser, submission_report) -> None:
    result = submission_report
    assert len(result.charts_drawn) >= 4
    # no systems JSON beside the flattened logs: the accelerator is unknown, the published view says so
    assert set(result.charts_missing) == {"latency_distribution", "throughput_timeline", "published_context"}
    browser.open(result.dashboard_path)
    assert browser.wait_for(RENDERED) == str(len(result.charts_drawn))
    missing = browser.evaluate("document.getElementById('missing').textContent")
    assert "samples.jsonl" in missing and "progress.jsonl" in missing
    assert_offline_and_clean(browser, result.dashboard_path)

    text = result.report_path.read_text()
    images = [line for line in text.splitlines() if line.startswith("![")]
    assert len(images) == len(result.charts_drawn) >= 4
    for key in result.charts_drawn:
        png = result.out_dir / f"{key}.png"
        assert f"]({key}.png)" in text and png.read_bytes()[:4] == b"\x89PNG"
    assert "needs our harness's data" in text
    left_out = "Left out: 12 published runs: accelerator unknown: not in a results tree"
    assert "## Your runs vs published results" in text and left_out in text
    published = browser.evaluate("document.getElementById('published').textContent")
    assert "Not drawn" in published and left_out in published
    # summary table: the Dell Interactive run, VALID, accuracy 38.4887 etc. above the llama3.1-8b 99% targets
    row = next(line for line in text.splitlines() if line.startswith("| Dell-XE9680L_B200_SXM_180GBx8_TRT |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "Interactive" and "VALID" in cells and "PASS" in cells and "102,906.8" in cells
    inline = result.markdown_with_inline_images()
    assert inline.count("data:image/png;base64,") == len(result.charts_drawn)


@needs_chromium
def test_user_text_is_escaped(browser: Browser, tmp_path: Path) -> None:
    from mlperf_assets.charts import node_comparison_table
    from mlperf_assets.reporting.dashboard import RunView, build_dashboard_html

    evil = '<img src="http://127.0.0.1:9/x.png" onerror="console.error(1)"></script><script>console.error(2)</script>'
    summary = pd.DataFrame([dict(run_id="r1", node=evil, scenario="Offline", benchmark="llama3.1-8b", mode="performance",
                                 backend="vllm", started_at=pd.Timestamp("2026-11-01"), result_validity="VALID",
                                 tokens_per_second=10.0)])
    chart = node_comparison_table(summary)
    page = build_dashboard_html(title=evil, subtitle=evil, summary=chart.table, charts=[chart], regressions=[evil],
                                runs=[RunView(run_id="r1", label=evil, color="#000", details=[("node", evil)],
                                              percentiles_ms={})])
    path = tmp_path / "dashboard.html"
    path.write_text(page)
    browser.open(path)
    assert browser.wait_for(RENDERED) == "1"
    assert browser.evaluate("document.querySelectorAll('img').length") == 0
    assert evil in browser.evaluate("document.getElementById('summary-table').textContent")
    assert evil in browser.evaluate("document.getElementById('run-details').textContent")
    assert_offline_and_clean(browser, path)


def test_stale_pictures_are_removed_and_files_are_whole(base: Path, mlperf_logs_dir: Path, stories_dir: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "report"
    (out / "node_comparison.png").parent.mkdir()
    (out / "node_comparison.png").write_bytes(b"a picture an earlier version drew")
    first = build_report(full_store(base, mlperf_logs_dir, stories_dir), out)
    assert (out / "latency_distribution.png").is_file() and not (out / "node_comparison.png").exists()
    second = build_report(submission_store(base, mlperf_logs_dir), out)
    assert not (out / "latency_distribution.png").exists() and not (out / "throughput_timeline.png").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{k}.png" for k in second.charts_drawn] + ["report.md", "dashboard.html", ".png-cache"])  # no temp files
    # the PNG cache holds this report's pictures only, each named by what it shows
    cached = sorted(p.name for p in (out / ".png-cache").iterdir())
    assert len(cached) == len(second.charts_drawn) and all(n.endswith(".png") for n in cached)
    assert first.n_runs > second.n_runs
    assert oct((out / "report.md").stat().st_mode & 0o777) != oct(0o600)


def test_pictures_of_unchanged_data_are_reused(base: Path, mlperf_logs_dir: Path, stories_dir: Path,
                                               tmp_path: Path) -> None:
    db = submission_store(base, mlperf_logs_dir)
    first = build_report(db, tmp_path / "r", render_workers=2)
    assert first.pngs_reused == []
    pictures = {k: p.read_bytes() for k, p in first.png_paths.items()}
    again = build_report(db, tmp_path / "r", render_workers=1)
    assert sorted(again.pngs_reused) == sorted(first.charts_drawn)  # nothing changed: nothing drawn again
    assert {k: p.read_bytes() for k, p in again.png_paths.items()} == pictures
    # drawn in-process or by workers, a picture is the same file
    serial = build_report(db, tmp_path / "serial", render_workers=1)
    assert {k: p.read_bytes() for k, p in serial.png_paths.items()} == pictures
    # the same folder after the harness runs joined the store: the charts they change are drawn again, the ROUGE
    # chart (they are performance runs: its data is unchanged) is reused
    changed = build_report(full_store(base, mlperf_logs_dir, stories_dir), tmp_path / "r")
    assert "rouge_vs_target" in changed.pngs_reused
    assert not {"throughput_over_time", "server_ttft_tpot", "latency_distribution"} & set(changed.pngs_reused)
    assert changed.png_paths["throughput_over_time"].read_bytes() != pictures["throughput_over_time"]
    # per-sample and progress figures too are the same data again: every picture reused
    same = build_report(full_store(base, mlperf_logs_dir, stories_dir), tmp_path / "r")
    assert sorted(same.pngs_reused) == sorted(same.charts_drawn) and "latency_distribution" in same.pngs_reused


def cli(*args: str) -> subprocess.CompletedProcess:
    command = Path(sys.executable).with_name("mlperf-dagster")  # the installed console script
    return subprocess.run([str(command), "report", *args], capture_output=True,
                          text=True, cwd=PROJECT, timeout=300, env={**os.environ, "MLPERF_DAGSTER_CONFIG": ""})


@pytest.mark.slow
def test_cli(base: Path, mlperf_logs_dir: Path, tmp_path: Path) -> None:
    db = submission_store(base, mlperf_logs_dir)
    r = cli("--db", str(db), "--out", str(tmp_path / "r"), "--regression-threshold", "5")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r" / "report.md").is_file() and (tmp_path / "r" / "dashboard.html").is_file()
    assert "not drawn: latency_distribution" in r.stdout and "threshold 5%" in (tmp_path / "r" / "report.md").read_text()

    r = cli("--db", str(tmp_path / "nope.duckdb"), "--out", str(tmp_path / "r2"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nope.duckdb: no such results store" in r.stderr
    assert not (tmp_path / "r2").exists()

    (tmp_path / "file").write_text("x")
    r = cli("--db", str(db), "--out", str(tmp_path / "file"))
    assert r.returncode == 2 and "is a file, not a folder" in r.stderr and r.stderr.count("\n") == 1

    r = cli("--db", str(db), "--regression-threshold", "-3")
    assert r.returncode == 2 and "--regression-threshold" in r.stderr
