"""What the store believes of a run's telemetry (issue 24 G9, G10; issue 22 items 4 and 5): the manifest's summary
and the token counts are checked like telemetry.jsonl's rows (out of range: NULL and a note, never a figure); a
line nested too deeply is one skipped-line note; the GPUs a run used are its telemetry's (not every GPU of the host);
every run of docs/results/h200 gets its energy per token. Real harness run folders (real LoadGen,
tests/support/reportdata.py), the project's own published H200 run folders, real DuckDB files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlperf_assets import store
from support.reportdata import GPU_TELEMETRY_SUMMARY, add_gpu_telemetry, gpu_telemetry_lines, harness_runs, \
    shared_base, write_telemetry

H200_RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results" / "h200"


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory, stories_dir: Path) -> dict[tuple[str, str], Path]:
    return harness_runs(shared_base(tmp_path_factory), stories_dir)


@pytest.fixture()
def gpu_run(real_runs, tmp_path: Path) -> Path:
    """A copy of the real Offline harness run (node-b) with a two-GPU telemetry.jsonl and its manifest summary."""
    folder = tmp_path / "gpu-run"
    shutil.copytree(real_runs[("night-1", "node-b")], folder)
    add_gpu_telemetry(folder)
    return folder


def _one(db: Path, sql: str, params=None):
    return store.query_rows(db, sql, params)[1]


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "run_manifest.json").read_text())


# ----------------------------------------------------------------------------------------------------------- G10


@pytest.mark.parametrize("deep", ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000],
                         ids=["array", "object"])
def test_a_line_nested_too_deeply_is_one_note_and_the_run_is_stored(gpu_run: Path, tmp_path: Path, deep: str) -> None:
    lines = gpu_telemetry_lines()
    text = "".join(json.dumps(r) + "\n" for r in lines[:3]) + deep + "\n" + "".join(
        json.dumps(r) + "\n" for r in lines[3:])
    (gpu_run / "telemetry.jsonl").write_text(text)
    db = tmp_path / "t.duckdb"
    report = store.ingest_path(db, gpu_run)  # was: RecursionError out of the JSON decoder, nothing stored
    path = str(gpu_run / "telemetry.jsonl")
    assert [(s.path, s.reason) for s in report.skipped] == [(path, "line 4: not a JSON line (nested too deeply)")]
    assert _one(db, "SELECT count(*) FROM runs WHERE tokens_per_second > 0") == [(1,)]
    assert _one(db, "SELECT count(*) FROM telemetry") == [(0,)]
    (notes,) = _one(db, "SELECT parse_notes FROM runs")[0]
    assert f"telemetry.jsonl left out: {path}:4: not a JSON line (nested too deeply)" in notes
    assert _one(db, "SELECT energy_j FROM run_telemetry") == [(9876.5,)]


# ------------------------------------------------------------------------------------------------------------ G9


@pytest.mark.parametrize("edit, column, says", [
    ({"energy_j": -6000, "mean_power_w": -600}, "energy_j", "telemetry energy_j = -6000 is not within 0..1e+18"),
    ({"energy_j": -6000, "mean_power_w": -600}, "mean_power_w", "telemetry mean_power_w = -600 is not within"),
    ({"energy_j": 1e300}, "energy_j", "telemetry energy_j = 1e+300 is not within 0..1e+18"),
    ({"mean_gpu_util_pct": 500}, "mean_gpu_util_pct", "telemetry mean_gpu_util_pct = 500 is not within 0..100"),
    ({"peak_kv_cache_usage_pct": -3}, "peak_kv_cache_usage_pct",
     "telemetry peak_kv_cache_usage_pct = -3 is not within 0..100"),
    ({"window_s": -10}, "window_s", "telemetry window_s = -10 is not > 0"),
    ({"engine_rows": -5}, "engine_rows", "telemetry engine_rows = -5 is not a count"),
], ids=["energy", "power", "energy-huge", "util", "kv", "window", "rows"])
def test_a_summary_figure_out_of_range_is_null_with_a_note(gpu_run: Path, tmp_path: Path, edit: dict, column: str,
                                                           says: str) -> None:
    lines = gpu_telemetry_lines()
    write_telemetry(gpu_run, lines, {**GPU_TELEMETRY_SUMMARY, "gpus": lines[0]["gpus"], **edit})
    db = tmp_path / "t.duckdb"
    store.ingest_path(db, gpu_run)
    (value, note), = _one(db, f"SELECT {column}, note FROM run_telemetry")
    assert value is None
    assert f"run_manifest.json {says}" in note
    (notes,) = _one(db, "SELECT parse_notes FROM runs")[0]
    assert says in notes
    # nothing derived from it is a figure either; the other figures stay the harness's own
    (per_token, util), = _one(db, "SELECT energy_per_output_token_j, mean_gpu_util_pct FROM run_summary")
    assert per_token is None if "energy_j" in edit else per_token > 0
    assert util is None if column == "mean_gpu_util_pct" else util == 71.5


def test_markers_the_wrong_way_round_give_no_window(gpu_run: Path, tmp_path: Path) -> None:
    lines = [r for r in gpu_telemetry_lines() if r.get("event") not in ("test_start", "test_end")]
    lines += [{"event": "test_start", "t_s": 10.5}, {"event": "test_end", "t_s": 0.5}]
    summary = {k: v for k, v in GPU_TELEMETRY_SUMMARY.items() if k != "window_s"}
    write_telemetry(gpu_run, lines, {**summary, "gpus": lines[0]["gpus"]})
    db = tmp_path / "t.duckdb"
    store.ingest_path(db, gpu_run)
    (window, note), = _one(db, "SELECT window_s, note FROM run_telemetry")
    assert window is None
    assert "test_end (0.5 s) is not after test_start (10.5 s)" in note


def test_a_negative_progress_token_count_is_not_used(gpu_run: Path, tmp_path: Path) -> None:
    progress = gpu_run / "progress.jsonl"
    records = [json.loads(ln) for ln in progress.read_text().splitlines() if ln.strip()]
    assert records[-1]["final"] is True
    records[-1]["output_tokens"] = -100
    progress.write_text("".join(json.dumps(r) + "\n" for r in records))
    db = tmp_path / "t.duckdb"
    store.ingest_path(db, gpu_run)
    (tokens, source, note), = _one(db, "SELECT window_output_tokens, window_output_tokens_source, note "
                                       "FROM run_telemetry")
    assert "progress.jsonl final line: output_tokens = -100 is not a token count" in note
    assert tokens != -100 and source != "progress.jsonl final line"
    (per_token,), = _one(db, "SELECT energy_per_output_token_j FROM run_summary")
    assert per_token is None or per_token > 0


# ------------------------------------------------------------------------------------- the GPUs a run used; J/token


def test_a_manifest_listing_every_gpu_of_the_host_counts_the_ones_the_run_used(tmp_path: Path) -> None:
    """The form docs/results/h200's manifests had before their correction: nvidia-smi's list of both H200s of the
    host, the telemetry's list of the one GPU the run was given."""
    run = tmp_path / "fp8-offline"
    shutil.copytree(H200_RESULTS / "1-main" / "fp8-offline", run)
    manifest = _manifest(run)
    assert [g["index"] for g in manifest["telemetry"]["gpus"]] == [0]
    manifest["gpus"] = manifest["gpus"] + [{**manifest["gpus"][0], "index": "1", "uuid": "GPU-second-of-the-host"}]
    (run / "run_manifest.json").write_text(json.dumps(manifest, indent=2))
    db = tmp_path / "t.duckdb"
    store.ingest_path(db, run)
    (count, accelerator, per_accel, tokens_s, source), = _one(
        db, "SELECT accelerators_per_node, accelerator, tokens_per_second_per_accelerator, tokens_per_second, "
            "system_source FROM run_summary")
    assert (count, accelerator, source) == (1, "NVIDIA H200", "run_manifest.json (telemetry)")
    assert per_accel == tokens_s == 6024.86


