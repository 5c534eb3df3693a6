"""The DuckDB store: every real log folder ingests and run_summary equals MANIFEST.json; bad input and
locked databases leave the file unchanged; harness run folders land in their tables."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from mlperf_assets import store
from support.storestate import db_state
from mlperf_assets.loadgen_logs import LogFormatError, NoRunsFoundError


@pytest.fixture(scope="module")
def manifest(mlperf_logs_dir: Path) -> list[dict]:
    return json.loads((mlperf_logs_dir / "MANIFEST.json").read_text())


@pytest.fixture(scope="module")
def full_db(tmp_path_factory: pytest.TempPathFactory, mlperf_logs_dir: Path) -> tuple[Path, list]:
    db = tmp_path_factory.mktemp("db") / "results.duckdb"
    runs = store.ingest_path(db, mlperf_logs_dir)
    return db, runs


def _summary_rows(db: Path) -> dict[str, dict]:
    cols, rows = store.query_rows(db, "SELECT * FROM run_summary")
    return {r[cols.index("source_path")]: dict(zip(cols, r)) for r in rows}


def _close(actual: float | None, literal: str) -> bool:
    """Equal within the summary's printed precision (plus the detail log's 6-significant-digit rounding)."""
    if actual is None:
        return False
    decimals = len(literal.split(".")[1]) if "." in literal else 0
    return abs(actual - float(literal)) <= 0.5 * 10 ** -decimals + 1e-5 * abs(float(literal))


def _scenario_dir(results_dir: str) -> str:
    last = results_dir.rstrip("/").split("/")[-1]
    return {"offline": "Offline", "server": "Server", "singlestream": "SingleStream", "interactive": "Interactive"}[last.lower()]


PERCENTILES = {
    "50.00 percentile latency (ns)": "latency_p50_ns",
    "90.00 percentile latency (ns)": "latency_p90_ns",
    "99.00 percentile latency (ns)": "latency_p99_ns",
    "50.00 percentile first token latency (ns)": "ttft_p50_ns",
    "99.00 percentile first token latency (ns)": "ttft_p99_ns",
    "50.00 percentile time to output token (ns)": "tpot_p50_ns",
    "99.00 percentile time to output token (ns)": "tpot_p99_ns",
}


def test_performance_ranging_and_compliance_runs_equal_manifest(full_db, manifest, mlperf_logs_dir: Path) -> None:
    db, _ = full_db
    rows = _summary_rows(db)
    checked = 0
    for entry in manifest:
        for rel, exp in entry["summaries"].items():
            folder = str(mlperf_logs_dir / entry["folder"] / Path(rel).parent)
            row = rows[folder]
            where = f"{entry['folder']}/{rel}"
            assert row["result_validity"] == exp["Result is"], where
            assert row["scenario"] == exp["Scenario"], where
            # the flat test layout hides the Interactive folder name: exact labels are checked in the tree test
            assert row["scenario_label"] in (exp["Scenario"], _scenario_dir(entry["results_dir"])), where
            expected_mode = "compliance" if rel.startswith("compliance/") else "ranging" if "/ranging/" in rel else "performance"
            assert row["mode"] == expected_mode, where
            for label in ("Samples per second", "Completed samples per second", "QPS w/o loadgen overhead"):
                if label in exp:
                    assert _close(row["samples_per_second"], exp[label]), (where, label, row["samples_per_second"])
            if "Completed samples per second" in exp:
                assert _close(row["completed_samples_per_second"], exp["Completed samples per second"]), where
            for label in ("Tokens per second", "Tokens per second (inferred)", "Completed tokens per second",
                          "Completed tokens per second (inferred)", "TPS w/o loadgen overhead"):
                if label in exp:
                    assert _close(row["tokens_per_second"], exp[label]), (where, label, row["tokens_per_second"])
                    if label.startswith(("Completed", "TPS")):
                        assert _close(row["completed_tokens_per_second"], exp[label]), where
            assert row["tokens_per_second_inferred"] == any("(inferred)" in k for k in exp), where
            for label, col in PERCENTILES.items():
                if label in exp:
                    assert row[col] == int(exp[label]), (where, col)
                else:
                    assert row[col] is None, (where, col)
            assert row["min_duration_met"] == (exp["Min duration satisfied"] == "Yes"), where
            detail = entry["details"][rel.replace("summary", "detail")]["values"]
            assert row["loadgen_version"] == detail["loadgen_version"], where
            assert row["started_at"] == datetime.fromisoformat(detail["test_datetime"].rstrip("Z")), where
            checked += 1
    assert checked == 14


def test_accuracy_runs_equal_manifest(full_db, manifest, mlperf_logs_dir: Path) -> None:
    db, _ = full_db
    rows = _summary_rows(db)
    for entry in manifest:
        folder = str(mlperf_logs_dir / entry["folder"] / "accuracy")
        row = rows[folder]
        values = entry["details"]["accuracy/mlperf_log_detail.txt"]["values"]
        assert row["mode"] == "accuracy"
        assert row["scenario"] == values["effective_scenario"]
        assert row["loadgen_version"] == values["loadgen_version"]
        expected = ast.literal_eval(entry["accuracy_txt"]["results_line"])
        for metric in ("rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len", "gen_num"):
            assert row[metric] == pytest.approx(float(expected[metric])), (entry["folder"], metric)
        # the performance runs of the same scenario folder carry the same accuracy
        perf = rows[str(mlperf_logs_dir / entry["folder"] / "performance/run_1")]
        assert perf["rouge1"] == pytest.approx(float(expected["rouge1"]))
    hashes = store.query(db, "SELECT DISTINCT hash FROM accuracy_results")["hash"].tolist()
    assert sorted(hashes) == sorted(e["accuracy_txt"]["hash"] for e in manifest)


def test_test06_verification_runs(full_db, manifest, mlperf_logs_dir: Path) -> None:
    db, _ = full_db
    rows = _summary_rows(db)
    n = 0
    for entry in manifest:
        for rel, text in entry["verify_accuracy"].items():
            row = rows[str(mlperf_logs_dir / entry["folder"] / Path(rel).parent)]
            assert row["mode"] == "compliance" and row["compliance_test"] == "TEST06"
            verdicts = [ln.split("pass:")[1].strip() for ln in text.splitlines() if "pass:" in ln]
            assert row["compliance_passed"] == all(v in ("True", "Skipped") for v in verdicts)
            n += 1
    assert n == 6
    # complete TEST06 accuracy logs are parsed entirely; the submission-truncated one is only recognised
    states = store.query(
        db, "SELECT source_path, accuracy_log_state, accuracy_log_samples FROM runs WHERE accuracy_log_state IS NOT NULL"
    )
    for _, r in states.iterrows():
        log = Path(r.source_path) / "mlperf_log_accuracy.json"
        if not log.exists():
            log = Path(r.source_path) / "accuracy" / "mlperf_log_accuracy.json"
        try:
            expected = len(json.loads(log.read_text()))
        except json.JSONDecodeError:
            assert r.accuracy_log_state == "submission-truncated"
            continue
        assert r.accuracy_log_state == "complete" and r.accuracy_log_samples == expected
    assert set(states.accuracy_log_state) == {"complete", "submission-truncated"}


def test_every_detail_event_is_stored(full_db, manifest, mlperf_logs_dir: Path) -> None:
    db, _ = full_db
    counts = dict(
        store.query_rows(db, "SELECT r.source_path, count(*) FROM detail_events e JOIN runs r USING (run_id) GROUP BY 1")[1]
    )
    for entry in manifest:
        for rel, exp in entry["details"].items():
            assert counts[str(mlperf_logs_dir / entry["folder"] / Path(rel).parent)] == exp["mllog_lines"]


def test_reingest_replaces(full_db, mlperf_logs_dir: Path) -> None:
    db, first = full_db
    before = store.query_rows(db, "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM detail_events), "
                                  "(SELECT count(*) FROM accuracy_results), (SELECT count(*) FROM settings)")[1]
    again = store.ingest_path(db, mlperf_logs_dir, node="node-b")
    after = store.query_rows(db, "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM detail_events), "
                                 "(SELECT count(*) FROM accuracy_results), (SELECT count(*) FROM settings)")[1]
    assert before == after
    assert sorted(r.run_id for r in again) == sorted(r.run_id for r in first)
    assert store.query_rows(db, "SELECT DISTINCT node FROM runs")[1] == [("node-b",)]


def test_submission_tree_labels(tmp_path: Path, manifest, mlperf_logs_dir: Path) -> None:
    """Rebuild the submission layout with symlinks; benchmark/submitter/system/scenario come from the paths."""
    for entry in manifest:
        src = mlperf_logs_dir / entry["folder"]
        res = tmp_path / entry["results_dir"]
        res.mkdir(parents=True)
        for child in src.iterdir():
            if child.name != "compliance":
                (res / child.name).symlink_to(child, target_is_directory=True)
        if entry["compliance_dir"] and (src / "compliance").is_dir():
            comp = tmp_path / entry["compliance_dir"]
            comp.mkdir(parents=True)
            for child in (src / "compliance").iterdir():
                (comp / child.name).symlink_to(child, target_is_directory=True)
    db = tmp_path / "tree.duckdb"
    store.ingest_path(db, tmp_path / "closed" / "Dell")  # a folder above runs: only Dell's
    store.ingest_path(db, tmp_path)
    rows = _summary_rows(db)
    for entry in manifest:
        division, submitter, _, system, bench, _scen = entry["results_dir"].split("/")
        perf = rows[str(tmp_path / entry["results_dir"] / "performance/run_1")]
        assert (perf["submitter"], perf["system"]) == (submitter, system)
        assert perf["benchmark"] == bench.replace("llama3_1", "llama3.1")
        assert perf["scenario_label"] == _scenario_dir(entry["results_dir"])
        if entry["verify_accuracy"]:
            test06 = [r for p, r in rows.items() if r["compliance_test"] == "TEST06" and r["system"] == system
                      and r["result_validity"] is None]
            assert len(test06) == 1
            expected = ast.literal_eval(entry["accuracy_txt"]["results_line"])
            # the compliance folder is linked to its results folder: same benchmark, same accuracy
            assert test06[0]["benchmark"] == perf["benchmark"]
            assert test06[0]["rouge1"] == pytest.approx(float(expected["rouge1"]))
    assert len(rows) == 32


# ------------------------------------------------------------------------------------------ bad input


@pytest.fixture()
def seeded_db(tmp_path: Path, mlperf_logs_dir: Path) -> Path:
    db = tmp_path / "seeded.duckdb"
    store.ingest_path(db, mlperf_logs_dir / "ntuhpc-v5.1__Cisco-C885_H200x8_TRT__llama3.1-8b__Offline")
    return db


def _copy_run(mlperf_logs_dir: Path, dest: Path) -> Path:
    src = mlperf_logs_dir / "mlc-v4.1__NVIDIA-Orin_TRT__gptj-99__SingleStream"
    shutil.copytree(src, dest)
    return dest


def test_truncated_detail_log_leaves_db_unchanged(seeded_db: Path, tmp_path: Path, mlperf_logs_dir: Path) -> None:
    run = _copy_run(mlperf_logs_dir, tmp_path / "in")
    detail = run / "performance/run_1/mlperf_log_detail.txt"
    text = detail.read_text()
    detail.write_text(text[: len(text) - 100])
    before = db_state(seeded_db)
    with pytest.raises(LogFormatError) as err:
        store.ingest_path(seeded_db, run)
    assert str(detail) in str(err.value) and "truncated" in str(err.value)
    assert db_state(seeded_db) == before  # the good accuracy run in the same folder was not written either


def test_foreign_file_leaves_db_unchanged(seeded_db: Path, tmp_path: Path, mlperf_logs_dir: Path) -> None:
    run = _copy_run(mlperf_logs_dir, tmp_path / "in")
    (run / "accuracy/mlperf_log_detail.txt").write_text("<html><body>404 Not Found</body></html>\n")
    before = db_state(seeded_db)
    with pytest.raises(LogFormatError, match="not a LoadGen detail log"):
        store.ingest_path(seeded_db, run)
    assert db_state(seeded_db) == before


def test_truncated_accuracy_log_leaves_db_unchanged(seeded_db: Path, tmp_path: Path, mlperf_logs_dir: Path) -> None:
    src = mlperf_logs_dir / "ntuhpc-v5.1__Cisco-C885_H200x8_TRT__llama3.1-8b__Offline"
    run = tmp_path / "cisco"
    shutil.copytree(src, run)
    acc = run / "compliance/TEST06/accuracy/mlperf_log_accuracy.json"
    text = acc.read_text()
    acc.write_text(text[: len(text) * 2 // 3])
    before = db_state(seeded_db)
    with pytest.raises(LogFormatError) as err:
        store.ingest_path(seeded_db, run)
    assert str(acc) in str(err.value)
    assert db_state(seeded_db) == before


def test_empty_folder(seeded_db: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    before = db_state(seeded_db)
    with pytest.raises(NoRunsFoundError, match="no LoadGen run found"):
        store.ingest_path(seeded_db, empty)
    assert db_state(seeded_db) == before


def _hold(code: str, tmp_path: Path) -> subprocess.Popen:
    """Run ``code`` in another process; it prints 'ready' once it holds the resource, then waits for stdin."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_locked_database_is_reported_and_unchanged(seeded_db: Path, mlperf_logs_dir: Path, tmp_path: Path) -> None:
    before = db_state(seeded_db)
    holder = _hold(f"""
        import sys
        from filelock import FileLock
        with FileLock({str(store.lock_path(seeded_db))!r}):
            print("ready", flush=True)
            sys.stdin.readline()
    """, tmp_path)
    try:
        with pytest.raises(store.StoreLockedError) as err:
            store.ingest_path(seeded_db, mlperf_logs_dir / "mlc-v4.1__NVIDIA-Orin_TRT__gptj-99__SingleStream",
                              lock_timeout_s=0.5)
        assert "another writer" in str(err.value) and str(seeded_db) in str(err.value)
    finally:
        holder.communicate("go\n", timeout=30)
    assert db_state(seeded_db) == before
    # once released, the same ingest goes through
    store.ingest_path(seeded_db, mlperf_logs_dir / "mlc-v4.1__NVIDIA-Orin_TRT__gptj-99__SingleStream", lock_timeout_s=5)
    assert db_state(seeded_db)[1][0][0] == before[1][0][0] + 2


