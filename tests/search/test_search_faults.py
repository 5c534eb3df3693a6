"""The capacity search under faults (issue 24: G20, G21, G22): Ctrl-C in ``search-qps`` prints one line and no
traceback; a resumed search replays no damaged stored row (NaN, infinite or negative figures, an unknown verdict):
it says so, measures again from there and never prints a damaged rate as the suggestion."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mlperf_assets.config import SearchConfig
from mlperf_assets.search import CONFIRM, FOUND, PROBE, RESULT, Limits, ProbeFigures, Step, run_search


PROJECT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("mlperf-dagster")
LIMITS = Limits(ttft_ns=5e8, tpot_ns=3e7)  # llama3_1-8b-interactive
ENGINE = {"max_num_seqs": 512, "prefill_tokens_per_s": 2e7, "decode_step_ms": 10, "decode_ms_per_seq": 0.05,
          "max_tokens": 128}


def write_config(folder: Path, dataset: Path, **search) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "storage": {"artifact_root": "artifacts", "duckdb_path": "mlperf.duckdb", "report_dir": "report"},
        "dataset": {"source": "local", "path": str(dataset)},
        "benchmark": {"model": "llama3.1-8b", "checkpoint": None, "backend": "sim", "engine": ENGINE,
                      "scenarios": {"Server": {}}, "accuracy": False, "progress_interval_s": 0.5},
        "nodes": [{"name": "local", "runner": "local"}],
        "search": {"probe_duration_s": 2, "confirm_duration_s": 2, "min_queries": 600, "max_probes": 1,
                   "start_qps": 100, "margin_pct": 0, **search},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ------------------------------------------------------------------------------------------------ G20: Ctrl-C


@pytest.mark.slow
def test_ctrl_c_in_search_qps_prints_one_line_and_no_traceback(sim_dataset, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    path = write_config(tmp_path / "search", sim_dataset, probe_duration_s=30)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    proc = subprocess.Popen([str(CLI), "search-qps", "--config", str(path), "--scenario", "Interactive"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a terminal's foreground job
    try:
        artifacts = tmp_path / "search" / "artifacts"
        deadline = time.monotonic() + 120
        # the first probe's harness is running once its folder exists on the node (the local runner's workdir)
        while time.monotonic() < deadline and not any(p.name == "progress.jsonl" for p in artifacts.rglob("*")):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.3)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground process group
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "local/Interactive: interrupted; the steps so far are stored" in err


# ------------------------------------------------------------------------------------- G21: damaged stored rows


def figures(ok: bool) -> ProbeFigures:
    return ProbeFigures(run_id="r", result_validity="VALID" if ok else "INVALID", limits=LIMITS,
                        ttft_p99_ns=100e6, tpot_p99_ns=20e6 if ok else 35e6, completed_samples_per_second=50.0)


def probe_at(truth: float, calls: list):
    def probe(step: int, kind: str, qps: float) -> ProbeFigures:
        calls.append((step, kind, qps))
        return figures(qps <= truth)
    return probe


def complete_search() -> tuple[SearchConfig, list[Step], float]:
    settings = SearchConfig(tolerance_pct=3, max_probes=8)
    saved: list[Step] = []
    out = run_search(settings, search_id="s-1", estimate=lambda: (100.0, "test", None), probe=probe_at(63.0, []),
                     save=saved.append)
    assert out.status == FOUND and saved[-1].kind == RESULT
    return settings, saved, out.qps


def replace(step: Step, **changes) -> Step:
    return dataclasses.replace(step, **changes)


@pytest.mark.parametrize("changes", [{"target_qps": math.nan}, {"target_qps": math.inf}, {"target_qps": -5.0},
                                     {"target_qps": None}, {"verdict": "weird"}, {"target_qps": 12.5}])
def test_a_damaged_result_row_is_not_the_suggestion(changes):
    settings, saved, qps = complete_search()
    stored = [*saved[:-1], replace(saved[-1], **changes)]
    notes: list[str] = []
    again: list[Step] = []
    out = run_search(settings, search_id="s-1", estimate=lambda: pytest.fail("estimate"),
                     probe=lambda *a: pytest.fail("probe"), stored=stored, save=again.append, on_note=notes.append)
    assert out.status == FOUND and out.qps == qps and out.steps[-1].target_qps == qps
    assert len(again) == 1 and again[0].kind == RESULT and again[0].target_qps == qps  # the row is written anew
    assert len(notes) == 1 and f"stored step {saved[-1].step} (result) is damaged" in notes[0], notes
    assert "measured again" in out.message


@pytest.mark.parametrize("changes", [{"tpot_p99_ns": -20e6}, {"ttft_p99_ns": math.nan}, {"target_qps": math.nan},
                                     {"completed_samples_per_second": math.inf}, {"verdict": "weird"}])
def test_a_damaged_probe_row_is_measured_again_with_the_steps_after_it(changes):
    settings, saved, qps = complete_search()
    bad = next(s for s in saved if s.kind == PROBE and s.step == 2)
    stored = [replace(s, **changes) if s is bad else s for s in saved]
    notes: list[str] = []
    calls: list = []
    out = run_search(settings, search_id="s-1", estimate=lambda: pytest.fail("estimate"), probe=probe_at(63.0, calls),
                     stored=stored, on_note=notes.append)
    assert out.status == FOUND and out.qps == qps
    assert calls[0] == (2, PROBE, bad.target_qps) and calls[-1][1] == CONFIRM  # from the damaged step on
    assert len(notes) == 1 and "stored step 2 (probe) is damaged" in notes[0]
    assert f"with the {len(saved) - 3} stored step(s) after it" in notes[0]


@pytest.mark.slow
def test_a_nan_result_in_the_store_is_never_printed_as_the_suggestion(sim_dataset, tmp_path):
    """The finding's reproduction: a complete search, its result row's rate set to NaN in DuckDB, the same command
    again: it prints the rate the replay computes (the one in the suggestion YAML), never nan."""
    import duckdb

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    path = write_config(tmp_path / "search", sim_dataset)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    command = [str(CLI), "search-qps", "--config", str(path), "--scenario", "Interactive"]
    first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    accepted = first.stdout.strip().splitlines()[-1].strip()
    assert accepted.startswith("benchmark.scenarios.Server.target_qps: ") and "nan" not in accepted
    with duckdb.connect(str(tmp_path / "search" / "mlperf.duckdb")) as conn:
        conn.execute("UPDATE qps_search SET target_qps = 'nan'::DOUBLE WHERE kind = 'result'")
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip().splitlines()[-1].strip() == accepted, again.stdout
    assert "(stored)" in again.stdout and "is damaged (target_qps nan)" in again.stdout
    written = yaml.safe_load((tmp_path / "search" / "report" / "qps_search_local_Interactive.yaml").read_text())
    assert f"target_qps: {written['benchmark']['scenarios']['Server']['target_qps']:.2f}" in accepted
