"""Results-store speed: ingest of one full run, and run_summary over 10,000 runs.

1. Ingest of a full harness accuracy run: a real LoadGen detail + summary log (../shared/testdata/mlperf_logs),
   a synthetic 13,368-sample mlperf_log_accuracy.json (128 int32 tokens per sample, ~14 MB), a 13,368-line
   samples.jsonl, progress.jsonl and run_manifest.json. Target: < 2 s (parse + one transaction).
   Baseline, same run: the same 2 x 13,368 per-sample rows written with one INSERT per row (the naive way).
2. ``SELECT * FROM run_summary`` over 10,000 runs (the 32 real runs duplicated under new run ids and scenario
   folders, accuracy rows with them). Target: < 100 ms. Baseline, same run: the same SELECT on a plain table
   holding the view's rows (what the view costs over reading stored rows).
3. What GPU telemetry adds to that ingest: the same run with a telemetry.jsonl of an hour on an 8-GPU node sampled
   at 1 s (9,600 GPU rows + 1,200 engine rows). Baseline, same run: the run without the file. Target: < 500 ms more.

Run: .venv/bin/python benchmarks/ingest_and_query.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlperf_assets import store  # noqa: E402
from mlperf_assets.loadgen_logs import discover_runs, parse_runs  # noqa: E402

LOGS = ROOT.parent / "shared" / "testdata" / "mlperf_logs"
SRC = LOGS / "ntuhpc-v5.1__Cisco-C885_H200x8_TRT__llama3.1-8b__Offline" / "accuracy"
N_SAMPLES = 13_368


def make_full_run(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("mlperf_log_detail.txt", "mlperf_log_summary.txt"):
        if (SRC / name).exists():
            shutil.copy(SRC / name, dest / name)
    rng = random.Random(0)
    with (dest / "mlperf_log_accuracy.json").open("w") as fh:
        fh.write("[\n")
        for i in range(N_SAMPLES):
            tokens = "".join(f"{rng.randrange(128000):08X}" for _ in range(128))
            sep = "," if i < N_SAMPLES - 1 else ""
            fh.write(f'{{ "seq_id" : {i}, "qsl_idx" : {i}, "data" : "{tokens}", "token_count" : 128 }}{sep}\n')
        fh.write("]\n")
    with (dest / "samples.jsonl").open("w") as fh:
        t = 0
        for i in range(N_SAMPLES):
            t += rng.randrange(1_000_000)
            fh.write(json.dumps({"qsl_idx": i, "issue_ns": t, "first_token_ns": t + 50_000_000,
                                 "complete_ns": t + 900_000_000, "output_tokens": 128}) + "\n")
    with (dest / "progress.jsonl").open("w") as fh:
        for i in range(300):
            fh.write(json.dumps({"time": "2026-11-28T10:00:00Z", "elapsed_s": 2.0 * i, "issued": 44 * i,
                                 "completed": 44 * i, "total": N_SAMPLES, "output_tokens": 5632 * i,
                                 "tokens_per_s": 2816.0, "final": i == 299}) + "\n")
    (dest / "run_manifest.json").write_text(json.dumps({
        "schema": 1, "run_id": "bench-1", "node": "bench", "benchmark": "llama3.1-8b", "lg_model_name": "llama3_1-8b",
        "scenario": "Offline", "mode": "accuracy", "backend": {"name": "replay", "kind": "harness-ceiling"},
        "started_at": "2026-11-28T10:00:00Z", "finished_at": "2026-11-28T10:10:00Z", "exit_status": "completed",
    }))
    return dest


NAIVE_ROWS = 2_000  # per table; row-by-row INSERT is too slow to time on all rows (about 3 ms per row here)


def naive_row_inserts(db: Path, run_dir: Path) -> float:
    """Baseline: the same per-sample rows, one INSERT statement per row, timed on the first NAIVE_ROWS rows of
    each table and scaled linearly to the full row count (returned as seconds for all rows)."""
    parsed = parse_runs([run_dir])[0]
    st, al = parsed.samples, parsed.accuracy_log
    with store.open_for_write(db) as con:
        return _naive_row_inserts(con, st, al)


def _naive_row_inserts(con, st, al) -> float:
    con.execute("CREATE TABLE st (run_id VARCHAR, qsl_idx BIGINT, issue_ns BIGINT, first_token_ns BIGINT, "
                "complete_ns BIGINT, output_tokens INTEGER)")
    con.execute("CREATE TABLE al (run_id VARCHAR, seq_id BIGINT, qsl_idx BIGINT, data_bytes INTEGER, token_count INTEGER)")
    t0 = time.perf_counter()
    con.execute("BEGIN TRANSACTION")
    for i in range(NAIVE_ROWS):
        con.execute("INSERT INTO st VALUES (?, ?, ?, ?, ?, ?)",
                    ["x", st.qsl_idx[i], st.issue_ns[i], st.first_token_ns[i], st.complete_ns[i], st.output_tokens[i]])
    for i in range(NAIVE_ROWS):
        con.execute("INSERT INTO al VALUES (?, ?, ?, ?, ?)",
                    ["x", al.seq_id[i], al.qsl_idx[i], al.data_bytes[i], al.token_count[i]])
    con.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    return elapsed * (len(st.qsl_idx) + len(al.qsl_idx)) / (2 * NAIVE_ROWS)


def bulk_rows_only(db: Path, run_dir: Path) -> float:
    """Our way for the same rows alone (Arrow, one INSERT per table), to compare like with like."""
    parsed = parse_runs([run_dir])[0]
    st, al = parsed.samples, parsed.accuracy_log
    with store.open_for_write(db) as con:
        return _bulk_rows_only(con, st, al)


def _bulk_rows_only(con, st, al) -> float:
    import pyarrow as pa

    con.execute("CREATE TABLE st2 AS SELECT * FROM st LIMIT 0")
    con.execute("CREATE TABLE al2 AS SELECT * FROM al LIMIT 0")
    t0 = time.perf_counter()
    con.execute("BEGIN TRANSACTION")
    n = len(st.qsl_idx)
    store._arrow_insert(con, "st2", {
        "run_id": (["x"] * n, pa.string()), "qsl_idx": (st.qsl_idx, pa.int64()), "issue_ns": (st.issue_ns, pa.int64()),
        "first_token_ns": (st.first_token_ns, pa.int64()), "complete_ns": (st.complete_ns, pa.int64()),
        "output_tokens": (st.output_tokens, pa.int32())})
    m = len(al.qsl_idx)
    store._arrow_insert(con, "al2", {
        "run_id": (["x"] * m, pa.string()), "seq_id": (al.seq_id, pa.int64()), "qsl_idx": (al.qsl_idx, pa.int64()),
        "data_bytes": (al.data_bytes, pa.int32()), "token_count": (al.token_count, pa.int32())})
    con.execute("COMMIT")
    return time.perf_counter() - t0


def synthesize_runs(db: Path, target: int) -> int:
    """Ingest the real logs, then duplicate runs (new run ids and scenario folders) up to ``target`` rows."""
    store.ingest_path(db, LOGS)
    with store.open_for_write(db) as con:
        return _copy_runs(con, target)


def _copy_runs(con, target: int) -> int:
    base = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    copies = -(-target // base) - 1
    cols = ", ".join(store.RUNS_COLUMN_NAMES)
    select = ", ".join(
        "run_id || '-copy' || c.i" if c_ == "run_id" else "group_id || '-copy' || c.i" if c_ == "group_id" else c_
        for c_ in store.RUNS_COLUMN_NAMES
    )
    con.execute("BEGIN TRANSACTION")
    con.execute(f"INSERT INTO runs ({cols}) SELECT {select} FROM runs, range(1, {copies + 1}) AS c(i)")
    con.execute("INSERT INTO accuracy_results SELECT run_id || '-copy' || c.i, source, metric, value, value_text, "
                "target, target_json, passed, hash, computed_at FROM accuracy_results, range(1, ?) AS c(i)", [copies + 1])
    con.execute(f"DELETE FROM runs WHERE run_id IN (SELECT run_id FROM runs ORDER BY run_id DESC LIMIT "
                f"(SELECT count(*) - {target} FROM runs))")
    store.refresh_accuracy(con)
    con.execute("COMMIT")
    return con.execute("SELECT count(*) FROM runs").fetchone()[0]


def add_hour_of_telemetry(run_dir: Path, gpus: int = 8, ticks: int = 1200) -> int:
    """telemetry.jsonl as the harness writes it (header, window markers, GPU and engine rows) and the manifest's
    summary; returns the number of sample rows."""
    rng = random.Random(1)
    rows = 0
    with (run_dir / "telemetry.jsonl").open("w") as fh:
        fh.write(json.dumps({"event": "header", "t_s": 0.0, "interval_s": 1.0, "nvml": True, "reason": None,
                             "gpus": [{"index": g, "name": "NVIDIA H200"} for g in range(gpus)]}) + "\n")
        fh.write(json.dumps({"event": "test_start", "t_s": 1.0}) + "\n")
        for k in range(ticks):
            for g in range(gpus):
                fh.write(json.dumps({"t_s": k + 0.5, "source": "gpu", "gpu": g, "gpu_util_pct": rng.uniform(80, 100),
                                     "mem_util_pct": 40.0, "mem_used_mib": 120345.0, "power_w": rng.uniform(550, 700),
                                     "energy_j": 1e6 + 650.0 * k, "sm_clock_mhz": 1980, "mem_clock_mhz": 3201,
                                     "temperature_c": 61}) + "\n")
            fh.write(json.dumps({"t_s": k + 0.51, "source": "engine", "kv_cache_usage_pct": rng.uniform(0, 100),
                                 "requests_running": 256, "requests_waiting": 12, "prompt_tokens_per_s": 31000.0,
                                 "generation_tokens_per_s": 7900.0}) + "\n")
            rows += gpus + 1
        fh.write(json.dumps({"event": "test_end", "t_s": ticks - 1.0}) + "\n")
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    manifest["telemetry"] = {"nvml": True, "reason": None, "interval_s": 1.0, "file": "telemetry.jsonl",
                             "window_s": ticks - 2.0, "energy_j": 650.0 * gpus * ticks, "gpu_rows": gpus * ticks,
                             "engine_rows": ticks}
    (run_dir / "run_manifest.json").write_text(json.dumps(manifest))
    return rows


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def print_summary_timings(con, n: int, repeat: int) -> None:
    """``SELECT * FROM run_summary`` over the synthesized runs, against a plain table of the same rows."""
    nrows = con.execute("SELECT count(*) FROM run_summary").fetchall()[0][0]
    print(f"== SELECT * FROM run_summary over {n:,} runs ({nrows:,} rows, {len(store.RUN_SUMMARY_COLUMNS)} columns), "
          f"median of {repeat}; baseline = the same SELECT on a plain table holding the view's rows")
    for label, fetch in (("to Arrow", lambda q: con.sql(q).to_arrow_table()),
                         ("to pandas", lambda q: con.sql(q).df()),
                         ("to Python rows", lambda q: con.execute(q).fetchall())):
        view = statistics.median(timed(lambda: fetch("SELECT * FROM run_summary"), repeat))
        plain = statistics.median(timed(lambda: fetch("SELECT * FROM plain_summary"), repeat))
        target = "   target < 100 ms" if label == "to Arrow" else ""
        print(f"  {label:15s} view {view * 1000:7.1f} ms   plain table {plain * 1000:7.1f} ms   "
              f"ratio view/plain {view / plain:.2f}x{target}")
    filt = statistics.median(timed(lambda: con.execute(
        "SELECT node, scenario_label, avg(tokens_per_second) FROM run_summary WHERE mode = 'performance' "
        "GROUP BY ALL").fetchall(), repeat))
    print(f"  an aggregate over the view (avg tokens/s per scenario): {filt * 1000:.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    if not LOGS.is_dir():
        print(f"{LOGS} is absent: the shared test data must sit beside the project", file=sys.stderr)
        return 2
    repeat = 3 if args.quick else 7
    with tempfile.TemporaryDirectory(prefix="mlperf-bench-") as tmp:
        tmp = Path(tmp)
        run = make_full_run(tmp / "run")
        size_mb = (run / "mlperf_log_accuracy.json").stat().st_size / 1e6
        db = tmp / "ingest.duckdb"
        store.init_db(db)
        import pyarrow

        pyarrow.array([1, None])  # pyarrow loads its pandas shims on first use: a per-process cost, not the DB's

        cold = timed(lambda: store.ingest_path(db, run), 1)[0]
        warm = timed(lambda: store.ingest_path(db, run), repeat)
        parse_only = timed(lambda: parse_runs(discover_runs(run)), repeat)
        with store.open_read_only(db) as con:
            (rows,) = con.execute(
                "SELECT (SELECT count(*) FROM sample_timings), (SELECT count(*) FROM accuracy_log_samples)").fetchall()
        naive = naive_row_inserts(tmp / "naive.duckdb", run)
        bulk = bulk_rows_only(tmp / "naive.duckdb", run)
        print("== ingest of one full run (real detail log, 13,368-sample accuracy log %.1f MB, 13,368 samples.jsonl)" % size_mb)
        print(f"  ingest_path, first into an empty DB : {cold * 1000:8.1f} ms")
        print(f"  ingest_path, re-ingest (median of {repeat}): {statistics.median(warm) * 1000:8.1f} ms   target < 2000 ms")
        print(f"    of which parsing (median)         : {statistics.median(parse_only) * 1000:8.1f} ms")
        print(f"  rows stored: sample_timings={rows[0]}, accuracy_log_samples={rows[1]}")
        print(f"  the 26,736 per-sample rows alone: bulk Arrow insert {bulk * 1000:.1f} ms vs naive row-by-row "
              f"INSERT {naive * 1000:.0f} ms (timed on {2 * NAIVE_ROWS:,} rows, scaled)  -> {naive / bulk:.0f}x faster")
        print(f"  whole ingest vs naive row inserts alone: {naive / statistics.median(warm):.1f}x faster")

        nrows_tel = add_hour_of_telemetry(run)
        with_tel = timed(lambda: store.ingest_path(db, run), repeat)
        with store.open_read_only(db) as con:
            (stored,) = con.execute("SELECT count(*) FROM telemetry").fetchone()
        (run / "telemetry.jsonl").unlink()
        without_tel = timed(lambda: store.ingest_path(db, run), repeat)
        extra = statistics.median(with_tel) - statistics.median(without_tel)
        print(f"== the same run with an hour of 8-GPU telemetry ({nrows_tel:,} rows; {stored:,} stored), "
              f"re-ingest, median of {repeat}")
        print(f"  with telemetry {statistics.median(with_tel) * 1000:8.1f} ms   without (baseline) "
              f"{statistics.median(without_tel) * 1000:8.1f} ms   ratio {statistics.median(with_tel) / statistics.median(without_tel):.2f}x"
              f"   telemetry adds {extra * 1000:.0f} ms   target < 500 ms")

        qdb = tmp / "many.duckdb"
        n = synthesize_runs(qdb, 10_000)
        with store.open_for_write(qdb) as con:
            con.execute("CREATE TABLE plain_summary AS SELECT * FROM run_summary")
        with store.open_read_only(qdb) as con:
            print_summary_timings(con, n, repeat)
        api = statistics.median(timed(lambda: store.query(qdb, "SELECT * FROM run_summary"), repeat))
        print(f"  store.query() end to end (open read-only + DataFrame): {api * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