def test_database_held_open_by_a_foreign_process(seeded_db: Path, mlperf_logs_dir: Path, tmp_path: Path) -> None:
    holder = _hold(f"""
        import sys, duckdb
        con = duckdb.connect({str(seeded_db)!r})
        print("ready", flush=True)
        sys.stdin.readline()
    """, tmp_path)
    try:
        with pytest.raises(store.StoreLockedError, match="held open by another process"):
            store.ingest_path(seeded_db, mlperf_logs_dir / "mlc-v4.1__NVIDIA-Orin_TRT__gptj-99__SingleStream",
                              lock_timeout_s=0.3)
    finally:
        holder.communicate("go\n", timeout=30)
    assert store.query_rows(seeded_db, "SELECT count(*) FROM runs")[1] == [(3,)]


def test_writer_waits_for_the_lock(seeded_db: Path, mlperf_logs_dir: Path, tmp_path: Path) -> None:
    holder = _hold(f"""
        import time
        from filelock import FileLock
        with FileLock({str(store.lock_path(seeded_db))!r}):
            print("ready", flush=True)
            time.sleep(1.0)
    """, tmp_path)
    try:
        store.ingest_path(seeded_db, mlperf_logs_dir / "mlc-v4.1__NVIDIA-Orin_TRT__gptj-99__SingleStream",
                          lock_timeout_s=20)
    finally:
        holder.wait(timeout=30)
    assert store.query_rows(seeded_db, "SELECT count(*) FROM runs")[1] == [(5,)]