def test_every_h200_run_has_its_gpus_and_an_energy_per_token(tmp_path: Path) -> None:
    db = tmp_path / "h200.duckdb"
    report = store.ingest_path(db, H200_RESULTS)
    assert len(list(report)) == 14 and report.skipped == []
    rows = store.query(db, "SELECT source_path, accelerators_per_node, tokens_per_second_per_accelerator, "
                           "tokens_per_second, energy_per_output_token_j, energy_j FROM run_summary")
    for row in rows.itertuples():
        folder = Path(row.source_path)
        manifest = _manifest(folder)
        used = manifest["telemetry"]["gpus"]
        # the data: each manifest lists the GPUs its run used (one, or two for the dp2 / tp2 runs)
        assert [g["uuid"] for g in manifest["gpus"]] == [g["uuid"] for g in used], folder
        assert row.accelerators_per_node == len(used) == (2 if folder.name.endswith(("-dp2", "-tp2")) else 1)
        assert row.tokens_per_second_per_accelerator == pytest.approx(row.tokens_per_second / len(used))
        assert row.energy_per_output_token_j == pytest.approx(row.energy_j / manifest["output_tokens"], rel=1e-6)
    # the one folder without progress.jsonl: its J/token from the manifest's token count, as its README gives it
    (per_token, source), = _one(db, "SELECT r.energy_per_output_token_j, t.window_output_tokens_source "
                                    "FROM run_summary r JOIN run_telemetry t USING (run_id) "
                                    "WHERE r.source_path LIKE '%/1-main/fp8-offline'")
    assert round(per_token, 3) == 0.113 and source == "run_manifest.json output_tokens"
