"""Report generation from a store of 1,000 runs (target < 3 s on a 2-core machine), and of 10,000 runs.

The store: the 32 real submission runs of ../shared/testdata/mlperf_logs, plus nightly runs of 5 nodes x 3
scenarios (performance + accuracy) made from real rows under new run ids, nodes and dates (tokens/s and
latencies jittered by +-10 %), so about 1,000 runs in all (10,000 with 10x the nights). The newest run of each
node/scenario also carries 13,368 per-sample timings and 300 progress lines, as our harness writes them.

Measured in the same run:
- the baseline: the queries alone (run_summary + the per-sample and progress rows the report reads), what any
  report costs;
- `build_report` into a fresh folder (nothing cached: every PNG drawn), three times, median: the figure;
- the same into the folder of the previous report (data unchanged: PNGs reused from its cache);
- `mlperf-dagster report` as a command (a new Python process: imports included);
- the 10,000-run store, once.
The last line is the figure: `report generation: X s for N runs`.

Run: .venv/bin/python benchmarks/report_generation.py [--quick]   (--quick: about 200 runs, no 10,000)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlperf_assets import store  # noqa: E402
from mlperf_assets.reporting import build_report, load_summary  # noqa: E402

LOGS = ROOT.parent / "shared" / "testdata" / "mlperf_logs"
NODES = [f"gpu-{i:02d}" for i in range(5)]
# scenario -> the real run (scenario folder) whose rows serve as template
TEMPLATES = {
    "Offline": "ntuhpc-v5.1__Cisco-C885_H200x8_TRT__llama3.1-8b__Offline",
    "Server": "ntuhpc-v5.1__Intel-1-node-2S-GNR_128C__llama3_1-8b__Server",
    "SingleStream": "ntuhpc-v5.1__Intel-1-node-1x-BMG-Pro-B60-Dual__llama3.1-8b-edge__SingleStream",
}
N_SAMPLES = 13_368
N_PROGRESS = 300


def build_store(db: Path, nights: int) -> int:
    store.ingest_path(db, LOGS)
    rng = np.random.default_rng(0)
    with store.open_for_write(db) as conn:
        conn.execute("BEGIN TRANSACTION")
        tmpl_rows = []
        for scenario, folder in TEMPLATES.items():
            for mode, sub in (("performance", "performance/run_1"), ("accuracy", "accuracy")):
                rid = conn.execute("SELECT run_id FROM runs WHERE source_path = ?",
                                   [str((LOGS / folder / sub).resolve())]).fetchone()
                if rid is None:
                    raise SystemExit(f"template run {folder}/{sub} not in the store")
                tmpl_rows.append((rid[0], scenario, mode))
        conn.execute("CREATE TEMP TABLE tmpl (src VARCHAR, scen VARCHAR, mo VARCHAR)")
        conn.executemany("INSERT INTO tmpl VALUES (?, ?, ?)", tmpl_rows)
        conn.execute("CREATE TEMP TABLE nodes AS SELECT * FROM (VALUES " +
                     ", ".join(f"('{n}', {i})" for i, n in enumerate(NODES)) + ") v(nd, idx)")
        jitter = "(0.9 + 0.2 * random())"
        conn.execute(f"""
            INSERT INTO runs SELECT r.* REPLACE (
                printf('bench-%s-%s-%03d-%s', n.nd, t.scen, g.night, t.mo) AS run_id,
                printf('bench-%s-%s-%03d', n.nd, t.scen, g.night) AS group_id,
                printf('/bench/%s/%s/%03d/%s', n.nd, t.scen, g.night, t.mo) AS source_path,
                n.nd AS node, 'vllm' AS backend, 'model' AS backend_kind, 'llama3.1-8b' AS benchmark,
                t.scen AS scenario_label,
                TIMESTAMP '2026-01-01 02:00:00' + to_days(CAST(g.night AS INTEGER))
                    + to_minutes(CAST(n.idx * 20 AS INTEGER)) AS started_at,
                r.tokens_per_second * {jitter} AS tokens_per_second,
                r.completed_tokens_per_second * {jitter} AS completed_tokens_per_second,
                CAST(r.ttft_p99_ns * {jitter} AS BIGINT) AS ttft_p99_ns,
                CAST(r.tpot_p99_ns * {jitter} AS BIGINT) AS tpot_p99_ns)
            FROM runs r JOIN tmpl t ON r.run_id = t.src, nodes n, range({nights}) g(night)""")
        conn.execute("""
            INSERT INTO accuracy_results SELECT a.* REPLACE (r.run_id AS run_id)
            FROM runs r JOIN tmpl t ON r.run_id LIKE 'bench-%' AND r.mode = 'accuracy'
                AND r.scenario_label = t.scen AND t.mo = 'accuracy'
            JOIN accuracy_results a ON a.run_id = t.src""")
        if hasattr(store, "refresh_accuracy"):  # run_summary joins a table the store keeps in step
            store.refresh_accuracy(conn)
        latest = [r[0] for r in conn.execute(
            "SELECT run_id FROM runs WHERE run_id LIKE ? AND mode = 'performance'",
            [f"bench-%-{nights - 1:03d}-performance"]).fetchall()]
        for rid in latest:
            issue = np.sort(rng.integers(0, 600_000_000_000, N_SAMPLES))
            first = issue + rng.integers(50_000_000, 2_000_000_000, N_SAMPLES)
            tokens = rng.integers(20, 128, N_SAMPLES)
            complete = first + tokens * rng.integers(20_000_000, 90_000_000, N_SAMPLES)
            samples = pd.DataFrame({"run_id": rid, "qsl_idx": np.arange(N_SAMPLES), "issue_ns": issue,
                                    "first_token_ns": first, "complete_ns": complete, "output_tokens": tokens})
            conn.register("samples_df", samples)
            conn.execute("INSERT INTO sample_timings SELECT * FROM samples_df")
            conn.unregister("samples_df")
            elapsed = np.linspace(2, 600, N_PROGRESS)
            progress = pd.DataFrame({
                "run_id": rid, "seq": np.arange(N_PROGRESS), "time": pd.Timestamp("2026-02-01"),
                "elapsed_s": elapsed, "issued": (elapsed * 22).astype(int), "completed": (elapsed * 22).astype(int),
                "total": N_SAMPLES, "output_tokens": (elapsed * 2800).astype(int),
                "tokens_per_s": 2800 * (0.9 + 0.2 * rng.random(N_PROGRESS)), "final": False})
            conn.register("progress_df", progress)
            conn.execute("INSERT INTO progress SELECT * FROM progress_df")
            conn.unregister("progress_df")
        conn.execute("COMMIT")
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]


def timed_report(db: Path, out: Path) -> tuple[float, float, object]:
    t, cpu = time.perf_counter(), time.process_time()
    result = build_report(db, out)
    return time.perf_counter() - t, time.process_time() - cpu, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="about 200 runs instead of 1,000, and no 10,000")
    args = parser.parse_args()
    if not LOGS.is_dir():
        print(f"{LOGS} is absent: the shared test data sits beside the project in ../shared")
        return 1
    nights = 7 if args.quick else 33
    work = Path(tempfile.mkdtemp(prefix="report-bench-"))
    try:
        db = work / "bench.duckdb"
        t = time.perf_counter()
        n_runs = build_store(db, nights)
        print(f"store: {n_runs} runs ({len(NODES)} nodes x {len(TEMPLATES)} scenarios x {nights} nights x 2 modes "
              f"+ 32 real), built in {time.perf_counter() - t:.1f} s")

        # warm imports (plotly, matplotlib) once so every measurement pays the same
        build_report(db, work / "warmup", max_dashboard_runs=5, max_run_figures=1)

        t = time.perf_counter()
        summary = load_summary(db)
        runs = list(summary["run_id"])
        store.query(db, "SELECT run_id, issue_ns, first_token_ns, complete_ns, output_tokens FROM sample_timings")
        store.query(db, "SELECT run_id, elapsed_s, completed, tokens_per_s FROM progress")
        query_s = time.perf_counter() - t
        print(f"baseline, queries alone ({len(runs)} summary rows + per-sample + progress rows): {query_s:.2f} s")

        cold = []
        for i in range(3):
            wall, cpu, result = timed_report(db, work / f"report-{i}")
            cold.append(wall)
            print(f"  report into a fresh folder #{i + 1}: {wall:.2f} s (CPU of this process {cpu:.2f} s; "
                  f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); "
                  + ", ".join(f"{k} {v:.2f}" for k, v in result.timings_s.items()))
        total_s = statistics.median(cold)
        warm, _, again = timed_report(db, work / "report-2")
        print(f"  again into the same folder, data unchanged: {warm:.2f} s ({len(again.pngs_reused)} of "
              f"{len(again.png_paths)} PNGs reused from its cache)")

        command = Path(sys.executable).with_name("mlperf-dagster")
        if command.exists():
            t = time.perf_counter()
            subprocess.run([str(command), "report", "--db", str(db), "--out", str(work / "report-cli")], check=True,
                           capture_output=True, env={**os.environ, "MLPERF_DAGSTER_CONFIG": ""})
            print(f"  `mlperf-dagster report` as a command (new process, imports included): "
                  f"{time.perf_counter() - t:.2f} s")

        from plotly.offline import get_plotlyjs

        plotly_bytes = len(get_plotlyjs().encode())
        size = result.dashboard_path.stat().st_size
        pngs = sum(p.stat().st_size for p in result.png_paths.values())
        print(f"dashboard.html: {size / 1e6:.2f} MB = plotly.js {plotly_bytes / 1e6:.2f} MB (baseline) + data "
              f"{(size - plotly_bytes) / 1e6:.2f} MB; {size / plotly_bytes:.2f} x plotly.js alone")
        print(f"charts: {len(result.charts_drawn)} drawn, PNGs {pngs / 1e3:.0f} kB in all; "
              f"regression flags on latest runs: {len(result.regressions)}")

        if not args.quick:
            big = work / "big.duckdb"
            t = time.perf_counter()
            n_big = build_store(big, nights * 10 + 3)
            print(f"store: {n_big} runs, built in {time.perf_counter() - t:.1f} s")
            wall, cpu, big_result = timed_report(big, work / "report-big")
            print(f"report generation for {n_big} runs: {wall:.2f} s (CPU of this process {cpu:.2f} s; load "
                  f"average {os.getloadavg()[0]:.1f}); dashboard {big_result.dashboard_bytes / 1e6:.2f} MB; "
                  + ", ".join(f"{k} {v:.2f}" for k, v in big_result.timings_s.items()))

        verdict = "" if args.quick else f" (target < 3 s: {'met' if total_s < 3 else 'NOT met'})"
        print(f"median of the fresh-folder reports = {total_s / query_s:.1f} x the queries{verdict}")
        print(f"report generation: {total_s:.2f} s for {n_runs} runs")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