def test_schema_version_and_newer_database(tmp_path: Path) -> None:
    db = tmp_path / "v.duckdb"
    store.init_db(db)
    assert store.query_rows(db, "SELECT max(version) FROM schema_version")[1] == [(store.SCHEMA_VERSION,)]
    store.init_db(db)  # idempotent
    assert store.query_rows(db, "SELECT count(*) FROM schema_version")[1] == [(len(store.MIGRATIONS),)]
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO schema_version VALUES (999, 'from the future', now())")
    con.close()
    with pytest.raises(store.StoreError, match="newer than this code"):
        store.init_db(db)


def test_run_summary_columns(tmp_path: Path) -> None:
    db = tmp_path / "c.duckdb"
    store.init_db(db)
    cols, _ = store.query_rows(db, "SELECT * FROM run_summary")
    required = ["run_id", "source_path", "node", "benchmark", "scenario", "mode", "result_validity",
                "samples_per_second", "tokens_per_second", "completed_samples_per_second",
                "completed_tokens_per_second", "latency_p50_ns", "latency_p90_ns", "latency_p99_ns", "ttft_p50_ns",
                "ttft_p99_ns", "tpot_p50_ns", "tpot_p99_ns", "min_duration_met", "loadgen_version", "started_at",
                "backend", "backend_kind", "finished_at", "dagster_run_id", "rouge1", "rouge2", "rougeL",
                "rougeLsum", "gen_len", "gen_num", "accuracy_passed"]
    assert cols[: len(required)] != [] and all(c in cols for c in required)
    assert cols == [c for c, _ in store.RUN_SUMMARY_COLUMNS]


