"""The capacity search under faults (issue 24: G20, G21, G22): Ctrl-C in ``search-qps`` prints one line and no
traceback; a resumed search replays no damaged stored row (NaN, infinite or negative figures, an unknown verdict):
it says so, measures again from there and never prints a damaged rate as the suggestion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml


PROJECT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("mlperf-dagster")
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
        "search": {"probe_duration_s": 2, "confirm_duration_s": 2, "min_queries": 100, "max_probes": 3,
                   "start_qps": 200, **search},
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
