"""Results stores for the report tests: real submission logs, plus real harness runs (LoadGen, replay/extractive).

Built once per pytest session under the session's temporary folder and shared by test_charts and test_dashboard.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]

# (run id, node, scenario, backend, settings flags): small counts and durations, as in test_harness_run
HARNESS_RUNS = [
    ("night-1", "node-a", "Server", "replay", ["--min-query-count", "40", "--target-qps", "150"]),
    ("night-2", "node-a", "Server", "replay", ["--min-query-count", "40", "--target-qps", "150"]),
    ("night-1", "node-b", "Offline", "extractive", ["--min-query-count", "60", "--target-qps", "100"]),
]


def submission_store(base: Path, mlperf_logs_dir: Path) -> Path:
    """A store filled from the MLPerf submission logs alone (no per-sample timings, no progress)."""
    from mlperf_assets import store

    db = base / "submissions.duckdb"
    marker = base / "submissions.duckdb.done"
    if not marker.exists():
        db.unlink(missing_ok=True)
        store.ingest_path(db, mlperf_logs_dir)
        marker.write_text("ok\n")
    return db


def harness_runs(base: Path, stories_dir: Path) -> dict[tuple[str, str], Path]:
    """Run the harness (real LoadGen) for HARNESS_RUNS; returns (run id, node) -> run folder."""
    from mlperf_assets.harness.dataset import prepare_dataset

    runs_dir = base / "harness-runs"
    folders = {(rid, node): runs_dir / f"{node}-{scenario}-{rid}" for rid, node, scenario, _, _ in HARNESS_RUNS}
    if all((f / "run_manifest.json").is_file() for f in folders.values()) and (runs_dir / "done").exists():
        return folders
    dataset = prepare_dataset("stories", stories_dir, base / "stories.json", tokenizer="byte")
    for rid, node, scenario, backend, flags in HARNESS_RUNS:
        out = folders[(rid, node)]
        cmd = [sys.executable, "-m", "mlperf_assets.harness", "run", "--scenario", scenario, "--mode", "performance",
               "--backend", backend, "--dataset", str(dataset), "--output-dir", str(out), "--min-duration-ms",
               "300", "--run-id", f"{node}-{scenario}-{rid}", "--node", node, "--progress-interval-s", "0.05",
               *flags]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, timeout=180)
        if result.returncode != 0:
            raise RuntimeError(f"harness run failed ({' '.join(cmd)}):\n{result.stderr[-2000:]}")
    (runs_dir / "done").write_text("ok\n")
    return folders


def full_store(base: Path, mlperf_logs_dir: Path, stories_dir: Path) -> Path:
    """Submission logs plus the harness runs (with per-sample timings and progress)."""
    from mlperf_assets import store

    db = base / "full.duckdb"
    marker = base / "full.duckdb.done"
    if not marker.exists():
        db.unlink(missing_ok=True)
        folders = harness_runs(base, stories_dir)
        store.ingest_path(db, mlperf_logs_dir)
        for folder in folders.values():
            store.ingest_path(db, folder)
        marker.write_text("ok\n")
    return db


def shared_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp() / "report-stores"
    base.mkdir(exist_ok=True)
    return base