def test_query_is_read_only(seeded_db: Path) -> None:
    with pytest.raises(store.StoreError, match="query failed"):
        store.query(seeded_db, "DELETE FROM runs")
    assert store.query_rows(seeded_db, "SELECT count(*) FROM runs")[1] == [(3,)]


def test_query_missing_database(tmp_path: Path) -> None:
    with pytest.raises(store.StoreError, match="no such database"):
        store.query(tmp_path / "nope.duckdb", "SELECT 1")
    assert not (tmp_path / "nope.duckdb").exists()


# -------------------------------------------------------------------------------- harness run folders


def _harness_run(dest: Path, src: Path, *, run_id: str, mode: str, exit_status: str = "completed",
                 n_samples: int = 40) -> Path:
    dest.mkdir(parents=True)
    for name in ("mlperf_log_detail.txt", "mlperf_log_summary.txt"):
        if (src / name).exists():
            shutil.copy(src / name, dest / name)
    manifest = {
        "schema": 1, "run_id": run_id, "node": "gpu-01", "harness_version": "0.1.0",
        "loadgen_version": "5.1.0", "benchmark": "llama3.1-8b", "lg_model_name": "llama3_1-8b-interactive",
        "scenario": "Server", "mode": mode,
        "backend": {"name": "vllm", "kind": "model", "versions": {"vllm": "0.10.1"},
                    "engine_args": {"tensor_parallel_size": 1}, "token_ids": "exact"},
        "dataset": {"path": "/data/cnn_eval.json", "sha256": "0" * 64, "samples": 13368, "tokenizer": "byte",
                    "tokenizer_kind": "byte", "source": "mlcommons-json"},
        "settings": {"ttft_latency": 500, "tpot_latency": 30}, "performance_sample_count": 13368,
        "performance_sample_count_note": None,
        "host": {"hostname": "gpu-01", "platform": "Linux", "python": "3.11", "cpu_count": 64}, "gpus": [],
        "started_at": "2026-11-28T10:00:00Z", "finished_at": "2026-11-28T10:11:00+00:00",
        "exit_status": exit_status, "error": None,
    }
    (dest / "run_manifest.json").write_text(json.dumps(manifest))
    prog = [{"time": f"2026-11-28T10:0{i}:00Z", "elapsed_s": 60.0 * i, "issued": 10 * i, "completed": 9 * i,
             "total": 30, "output_tokens": 900 * i, "tokens_per_s": 15.0, "final": i == 3} for i in range(1, 4)]
    (dest / "progress.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prog))
    samples = [{"qsl_idx": i % 7, "issue_ns": 1000 * i, "first_token_ns": None if i == 0 else 1000 * i + 50,
                "complete_ns": 1000 * i + 900, "output_tokens": 100 + i} for i in range(n_samples)]
    (dest / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    if mode == "accuracy":
        entries = [{"seq_id": i, "qsl_idx": i, "data": "01000000" * (i + 2), "token_data": "01000000",
                    "token_count": i + 2} for i in range(n_samples)]
        (dest / "mlperf_log_accuracy.json").write_text(json.dumps(entries))
    (dest / "user.conf").write_text("*.Server.target_qps = 800\n")
    return dest


def test_harness_run_folders(tmp_path: Path, mlperf_logs_dir: Path) -> None:
    src = mlperf_logs_dir / "ntuhpc-v5.1__Dell-XE9680L_B200_SXM_180GBx8_TRT__llama3.1-8b__Interactive"
    _harness_run(tmp_path / "runs/perf", src / "performance/run_1", run_id="mat-42", mode="performance")
    _harness_run(tmp_path / "runs/acc", src / "accuracy", run_id="mat-42", mode="accuracy", n_samples=25)
    db = tmp_path / "h.duckdb"
    ingested = store.ingest_path(db, tmp_path / "runs")
    assert sorted(r.run_id for r in ingested) == ["mat-42-accuracy", "mat-42-performance"]
    cols, rows = store.query_rows(db, "SELECT * FROM run_summary ORDER BY run_id")
    acc, perf = (dict(zip(cols, r)) for r in rows)
    assert perf["node"] == "gpu-01" and perf["backend"] == "vllm" and perf["backend_kind"] == "model"
    assert perf["benchmark"] == "llama3.1-8b" and perf["scenario"] == "Server"
    assert perf["scenario_label"] == "Interactive"  # from lg_model_name: the path says nothing
    assert perf["harness_run_id"] == "mat-42" and perf["mode"] == "performance" and acc["mode"] == "accuracy"
    assert perf["started_at"] == datetime(2026, 11, 28, 10, 0) and perf["finished_at"] == datetime(2026, 11, 28, 10, 11)
    assert perf["tokens_per_second"] == pytest.approx(102906.82)
    # per-sample timings and progress
    t = store.query_rows(db, "SELECT count(*), sum(complete_ns - issue_ns), count(first_token_ns), sum(output_tokens) "
                             "FROM sample_timings WHERE run_id = 'mat-42-performance'")[1][0]
    assert t == (40, 900 * 40, 39, sum(100 + i for i in range(40)))
    p = store.query_rows(db, "SELECT count(*), max(completed), bool_or(final) FROM progress WHERE run_id = 'mat-42-performance'")[1]
    assert p == [(3, 27, True)]
    a = store.query_rows(db, "SELECT accuracy_log_state, accuracy_log_samples FROM runs WHERE run_id = 'mat-42-accuracy'")[1]
    assert a == [("complete", 25)]
    assert store.query_rows(db, "SELECT sum(token_count) FROM accuracy_log_samples")[1] == [(sum(i + 2 for i in range(25)),)]
    prov = store.query_rows(db, "SELECT engine_args_json, backend_versions_json, user_conf FROM provenance "
                                "WHERE run_id = 'mat-42-performance'")[1][0]
    assert json.loads(prov[0]) == {"tensor_parallel_size": 1} and json.loads(prov[1]) == {"vllm": "0.10.1"}
    assert "target_qps" in prov[2]
    # accuracy scored later, keyed by the harness run id: both rows show it
    store.save_accuracy(db, "mat-42", {"rouge1": "38.7321", "rouge2": "15.8955", "rougeL": "24.4599",
                                       "rougeLsum": "35.7408", "gen_len": 8209736, "gen_num": 13368},
                        {"rouge1": {"value": 38.7321, "target": 38.3914, "passed": True},
                         "gen_len": {"value": 8209736, "target": [7350880, 8984408], "passed": True}})
    s = store.query_rows(db, "SELECT run_id, rouge1, gen_len, accuracy_passed FROM run_summary ORDER BY run_id")[1]
    assert s == [("mat-42-accuracy", 38.7321, 8209736, True), ("mat-42-performance", 38.7321, 8209736, True)]
    # re-scoring replaces
    store.save_accuracy(db, "mat-42", {"rouge1": 30.0}, {"rouge1": {"value": 30.0, "target": 38.3914, "passed": False}})
    s = store.query_rows(db, "SELECT rouge1, gen_len, accuracy_passed FROM run_summary WHERE run_id = 'mat-42-performance'")[1]
    assert s == [(30.0, None, False)]
    # overrides on the command line win over the manifest
    store.ingest_path(db, tmp_path / "runs/perf", node="gpu-99", backend="openai")
    assert store.query_rows(db, "SELECT node, backend FROM runs WHERE run_id = 'mat-42-performance'")[1] == [("gpu-99", "openai")]
    assert store.query_rows(db, "SELECT count(*) FROM sample_timings")[1] == [(65,)]


def test_interrupted_harness_run_tolerates_a_half_written_line(tmp_path: Path, mlperf_logs_dir: Path) -> None:
    src = mlperf_logs_dir / "ntuhpc-v5.1__Dell-XE9680L_B200_SXM_180GBx8_TRT__llama3.1-8b__Interactive/performance/run_1"
    run = _harness_run(tmp_path / "r1", src, run_id="int-1", mode="performance", exit_status="interrupted")
    with (run / "samples.jsonl").open("a") as fh:
        fh.write('{"qsl_idx": 3, "issue_')
    db = tmp_path / "i.duckdb"
    store.ingest_path(db, run)
    assert store.query_rows(db, "SELECT count(*) FROM sample_timings")[1] == [(40,)]
    assert store.query_rows(db, "SELECT exit_status FROM runs")[1] == [("interrupted",)]
    done = _harness_run(tmp_path / "r2", src, run_id="done-1", mode="performance")
    with (done / "samples.jsonl").open("a") as fh:
        fh.write('{"qsl_idx": 3, "issue_')
    with pytest.raises(LogFormatError, match=r"samples.jsonl:41: malformed"):
        store.ingest_path(db, done)


def test_bulk_sample_timings_go_in_as_one_insert(tmp_path: Path, mlperf_logs_dir: Path, monkeypatch) -> None:
    """13,368 per-sample rows go in through one vectorized insert, not a statement per row (the speed that buys is
    measured in benchmarks/ingest_and_query.py)."""
    src = mlperf_logs_dir / "ntuhpc-v5.1__Dell-XE9680L_B200_SXM_180GBx8_TRT__llama3.1-8b__Interactive/performance/run_1"
    run = _harness_run(tmp_path / "big", src, run_id="big-1", mode="performance", n_samples=13368)
    db = tmp_path / "b.duckdb"
    store.init_db(db)
    inserts: list[tuple[str, int]] = []
    real = store._arrow_insert

    def counted(conn, table, columns):
        inserts.append((table, len(next(iter(columns.values()))[0])))
        real(conn, table, columns)

    monkeypatch.setattr(store, "_arrow_insert", counted)
    store.ingest_path(db, run)
    assert store.query_rows(db, "SELECT count(*) FROM sample_timings")[1] == [(13368,)]
    assert [n for table, n in inserts if table == "sample_timings"] == [13368]


def test_summary_only_run_falls_back_to_the_summary(tmp_path: Path, mlperf_logs_dir: Path, manifest) -> None:
    entry = next(e for e in manifest if e["folder"].startswith("ntuhpc-v5.1__Dell"))
    run = tmp_path / "closed/Dell/results/XE/llama3.1-8b/Interactive/performance/run_1"
    run.mkdir(parents=True)
    shutil.copy(mlperf_logs_dir / entry["folder"] / "performance/run_1/mlperf_log_summary.txt", run)
    db = tmp_path / "s.duckdb"
    store.ingest_path(db, run)
    exp = entry["summaries"]["performance/run_1/mlperf_log_summary.txt"]
    cols, rows = store.query_rows(db, "SELECT r.figures_source, s.* FROM runs r JOIN run_summary s USING (run_id)")
    row = dict(zip(cols, rows[0]))
    assert row["figures_source"] == "summary"
    assert row["scenario"] == exp["Scenario"] and row["scenario_label"] == "Interactive"
    assert row["result_validity"] == exp["Result is"]
    assert row["tokens_per_second"] == float(exp["Completed tokens per second"])
    assert row["samples_per_second"] == float(exp["Completed samples per second"])
    assert row["ttft_p99_ns"] == int(exp["99.00 percentile first token latency (ns)"])
    assert row["tpot_p50_ns"] == int(exp["50.00 percentile time to output token (ns)"])
    assert row["min_duration_met"] is True and row["benchmark"] == "llama3.1-8b"


def test_published_accuracy_is_checked_against_the_mlperf_targets(tmp_path: Path, mlperf_logs_dir: Path) -> None:
    """A submission's accuracy.txt gets pass/fail from the checker's targets once the benchmark is known (its path)."""
    src = mlperf_logs_dir / "ntuhpc-v5.1__Cisco-C885_H200x8_TRT__llama3.1-8b__Offline"
    tree = tmp_path / "closed/Cisco/results/C885_H200x8_TRT/llama3.1-8b/Offline"
    shutil.copytree(src, tree)
    # The same logs with a gen_len far below 90 % of the reference's 8,167,644 characters must fail that target.
    bad = tmp_path / "closed/Cisco/results/C885_short/llama3.1-8b/Offline"
    shutil.copytree(src, bad)
    acc = bad / "accuracy" / "accuracy.txt"
    acc.write_bytes(acc.read_bytes().replace(b"'gen_len': 8209602", b"'gen_len': 7000000"))
    db = tmp_path / "s.duckdb"
    store.ingest_path(db, tmp_path / "closed")
    got = store.query(db, "SELECT system, mode, accuracy_passed FROM run_summary WHERE mode = 'accuracy' ORDER BY system")
    assert got.values.tolist() == [["C885_H200x8_TRT", "accuracy", True], ["C885_short", "accuracy", False]]
    checks = store.query(db, "SELECT a.metric, a.target, a.passed FROM accuracy_results a JOIN runs r USING (run_id) "
                             "WHERE r.system = 'C885_short' ORDER BY metric")
    rows = {m: (t, p) for m, t, p in checks.values.tolist()}
    assert rows["gen_len"][1] is False and rows["rouge1"][1] is True
    assert rows["rouge1"][0] == pytest.approx(38.7792 * 0.99)


SERVER_RUN = "ntuhpc-v5.1__Intel-1-node-2S-GNR_128C__llama3_1-8b__Server"


def test_results_store_resource_ingests_with_the_dagster_run_id(tmp_path: Path, mlperf_logs_dir: Path) -> None:
    from resources.store import ResultsStore

    resource = ResultsStore(path=str(tmp_path / "new-folder" / "r.duckdb"))  # the folder is made on first write
    assert not resource.exists()
    ingested = resource.ingest(mlperf_logs_dir / SERVER_RUN / "performance", node="gpu-1", dagster_run_id="dg-run-1")
    assert len(ingested) == 1 and resource.exists()
    stored = resource.query("SELECT node, dagster_run_id FROM runs")
    assert stored.to_dict("records") == [{"node": "gpu-1", "dagster_run_id": "dg-run-1"}]
    assert resource.summary()["run_id"].tolist() == [ingested[0].run_id]


def test_results_store_resource_records_each_checker_run_under_its_own_id(tmp_path: Path) -> None:
    from resources.store import ResultsStore

    resource = ResultsStore(path=str(tmp_path / "r.duckdb"))
    row = {"tree": "/t", "node": "gpu-1", "system": "sys", "benchmark": "llama3.1-8b", "passed": False,
           "metric": None, "summary": "SUMMARY: submission has errors"}
    first = resource.save_submission_checks([
        {**row, "scenario": "Offline", "expected_errors": ["Test duration less than 600s"], "unexpected_errors": []},
        {**row, "scenario": "Server", "expected_errors": [], "unexpected_errors": ["rng_seed is wrong"]},
    ])
    second = resource.save_submission_checks([{**row, "scenario": "Offline", "passed": True, "metric": 12.5,
                                               "summary": "SUMMARY: submission looks OK"}])
    assert first != second
    latest = resource.read_submission_checks()
    assert [(r["check_id"], r["scenario"], r["passed"], r["metric"]) for r in latest] == [
        (second, "Offline", True, 12.5)]
    earlier = resource.read_submission_checks(first)
    assert [(r["scenario"], r["expected_errors"], r["unexpected_errors"]) for r in earlier] == [
        ("Offline", ["Test duration less than 600s"], []), ("Server", [], ["rng_seed is wrong"])]
    assert all(isinstance(r["checked_at"], datetime) for r in earlier)
    with pytest.raises(ValueError, match="unknown column"):
        resource.save_submission_checks([{**row, "scenario": "Offline", "verdict": "?"}])
