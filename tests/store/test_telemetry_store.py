"""GPU telemetry (issue 12) in the results store: telemetry.jsonl rows in `telemetry`, the manifest's summary in
`run_telemetry` and `run_summary`; a cut-short or malformed file never costs the run its LoadGen results; the ingest
stays one transaction. Real harness run folders (real LoadGen, tests/support/reportdata.py) with telemetry files written as
the harness's sampler writes them, real DuckDB files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from mlperf_assets import store
from support.reportdata import (
    CPU_REASON,
    GPU_TELEMETRY_SUMMARY,
    TELEMETRY_TEST_START_S,
    TELEMETRY_TICKS,
    add_cpu_telemetry,
    add_gpu_telemetry,
    gpu_telemetry_lines,
    harness_runs,
    shared_base,
    write_telemetry,
)
from support.storestate import db_state


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return shared_base(tmp_path_factory)


@pytest.fixture(scope="module")
def real_runs(base: Path, stories_dir: Path) -> dict[tuple[str, str], Path]:
    return harness_runs(base, stories_dir)


@pytest.fixture()
def gpu_run(real_runs, tmp_path: Path) -> Path:
    """A copy of the real Offline harness run (node-b) with a two-GPU telemetry.jsonl and its manifest summary."""
    folder = tmp_path / "gpu-run"
    shutil.copytree(real_runs[("night-1", "node-b")], folder)
    add_gpu_telemetry(folder)
    return folder


@pytest.fixture()
def cpu_run(real_runs, tmp_path: Path) -> Path:
    folder = tmp_path / "cpu-run"
    shutil.copytree(real_runs[("night-1", "node-a")], folder)
    add_cpu_telemetry(folder)
    return folder


def _final_output_tokens(folder: Path) -> int:
    """Read from the run's own progress.jsonl, not through the code under test."""
    lines = [json.loads(ln) for ln in (folder / "progress.jsonl").read_text().splitlines() if ln.strip()]
    finals = [ln for ln in lines if ln.get("final") is True]
    assert finals, "the real harness run ends its progress.jsonl with a final line"
    return int(finals[-1]["output_tokens"])


def _run_id(folder: Path) -> str:
    return json.loads((folder / "run_manifest.json").read_text())["run_id"] + "-performance"


def _one(db: Path, sql: str, params=None):
    return store.query_rows(db, sql, params)[1]


def test_a_two_gpu_run_lands_in_telemetry_and_run_summary(gpu_run: Path, tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    report = store.ingest_path(db, gpu_run)
    assert report.skipped == []
    rid = _run_id(gpu_run)
    assert [r.run_id for r in report] == [rid]
    # 10 ticks x 2 GPUs + 10 engine rows; header and markers are not rows
    assert _one(db, "SELECT source, count(*) FROM telemetry WHERE run_id = ? GROUP BY source ORDER BY source",
                [rid]) == [("engine", TELEMETRY_TICKS), ("gpu", 2 * TELEMETRY_TICKS)]
    # t_test_s: seconds since the test_start marker (t_s 1.0); the first tick (0.5) is before the test
    assert _one(db, "SELECT t_s, t_test_s FROM telemetry WHERE run_id = ? AND gpu = 1 ORDER BY t_s LIMIT 3",
                [rid]) == [(0.5, -0.5), (1.5, 0.5), (2.5, 1.5)]
    assert _one(db, "SELECT t_test_s FROM telemetry WHERE source = 'engine' ORDER BY t_s DESC LIMIT 1") == [(8.502,)]
    # the wide row: GPU columns on GPU rows, engine columns NULL there, and the other way round
    assert _one(db, "SELECT gpu_util_pct, power_w, mem_used_mib, sm_clock_mhz, temperature_c, kv_cache_usage_pct "
                    "FROM telemetry WHERE gpu = 1 AND t_s = 3.5") == [(51.0 + 15, 300.0 + 30 + 50, 4001.0, 1980, 63.0,
                                                                       None)]
    assert _one(db, "SELECT gpu, power_w, kv_cache_usage_pct, requests_running, requests_waiting, "
                    "generation_tokens_per_s FROM telemetry WHERE source = 'engine' AND t_s = 4.502") == [
        (None, None, 40.0, 104, 16, 4000.0)]
    # run_summary: energy / output tokens of the timed window, by hand
    tokens = _final_output_tokens(gpu_run)
    cols, rows = store.query_rows(db, "SELECT energy_per_output_token_j, mean_gpu_util_pct, mean_gpu_power_w, "
                                      "energy_j, peak_kv_cache_usage_pct FROM run_summary WHERE run_id = ?", [rid])
    assert rows == [(pytest.approx(9876.5 / tokens, rel=1e-12), 71.5, 612.5, 9876.5, 80.0)]
    assert cols == ["energy_per_output_token_j", "mean_gpu_util_pct", "mean_gpu_power_w", "energy_j",
                    "peak_kv_cache_usage_pct"]
    # the new columns come last, after every earlier one, in this order
    all_cols, _ = store.query_rows(db, "SELECT * FROM run_summary LIMIT 0")
    assert all_cols[-5:] == cols and all_cols[-6] == "system_note"
    assert _one(db, "SELECT nvml, gpu_count, test_start_s, test_end_s, window_output_tokens, stored_rows, note "
                    "FROM run_telemetry") == [(True, 2, TELEMETRY_TEST_START_S, 9.0, tokens, 30, None)]


def test_reingest_replaces_the_rows(gpu_run: Path, tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    store.ingest_path(db, gpu_run)
    store.ingest_path(db, gpu_run)
    assert _one(db, "SELECT count(*), count(DISTINCT run_id) FROM telemetry") == [(30, 1)]
    assert _one(db, "SELECT count(*) FROM run_telemetry") == [(1,)]
    # the file changed (one GPU now): the run keeps its id, its telemetry is the new file's
    write_telemetry(gpu_run, gpu_telemetry_lines(gpus=1), {**GPU_TELEMETRY_SUMMARY, "energy_j": 100.0})
    store.ingest_path(db, gpu_run)
    assert _one(db, "SELECT count(*), max(gpu) FROM telemetry") == [(20, 0)]
    assert _one(db, "SELECT energy_j FROM run_summary WHERE run_id = ?", [_run_id(gpu_run)]) == [(100.0,)]


def test_a_cut_short_last_line_is_left_out_with_a_note(gpu_run: Path, tmp_path: Path) -> None:
    write_telemetry(gpu_run, gpu_telemetry_lines(), GPU_TELEMETRY_SUMMARY,
                    tail='{"t_s": 10.5, "time": "2026-11-30T02:00:10.500Z", "source": "gpu", "gpu": 0, "gpu_ut')
    db = tmp_path / "t.duckdb"
    report = store.ingest_path(db, gpu_run)
    assert report.skipped == []
    assert _one(db, "SELECT count(*), max(t_s) FROM telemetry") == [(30, 9.502)]
    (notes,) = _one(db, "SELECT parse_notes FROM runs")[0]
    assert "telemetry.jsonl: the last line (34) is cut short" in notes


@pytest.mark.parametrize("bad, line, says", [
    ('{"t_s": 3.0, "source": "gpu", "gpu": 0, "gpu_util_pct": "high"}', 4, "'gpu_util_pct' is not a number"),
    ('{"t_s": 3.0, "source": "gpu", "gpu": 0, "power_w": NaN}', 4, "not a JSON line"),
    ('{"t_s": 3.0, "source": "gpu", "gpu": 0, "power_w": Infinity}', 4, "not a JSON line"),
    ('{"t_s": 3.0, "source": "gpu", "gpu": 0, "gpu_util_pct": 250.0}', 4, "'gpu_util_pct' = 250.0 is outside 0..100"),
    ('{"t_s": -4, "source": "engine"}', 4, "'t_s' = -4 is outside"),
    ('{"source": "engine"}', 4, "'t_s' must be seconds"),
    ('{"t_s": 3.0, "source": "gpu", "gpu": 1.0}', 4, "'gpu' must be a GPU index"),
    ('{"t_s": 3.0, "source": "gpu", "gpu": 0, "energy_j": 1e999}', 4, "'energy_j' = inf is outside"),
    ('{"t_s": 3.0, "source": "gpu", "gpu": 0, "power_w": true}', 4, "'power_w' is not a number (True)"),
    ('{"t_s": 3.0, "source": "fan", "rpm": 3000}', 4, "source 'fan'"),
    ('{"t_s": 3.0, "source": "gpu", "gpu": "0"}', 4, "'gpu' is not a number ('0')"),
    ('{"t_s": 3.0, "source": "engine", "requests_running": 1e30}', 4, "'requests_running' = 1e+30 is outside"),
    ("GPU 0: 97 %", 4, "not a JSON line"),
    ("[1, 2]", 4, "expected a JSON object"),
])
def test_a_malformed_file_is_left_out_and_the_run_is_stored(gpu_run: Path, tmp_path: Path, bad: str, line: int,
                                                            says: str) -> None:
    lines = gpu_telemetry_lines()
    text = "".join(json.dumps(r) + "\n" for r in lines[:3]) + bad + "\n" + "".join(
        json.dumps(r) + "\n" for r in lines[3:])
    (gpu_run / "telemetry.jsonl").write_text(text)
    db = tmp_path / "t.duckdb"
    report = store.ingest_path(db, gpu_run)
    path = str(gpu_run / "telemetry.jsonl")
    assert [(s.path, s.reason.split(":")[0]) for s in report.skipped] == [(path, f"line {line}")]
    assert says in report.skipped[0].reason and "\n" not in report.skipped[0].reason
    # the LoadGen results are stored; the file's rows are not (none of them: a file that lies once is not trusted)
    assert _one(db, "SELECT count(*) FROM runs WHERE tokens_per_second > 0") == [(1,)]
    assert _one(db, "SELECT count(*) FROM telemetry") == [(0,)]
    (notes,) = _one(db, "SELECT parse_notes FROM runs")[0]
    assert f"telemetry.jsonl left out: {path}:{line}: " in notes
    # the manifest's summary is still the harness's own: kept
    assert _one(db, "SELECT energy_j, stored_rows FROM run_telemetry") == [(9876.5, 0)]


def test_a_cpu_node_and_a_run_without_telemetry(cpu_run: Path, real_runs, tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    store.ingest_path(db, cpu_run)
    old = tmp_path / "old-run"  # as made before telemetry: no file, no manifest key
    shutil.copytree(real_runs[("night-2", "node-a")], old)
    (old / "telemetry.jsonl").unlink(missing_ok=True)
    manifest = json.loads((old / "run_manifest.json").read_text())
    manifest.pop("telemetry", None)
    (old / "run_manifest.json").write_text(json.dumps(manifest))
    store.ingest_path(db, old)
    assert _one(db, "SELECT count(*) FROM runs") == [(2,)]
    assert _one(db, "SELECT count(*) FROM telemetry") == [(0,)]
    assert _one(db, "SELECT nvml, reason, window_s, test_end_s - test_start_s FROM run_telemetry") == [
        (False, CPU_REASON, 1.2, pytest.approx(1.2))]
    rows = _one(db, "SELECT energy_per_output_token_j, mean_gpu_util_pct, mean_gpu_power_w, energy_j, "
                    "peak_kv_cache_usage_pct FROM run_summary")
    assert rows == [(None,) * 5] * 2


def test_telemetry_is_part_of_the_one_transaction(gpu_run: Path, real_runs, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while the telemetry rows are written leaves the database byte-identical (nothing of the run)."""
    db = tmp_path / "t.duckdb"
    store.ingest_path(db, real_runs[("night-2", "node-a")])
    before = db_state(db)
    real = store._arrow_insert

    def failing(conn, table, columns):
        if table == "telemetry":
            raise duckdb.IOException('IO Error: Could not write file "t.duckdb.wal": No space left on device')
        return real(conn, table, columns)

    monkeypatch.setattr(store, "_arrow_insert", failing)
    with pytest.raises(store.StoreError) as err:
        store.ingest_path(db, gpu_run)
    assert "no space left on device" in str(err.value) and "nothing was stored" in str(err.value)
    assert db_state(db) == before


@pytest.mark.slow
def test_a_full_disk_during_a_telemetry_ingest_changes_nothing(gpu_run: Path, real_runs, tmp_path: Path) -> None:
    """A real size-limited disk (tmpfs, else RLIMIT_FSIZE): a run whose telemetry alone outgrows it is refused in
    one line and the database file is byte-identical."""
    from test_ingest_hardening import _ingest_process, _small_disk

    # 40,000 ticks x 8 GPUs of incompressible values: far more than the 4 MB disk holds
    import random

    rng = random.Random(12)
    rows = [{"event": "header", "t_s": 0.0, "interval_s": 0.05, "nvml": True, "gpus": []},
            {"event": "test_start", "t_s": 0.01}]
    for k in range(40_000):
        for g in range(8):
            rows.append({"t_s": 0.05 * k + 0.02, "source": "gpu", "gpu": g, "gpu_util_pct": rng.random() * 100,
                         "power_w": rng.random() * 700, "energy_j": rng.random() * 1e9,
                         "mem_used_mib": rng.random() * 1e5, "temperature_c": rng.random() * 90})
    write_telemetry(gpu_run, rows, GPU_TELEMETRY_SUMMARY)
    with _small_disk(tmp_path / "small", "4m") as (disk, how, preexec):
        db = disk / "t.duckdb"
        seed = _ingest_process(real_runs[("night-2", "node-a")], db, preexec)
        assert seed.returncode == 0, seed.stderr
        before = db_state(db)
        out = _ingest_process(gpu_run, db, preexec)
        print(f"disk-full reproduction through {how}: {out.stderr.strip()}")
        assert out.returncode == 2, out.stdout + out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
        assert "nothing was stored" in out.stderr
        assert db_state(db) == before


def test_an_hour_on_eight_gpus_is_stored_once_and_replaced_on_reingest(gpu_run: Path, tmp_path: Path) -> None:
    """About what a one-hour run on an 8-GPU node samples at 1 s (8 x 1,200 GPU rows + 1,200 engine rows): every row
    is stored, a re-ingest replaces them instead of adding, and a run whose file is gone keeps none. (Its ingest
    cost is measured in benchmarks/ingest_and_query.py, not timed here.)"""
    lines = [gpu_telemetry_lines()[0], {"event": "test_start", "t_s": 1.0}]
    for k in range(1200):
        for g in range(8):
            lines.append({"t_s": 1.0 * k + 0.5, "source": "gpu", "gpu": g, "gpu_util_pct": 90.0 + g, "mem_util_pct": 40.0,
                          "mem_used_mib": 120345.0, "power_w": 612.3, "energy_j": 1e6 + k, "sm_clock_mhz": 1980,
                          "mem_clock_mhz": 3201, "temperature_c": 61})
        lines.append({"t_s": 1.0 * k + 0.51, "source": "engine", "kv_cache_usage_pct": 43.2, "requests_running": 256,
                      "requests_waiting": 12, "prompt_tokens_per_s": 31000.0, "generation_tokens_per_s": 7900.0})
    write_telemetry(gpu_run, lines, GPU_TELEMETRY_SUMMARY)
    db = tmp_path / "t.duckdb"
    per_source = "SELECT source, count(*), count(DISTINCT gpu), round(avg(gpu_util_pct), 2) FROM telemetry GROUP BY 1 ORDER BY 1"
    store.ingest_path(db, gpu_run)  # creates and migrates
    expected = [("engine", 1200, 0, None), ("gpu", 9600, 8, 93.5)]
    assert _one(db, per_source) == expected
    store.ingest_path(db, gpu_run)
    assert _one(db, per_source) == expected  # replaced, not doubled
    (gpu_run / "telemetry.jsonl").unlink()
    store.ingest_path(db, gpu_run)
    assert _one(db, "SELECT count(*) FROM telemetry") == [(0,)]  # the file is gone: so are its rows


# ------------------------------------------------------------------------------------------ report and dashboard


@pytest.fixture()
def telemetry_report(gpu_run: Path, cpu_run: Path, tmp_path: Path):
    from mlperf_assets.reporting import build_report

    db = tmp_path / "report.duckdb"
    store.ingest_path(db, gpu_run)
    store.ingest_path(db, cpu_run)
    return build_report(db, tmp_path / "report"), gpu_run, cpu_run


def _dashboard_runs(page: Path) -> list[dict]:
    text = page.read_text()
    start = text.index('<script type="application/json" id="dashboard-data">') + len(
        '<script type="application/json" id="dashboard-data">')
    return json.loads(text[start:text.index("</script>", start)])["runs"]


def test_report_draws_the_gpu_run_and_names_the_cpu_run(telemetry_report) -> None:
    result, gpu_run, cpu_run = telemetry_report
    text = result.report_path.read_text()
    assert "## GPU telemetry over the run" in text
    images = [ln for ln in text.splitlines() if ln.startswith("![Over the run: ")]
    assert len(images) == 1 and "node-b" in images[0]  # the GPU run, and no empty picture for the CPU run
    name = images[0].split("](")[1].rstrip(")")
    assert (result.out_dir / name).read_bytes()[:4] == b"\x89PNG" and name.startswith("run_telemetry_")
    assert f"No GPU telemetry was recorded for this run (CPU node: {CPU_REASON})." in text
    cpu_line = next(ln for ln in text.splitlines() if "No GPU telemetry was recorded" in ln)
    assert "node-a" in cpu_line and "node-b" not in cpu_line
    # the run table: J/token and mean GPU utilisation for the GPU run, "–" for the CPU run
    header = next(ln for ln in text.splitlines() if ln.startswith("| node |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert "J/token" in cols and "GPU util (%)" in cols
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")]
            for ln in text.splitlines() if ln.startswith("| node-")}
    tokens = _final_output_tokens(gpu_run)
    assert rows["node-b"][cols.index("J/token")] == f"{9876.5 / tokens:,.4f}"
    assert rows["node-b"][cols.index("GPU util (%)")] == "71.5"
    assert rows["node-a"][cols.index("J/token")] == "–" and rows["node-a"][cols.index("GPU util (%)")] == "–"


def test_dashboard_figure_of_the_gpu_run(telemetry_report) -> None:
    result, gpu_run, cpu_run = telemetry_report
    runs = {r["id"]: r for r in _dashboard_runs(result.dashboard_path)}
    gpu = runs[_run_id(gpu_run)]
    figure = gpu["figures"]["telemetry"]
    names = [t["name"] for t in figure["data"]]
    # utilisation and power per GPU, then KV cache, running/waiting requests, generation tokens/s
    assert names == ["GPU 0", "GPU 1", "GPU 0", "GPU 1", "KV cache", "running", "waiting", "generation tokens/s"]
    util1 = figure["data"][1]
    assert util1["x"] == [-0.5 + k for k in range(TELEMETRY_TICKS)]  # seconds since test_start
    assert util1["y"] == [51.0 + 5 * k for k in range(TELEMETRY_TICKS)]
    power0 = figure["data"][2]
    assert power0["y"] == [300.0 + 10 * k for k in range(TELEMETRY_TICKS)]
    assert figure["data"][6]["y"] == [20.0 - k for k in range(TELEMETRY_TICKS)]
    windows = [(s["x0"], s["x1"]) for s in figure["layout"]["shapes"] if s["type"] == "rect"]
    assert windows == [(0.0, 8.0)] * 5  # LoadGen's test (t_s 1.0 to 9.0) shaded in every panel
    details = dict(gpu["details"])
    assert details["mean GPU util / power"] == "71.5 % / 612 W"
    assert "telemetry" not in runs[_run_id(cpu_run)]["figures"]
    assert f"No GPU telemetry was recorded for this run (CPU node: {CPU_REASON})." in runs[_run_id(cpu_run)]["notes"]


def test_dashboard_renders_the_telemetry_chart(telemetry_report) -> None:
    from support.browser import CHROMIUM, RENDERED, Browser, assert_offline_and_clean

    if CHROMIUM is None:
        pytest.skip("Chromium not installed: apt-get install -y chromium")
    result, gpu_run, cpu_run = telemetry_report
    browser = Browser()
    try:
        browser.open(result.dashboard_path)
        browser.wait_for(RENDERED)
        choose = """(() => { const s = document.getElementById('run-select');
            const o = Array.from(s.options).find(o => o.text.includes(%s));
            s.value = o.value; s.dispatchEvent(new Event('change')); return o.text; })()"""
        shown = """(() => { const d = document.getElementById('run-telemetry');
            return d.style.display !== 'none' && d.querySelector('.main-svg') ? d.querySelectorAll('.scatterlayer .trace').length
            : 0; })()"""
        browser.evaluate(choose % json.dumps("node-b"))
        assert browser.wait_for(shown) == 8
        titles = browser.evaluate("Array.from(document.querySelectorAll('#run-telemetry .annotation-text'))"
                                  ".map(e => e.textContent)")
        assert {"GPU utilisation", "GPU power", "KV-cache use", "Requests in the engine"} <= set(titles)
        assert browser.evaluate("document.querySelectorAll('#run-telemetry .shapelayer path').length") >= 5
        browser.evaluate(choose % json.dumps("node-a"))
        browser.wait_for("document.getElementById('run-telemetry').style.display === 'none'")
        assert "No GPU telemetry was recorded" in browser.evaluate("document.getElementById('run-notes').textContent")
        assert_offline_and_clean(browser, result.dashboard_path)
    finally:
        browser.close()
