"""Ingest and query hardening (issue 10: findings F3, F4, F10, F11 of ../shared/findings/adversarial.md, newcomer
defects 3-5, D9/D10 of the architecture review). Each test reproduces the finding first with real logs
(../shared/testdata/mlperf_logs), real DuckDB files and, for the disk-full cases, a real size-limited tmpfs
(or, where mounting is not allowed, a real RLIMIT_FSIZE on the ingest process)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from mlperf_assets import loadgen_logs as ll
from mlperf_assets import store
from support.storestate import db_state
from mlperf_assets.cli import main

CISCO = "ntuhpc-v5.1__Cisco-C885_H200x8_TRT__llama3.1-8b__Offline"
INTEL_SERVER = "ntuhpc-v5.1__Intel-1-node-2S-GNR_128C__llama3_1-8b__Server"
ORIN = "mlc-v4.1__NVIDIA-Orin_TRT__gptj-99__SingleStream"
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def seeded_db(tmp_path: Path, mlperf_logs_dir: Path) -> Path:
    db = tmp_path / "seeded.duckdb"
    store.ingest_path(db, mlperf_logs_dir / ORIN)
    return db


def _one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


# ------------------------------------------------------------------------------------------------- F3


def test_f3_random_bytes_named_summary_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    junk = tmp_path / "junk" / "run_1"
    junk.mkdir(parents=True)
    summary = junk / "mlperf_log_summary.txt"
    summary.write_bytes(random.Random(3).randbytes(65536))
    db = tmp_path / "t.duckdb"
    assert main(["ingest", str(tmp_path / "junk"), "--db", str(db)]) == 2
    err = _one_error_line(capsys)
    assert str(summary) in err and "not a LoadGen summary log" in err and "binary" in err
    assert not db.exists()


@pytest.mark.parametrize("cut", ["first 200 bytes", "inside the first figure"])
def test_f3_truncated_summary_without_detail_log_is_refused(
    tmp_path: Path, mlperf_logs_dir: Path, capsys: pytest.CaptureFixture, cut: str
) -> None:
    data = (mlperf_logs_dir / CISCO / "performance/run_1/mlperf_log_summary.txt").read_bytes()
    end = 200 if cut == "first 200 bytes" else data.index(b"Samples per second: 455") + len(b"Samples per second: 45")
    run = tmp_path / "cut" / "run_1"
    run.mkdir(parents=True)
    (run / "mlperf_log_summary.txt").write_bytes(data[:end])
    db = tmp_path / "t.duckdb"
    assert main(["ingest", str(tmp_path / "cut"), "--db", str(db)]) == 2
    err = _one_error_line(capsys)
    assert str(run / "mlperf_log_summary.txt") in err and "no result" in err
    assert not db.exists()


def test_f3_a_complete_summary_alone_still_ingests(tmp_path: Path, mlperf_logs_dir: Path) -> None:
    run = tmp_path / "alone" / "run_1"
    run.mkdir(parents=True)
    shutil.copy(mlperf_logs_dir / CISCO / "performance/run_1/mlperf_log_summary.txt", run)
    db = tmp_path / "t.duckdb"
    store.ingest_path(db, run)
    assert store.query_rows(db, "SELECT scenario, result_validity, tokens_per_second FROM run_summary")[1] == [
        ("Offline", "VALID", 58304.3)
    ]


# ------------------------------------------------------------------------------------------------- F4


def _two_runs(tmp_path: Path, mlperf_logs_dir: Path, bad_source: str) -> tuple[Path, Path]:
    two = tmp_path / "two"
    shutil.copytree(mlperf_logs_dir / INTEL_SERVER / "performance/run_1", two / "a_good")
    shutil.copytree(mlperf_logs_dir / CISCO / bad_source, two / "b_bad")
    return two, two / "b_bad"


def _edit(path: Path, pattern: str, replacement: str) -> None:
    text = path.read_text()
    new, n = re.subn(pattern, replacement, text, count=1)
    assert n == 1, pattern
    path.write_text(new)


UNSTORABLE = {
    # name: (source folder, file, regex, replacement, key named in the message)
    "int64 overflow": ("performance/run_1", "mlperf_log_detail.txt", r'("key": "result_max_latency_ns", "value": )\d+',
                       r"\g<1>1180591620717411303424", "result_max_latency_ns"),
    "1e30 latency": ("performance/run_1", "mlperf_log_detail.txt", r'("key": "result_min_latency_ns", "value": )\d+',
                     r"\g<1>1e30", "result_min_latency_ns"),
    "metadata line_no": ("performance/run_1", "mlperf_log_detail.txt", r'("line_no": )53\b', r"\g<1>99999999999953",
                         "line_no"),
    "gen_num 1e400": ("accuracy", "accuracy.txt", r"'gen_num': 13368", "'gen_num': 1e400", "gen_num"),
    "infinite time_ms": ("performance/run_1", "mlperf_log_detail.txt", r'("time_ms": )0\.008543', r"\g<1>1e999",
                         "time_ms"),
}


@pytest.mark.parametrize("case", sorted(UNSTORABLE))
def test_f4_unstorable_value_is_one_line_naming_file_and_key_and_nothing_is_written(
    tmp_path: Path, mlperf_logs_dir: Path, seeded_db: Path, capsys: pytest.CaptureFixture, case: str
) -> None:
    source, name, pattern, replacement, key = UNSTORABLE[case]
    two, bad = _two_runs(tmp_path, mlperf_logs_dir, source)
    _edit(bad / name, pattern, replacement)
    before = db_state(seeded_db)
    assert main(["ingest", str(two), "--db", str(seeded_db)]) == 2
    err = _one_error_line(capsys)
    assert str(bad / name) in err and repr(key) in err, err
    assert db_state(seeded_db) == before  # a_good was not written either


def test_f4_summary_only_overflow_names_the_label(tmp_path: Path, mlperf_logs_dir: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "s" / "run_1"
    run.mkdir(parents=True)
    summary = run / "mlperf_log_summary.txt"
    shutil.copy(mlperf_logs_dir / CISCO / "performance/run_1/mlperf_log_summary.txt", summary)
    _edit(summary, r"(Max latency \(ns\)\s*: )\d+", r"\g<1>1180591620717411303424")
    assert main(["ingest", str(run), "--db", str(tmp_path / "t.duckdb")]) == 2
    err = _one_error_line(capsys)
    assert str(summary) in err and "'Max latency (ns)'" in err and "64-bit" in err


def test_f4_a_failed_write_midway_stores_nothing(tmp_path: Path, mlperf_logs_dir: Path, seeded_db: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingest of many runs is one transaction: a failure at the third run leaves the first two unwritten."""
    real = store._write_run_rows
    calls = []

    def failing(conn, parsed):
        calls.append(parsed.row["source_path"])
        if len(calls) == 3:
            raise duckdb.IOException('IO Error: Could not write file "x.wal": No space left on device')
        return real(conn, parsed)

    monkeypatch.setattr(store, "_write_run_rows", failing)
    before = db_state(seeded_db)
    with pytest.raises(store.StoreError) as err:
        store.ingest_path(seeded_db, mlperf_logs_dir / INTEL_SERVER)
    assert len(calls) == 3
    msg = str(err.value)
    assert "no space left on device" in msg and "nothing was stored" in msg and "\n" not in msg
    assert db_state(seeded_db)[1] == before[1]


def test_f4_store_refuses_a_value_the_parser_let_through(tmp_path: Path, mlperf_logs_dir: Path, seeded_db: Path) -> None:
    runs = ll.parse_runs(ll.discover_runs(mlperf_logs_dir / CISCO))
    runs[-1].row["latency_max_ns"] = 2**70
    before = db_state(seeded_db)
    with pytest.raises(store.StoreValueError) as err:
        store.ingest_parsed(seeded_db, runs)
    assert runs[-1].row["source_path"] in str(err.value) and "latency_max_ns" in str(err.value)
    assert db_state(seeded_db) == before


@contextlib.contextmanager
def _small_disk(where: Path, size: str):
    """A real size-limited file system: a tmpfs of ``size`` mounted at ``where`` (root). Yields (folder, how, env
    preexec) where preexec is None for a tmpfs; where mounting is refused, the folder is a plain one and the
    ingest process gets RLIMIT_FSIZE instead (writes past the limit fail with EFBIG)."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = False
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount"):
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                 capture_output=True).returncode == 0
    if mounted:
        try:
            yield where, "tmpfs", None
        finally:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)
        return
    limit = int(size.rstrip("m")) * 1024 * 1024

    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    yield where, "rlimit", preexec


def _ingest_process(path: Path, db: Path, preexec) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlperf_assets.cli", "ingest", str(path), "--db", str(db)],
                          capture_output=True, text=True, cwd=PROJECT, preexec_fn=preexec, timeout=300)


def test_f4_full_disk_is_one_line_and_the_database_is_unchanged(tmp_path: Path, mlperf_logs_dir: Path) -> None:
    with _small_disk(tmp_path / "small", "4m") as (disk, how, preexec):
        db = disk / "t.duckdb"
        seed = _ingest_process(mlperf_logs_dir / ORIN, db, preexec)
        assert seed.returncode == 0, seed.stderr
        before = db_state(db)
        out = _ingest_process(mlperf_logs_dir, db, preexec)
        print(f"disk-full reproduction through {how}: {out.stderr.strip()}")
        assert out.returncode == 2, out.stdout + out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
        assert ("no space left on device" if how == "tmpfs" else "size limit") in out.stderr
        assert "nothing was stored" in out.stderr
        assert db_state(db) == before  # readable, and not one of the 32 runs in it


def test_f4_full_disk_while_creating_a_database_leaves_no_file(tmp_path: Path, mlperf_logs_dir: Path) -> None:
    with _small_disk(tmp_path / "small", "2m") as (disk, how, preexec):
        db = disk / "new.duckdb"
        out = _ingest_process(mlperf_logs_dir, db, preexec)
        assert out.returncode == 2, out.stdout + out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
        assert "nothing was stored" in out.stderr
        assert not db.exists() and not Path(f"{db}.wal").exists()


# ------------------------------------------------------------------------------------------------ F10


@pytest.mark.parametrize("sql", ["", "   ", "\n\t", "-- only a comment", ";"])
def test_f10_empty_query_is_one_line(seeded_db: Path, capsys: pytest.CaptureFixture, sql: str) -> None:
    assert main(["query", sql, "--db", str(seeded_db)]) == 2
    err = _one_error_line(capsys)
    assert err.startswith("mlperf-dagster query: error: ") and ("empty" in err or "no statement" in err)


@pytest.mark.parametrize("sql", ["CREATE TEMP TABLE t (x INTEGER)", "SET threads = 1"])
def test_f10_statement_without_result_set(seeded_db: Path, capsys: pytest.CaptureFixture, sql: str) -> None:
    assert main(["query", sql, "--db", str(seeded_db)]) == 0
    assert capsys.readouterr().out == "(no result set)\n"
    assert main(["query", sql, "--db", str(seeded_db), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_f10_query_function_refuses_empty_sql(seeded_db: Path) -> None:
    with pytest.raises(store.StoreError, match="empty"):
        store.query(seeded_db, " ")
    assert store.query_rows(seeded_db, "CREATE TEMP TABLE t (x INTEGER)") == ([], [])


# ------------------------------------------------------------------------------------------------ F11


def _runs(db: Path) -> list[tuple]:
    return store.query_rows(db, "SELECT run_id, source_path FROM runs ORDER BY run_id")[1]


def test_f11_one_run_folder_through_symlink_relative_path_and_copy_is_one_row(
    tmp_path: Path, mlperf_logs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = tmp_path / "X"
    shutil.copytree(mlperf_logs_dir / ORIN, x)
    db = tmp_path / "d.duckdb"
    first = store.ingest_path(db, x)
    ids = sorted(r.run_id for r in first)
    (tmp_path / "Y").symlink_to(x, target_is_directory=True)
    store.ingest_path(db, tmp_path / "Y")
    monkeypatch.chdir(tmp_path)
    store.ingest_path(db, "X/../X/./")
    shutil.copytree(x, tmp_path / "Z")
    store.ingest_path(db, tmp_path / "Z")
    rows = _runs(db)
    assert [r[0] for r in rows] == ids  # 2 runs (performance, accuracy), not 8
    assert all(r[1].startswith(str(tmp_path / "Z")) for r in rows)  # the latest ingest's path
    assert store.query_rows(db, "SELECT count(*) FROM detail_events")[1][0][0] == sum(
        len(ll.parse_detail_log(p).events) for p in x.glob("*/**/mlperf_log_detail.txt")
    )


def test_f11_every_real_run_keeps_its_own_row_and_a_copied_tree_adds_none(tmp_path: Path, mlperf_logs_dir: Path) -> None:
    db = tmp_path / "all.duckdb"
    runs = store.ingest_path(db, mlperf_logs_dir)
    assert len(runs) == 32 and len({r.run_id for r in runs}) == 32
    # identical TEST06 verify_accuracy.txt files of different systems are different runs
    verdicts = [p for p in mlperf_logs_dir.glob("*/**/verify_accuracy.txt")]
    by_text: dict[bytes, list[Path]] = {}
    for p in verdicts:
        by_text.setdefault(p.read_bytes(), []).append(p)
    assert any(len(v) > 1 for v in by_text.values())  # the test data has such twins
    stored = {r.source_path for r in runs}
    assert all(str(p.parent) in stored for p in verdicts)
    copy = tmp_path / "copy"
    shutil.copytree(mlperf_logs_dir, copy, ignore=shutil.ignore_patterns("MANIFEST*"))
    again = store.ingest_path(db, copy)
    assert sorted(r.run_id for r in again) == sorted(r.run_id for r in runs)
    assert store.query_rows(db, "SELECT count(*) FROM runs")[1] == [(32,)]


def test_f11_copies_inside_one_ingest_are_stored_once_and_reported(tmp_path: Path, mlperf_logs_dir: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "twice"
    shutil.copytree(mlperf_logs_dir / ORIN, root / "a")
    shutil.copytree(mlperf_logs_dir / ORIN, root / "b")
    db = tmp_path / "d.duckdb"
    assert main(["ingest", str(root), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped ") == 2 and "the same run as" in out
    assert out.strip().splitlines()[-1] == f"2 run(s) ingested into {db}, 2 skipped"
    assert len(_runs(db)) == 2


def test_f11_a_folder_whose_files_changed_replaces_its_row(tmp_path: Path, mlperf_logs_dir: Path) -> None:
    x = tmp_path / "X"
    shutil.copytree(mlperf_logs_dir / ORIN, x)
    db = tmp_path / "d.duckdb"
    store.ingest_path(db, x)
    acc = x / "accuracy" / "accuracy.txt"
    acc.write_text(acc.read_text().replace("'rouge1': 42.9603", "'rouge1': 41.0"))
    store.ingest_path(db, x)
    assert len(_runs(db)) == 2
    assert store.query_rows(db, "SELECT DISTINCT rouge1 FROM run_summary")[1] == [(41.0,)]


def _old_key(path: str) -> str:
    return "lg-" + hashlib.sha1(path.encode()).hexdigest()[:16]


def test_f11_a_database_of_path_keyed_runs_migrates(tmp_path: Path, mlperf_logs_dir: Path) -> None:
    """A schema-1 database (run ids 'lg-<sha1 of the path>') holding one run folder ingested through two paths:
    opening it for writing re-keys by content, keeps one row per run and moves every child row with it."""
    x = tmp_path / "X"
    shutil.copytree(mlperf_logs_dir / ORIN, x)
    (tmp_path / "Y").symlink_to(x, target_is_directory=True)
    db = tmp_path / "old.duckdb"
    store.ingest_path(db, x)
    con = duckdb.connect(str(db))
    tables = ("runs", *store.CHILD_TABLES, "accuracy_results")
    for run_id, source_path in con.execute("SELECT run_id, source_path FROM runs").fetchall():
        for alias in (source_path, source_path.replace(str(x), str(tmp_path / "Y"))):
            new = _old_key(alias)
            con.execute("INSERT INTO runs SELECT * REPLACE (? AS run_id, ? AS source_path) FROM runs WHERE run_id = ?",
                        [new, alias, run_id])
            for t in tables[1:]:
                con.execute(f"INSERT INTO {t} SELECT * REPLACE (? AS run_id) FROM {t} WHERE run_id = ?", [new, run_id])
        for t in tables:
            con.execute(f"DELETE FROM {t} WHERE run_id = ?", [run_id])
    con.execute("DELETE FROM schema_version WHERE version > 1")
    # a score recorded on one of the two copies of the accuracy run (whichever copy the migration keeps)
    con.execute("INSERT INTO accuracy_results VALUES (?, 'scored', 'rouge1', 43.5, '43.5', NULL, NULL, NULL, NULL, "
                "now()::TIMESTAMP)", [_old_key(str(x / "accuracy"))])
    store.refresh_accuracy(con)
    con.close()
    assert store.query_rows(db, "SELECT count(*) FROM runs")[1] == [(4,)]  # the F11 state: every run twice

    store.init_db(db)
    expected = sorted(r.row["run_id"] for r in ll.parse_runs(ll.discover_runs(x)))
    assert [r[0] for r in _runs(db)] == expected
    assert store.query_rows(db, "SELECT max(version) FROM schema_version")[1] == [(store.SCHEMA_VERSION,)]
    events = sum(len(ll.parse_detail_log(p).events) for p in x.glob("*/**/mlperf_log_detail.txt"))
    assert store.query_rows(db, "SELECT count(*) FROM detail_events")[1] == [(events,)]
    assert store.query_rows(db, "SELECT count(*), count(DISTINCT run_id) FROM provenance")[1] == [(2, 2)]
    assert store.query_rows(db, "SELECT DISTINCT rouge1 FROM run_summary")[1] == [(43.5,)]  # the score survived
    store.ingest_path(db, tmp_path / "Y")  # and a later ingest through either path replaces
    assert [r[0] for r in _runs(db)] == expected
    assert store.query_rows(db, "SELECT count(*) FROM accuracy_results WHERE source = 'scored'")[1] == [(1,)]


# -------------------------------------------------------------------- newcomer 3: figures = summary lines


def _summary_lines(path: Path) -> dict[str, str]:
    """A plain independent reading of mlperf_log_summary.txt: 'label : value' lines, first occurrence."""
    out: dict[str, str] = {}
    for line in path.read_text(errors="replace").split("\n"):
        m = re.match(r"^\s*([A-Za-z0-9][^:*]*?)\s*:\s*(\S.*?)\s*$", line)
        if m:
            out.setdefault(m.group(1), m.group(2))
    return out


def _equals_line(value, literal: str) -> bool:
    """The stored figure reads as the summary's number at the summary's precision."""
    if value is None:
        return False
    if re.fullmatch(r"-?\d+", literal):
        return value == int(literal) if isinstance(value, int) else round(value) == int(literal)
    return round(float(value), len(literal.split(".")[1])) == float(literal)


# summary label -> stored columns, by scenario (run_summary columns first; the rest are runs columns)
THROUGHPUT_LINES = {
    "Offline": {"Samples per second": ["samples_per_second"], "Tokens per second": ["tokens_per_second"],
                "Tokens per second (inferred)": ["tokens_per_second"]},
    "Server": {"Completed samples per second": ["samples_per_second", "completed_samples_per_second"],
               "Completed tokens per second": ["tokens_per_second", "completed_tokens_per_second"],
               "Completed tokens per second (inferred)": ["tokens_per_second", "completed_tokens_per_second"],
               "Scheduled samples per second": ["scheduled_samples_per_second"]},
    "SingleStream": {"QPS w/o loadgen overhead": ["samples_per_second"], "TPS w/o loadgen overhead": ["tokens_per_second"],
                     "QPS w/ loadgen overhead": ["qps_with_loadgen_overhead"],
                     "TPS w/ loadgen overhead": ["token_throughput_with_loadgen_overhead"]},
}
PCT = {"50.00": "p50", "90.00": "p90", "95.00": "p95", "97.00": "p97", "99.00": "p99", "99.90": "p999"}


def test_every_run_summary_figure_equals_its_summary_line(tmp_path: Path, mlperf_logs_dir: Path) -> None:
    db = tmp_path / "all.duckdb"
    store.ingest_path(db, mlperf_logs_dir)
    cols, rows = store.query_rows(db, "SELECT s.*, r.* EXCLUDE (run_id) FROM run_summary s JOIN runs r USING (run_id)")
    by_path = {row[cols.index("source_path")]: dict(zip(cols, row)) for row in rows}
    compared, wrong = 0, []
    summaries = sorted(mlperf_logs_dir.glob("*/**/mlperf_log_summary.txt"))
    assert len(summaries) == 14
    for path in summaries:
        lines, row = _summary_lines(path), by_path[str(path.parent)]
        expect: list[tuple[str, str, str]] = []  # (column, label, literal)
        for label, columns in THROUGHPUT_LINES[lines["Scenario"]].items():
            if label in lines:
                expect += [(c, label, lines[label]) for c in columns]
        for label, literal in lines.items():
            m = re.match(r"^(\d+\.\d+) percentile (latency|first token latency|time (?:to|per) output token) \(ns\)$", label)
            n = re.match(r"^(Min|Max|Mean) (latency|First Token latency|Time (?:to|per) Output Token) \(ns\)$", label)
            kind = None
            if m:
                stat_, kind = PCT[m.group(1)], m.group(2)
            elif n:
                stat_, kind = n.group(1).lower(), n.group(2).lower()
            if kind:
                prefix = "latency" if kind == "latency" else "ttft" if "first token" in kind else "tpot"
                expect.append((f"{prefix}_{stat_}_ns", label, literal))
        for label, column in (("Min duration satisfied", "min_duration_met"), ("Min queries satisfied", "min_queries_met"),
                              ("Early stopping satisfied", "early_stopping_met")):
            if label in lines:
                compared += 1
                if row[column] != (lines[label] == "Yes"):
                    wrong.append((path, column, row[column], lines[label]))
        for column, literal in (("result_validity", lines["Result is"]), ("scenario", lines["Scenario"])):
            compared += 1
            if row[column] != literal:
                wrong.append((path, column, row[column], literal))
        for column, label, literal in expect:
            compared += 1
            if not _equals_line(row[column], literal):
                wrong.append((path.relative_to(mlperf_logs_dir), column, row[column], f"{label}: {literal}"))
    assert not wrong, wrong
    print(f"{compared} figures compared with their summary lines")
    assert compared >= 300, compared


def test_singlestream_tokens_per_second_is_the_tps_line(mlperf_logs_dir: Path) -> None:
    run = mlperf_logs_dir / "ntuhpc-v5.1__Intel-1-node-1x-BMG-Pro-B60-Dual__llama3.1-8b-edge__SingleStream/performance/run_1"
    row = ll.parse_run(run).row
    # TPS w/o loadgen overhead: 37.73 (= result_token_throughput 3.77261e-08 per ns); the detail-only
    # result_completed_tokens_per_second 37.7249 stays in completed_tokens_per_second (no summary line)
    assert row["tokens_per_second"] == pytest.approx(37.7261) and round(row["tokens_per_second"], 2) == 37.73
    assert row["completed_tokens_per_second"] == pytest.approx(37.7249)
    assert row["samples_per_second"] == pytest.approx(0.294735)


# ------------------------------------------------------------------- newcomer 4: compliance file forms

TEST01_ACCURACY_PASS = """Verifying accuracy. This might take a while...
Reading accuracy mode results...
Reading performance mode results...
num_acc_log_entries = 13368
num_acc_log_duplicate_keys = 0
num_acc_log_data_mismatch = 0
num_perf_log_entries = 1327
num_perf_log_qsl_idx_match = 1327
num_perf_log_data_mismatch = 0
num_missing_qsl_idxs = 0
TEST PASS

"""
TEST01_ACCURACY_UNIX = """Each dot represents 1% completion:
....................................................................................................
num_acc_log_entries = 13368
num_perf_log_data_mismatch = 3
num_perf_log_entries = 1327
TEST FAIL

"""
VERIFY_PERFORMANCE_PASS = "Verifying performance.\nreference score = 455.503\ntest score = 453.11\nTEST PASS\n"
VERIFY_PERFORMANCE_FAIL = "Verifying performance.\nReference score = 455.503\nTest score = 300.2\nTEST FAIL: Test score invalid\n"
RUN_VERIFICATION_SUMMARY = "Accuracy check pass: True\nPerformance check pass: True\nTEST01 verification complete\n"
TEST06_FAILED = "First token check pass: True\nEOS check pass: False\nSample length check pass: True\nTEST06 verification failed\n"


@pytest.mark.parametrize(
    ("name", "text", "test", "passed", "checks"),
    [
        ("verify_accuracy.txt", TEST01_ACCURACY_PASS, "TEST01", True, {"Accuracy check": "True"}),
        ("verify_accuracy.txt", TEST01_ACCURACY_UNIX, "TEST01", False, {"Accuracy check": "False"}),
        ("verify_performance.txt", VERIFY_PERFORMANCE_PASS, None, True, {"Performance check": "True"}),
        ("verify_performance.txt", VERIFY_PERFORMANCE_FAIL, None, False, {"Performance check": "False"}),
        ("verify_accuracy.txt", RUN_VERIFICATION_SUMMARY, "TEST01", True,
         {"Accuracy check": "True", "Performance check": "True"}),
        ("verify_accuracy.txt", TEST06_FAILED, "TEST06", False,
         {"First token check": "True", "EOS check": "False", "Sample length check": "True", "verification": "False"}),
    ],
)
def test_verification_file_forms(tmp_path: Path, name: str, text: str, test, passed: bool, checks: dict) -> None:
    p = tmp_path / name
    p.write_text(text)
    v = ll.parse_verify_accuracy(p)
    assert (v.test, v.passed, v.checks) == (test, passed, checks)
    if "num_acc_log_entries" in text:
        assert v.values["num_acc_log_entries"] == "13368"
    if "score" in text:
        assert float(v.values["reference score"]) == 455.503


def _compliance_tree(root: Path, logs: Path) -> Path:
    """A submitter folder with every compliance form: real results and TEST06 (Cisco), a TEST01 folder (its
    performance run is a real LoadGen run, its verification files in the forms TEST01's scripts write), a TEST04
    folder, and verification files of no known form."""
    sub = root / "closed" / "Cisco"
    scen = ("C885_H200x8_TRT", "llama3.1-8b", "Offline")
    res = sub.joinpath("results", *scen)
    comp = sub.joinpath("compliance", *scen)
    shutil.copytree(logs / CISCO, res, ignore=shutil.ignore_patterns("compliance"))
    shutil.copytree(logs / CISCO / "compliance" / "TEST06", comp / "TEST06")
    t01 = comp / "TEST01"
    shutil.copytree(logs / INTEL_SERVER / "performance/run_1", t01 / "performance/run_1")
    (t01 / "verify_accuracy.txt").write_text(TEST01_ACCURACY_PASS)
    (t01 / "verify_performance.txt").write_text(VERIFY_PERFORMANCE_PASS)
    (t01 / "accuracy").mkdir()
    for name in ("baseline_accuracy.txt", "compliance_accuracy.txt"):
        shutil.copy(logs / CISCO / "accuracy/accuracy.txt", t01 / "accuracy" / name)
    t04 = comp / "TEST04"
    shutil.copytree(logs / ORIN / "performance/run_1", t04 / "performance/run_1")
    (t04 / "verify_performance.txt").write_text(VERIFY_PERFORMANCE_FAIL)
    odd = comp / "TEST05"  # a form nobody knows, an empty file and binary bytes: skipped with a reason
    odd.mkdir()
    (odd / "verify_accuracy.txt").write_text("Performance check is done\n")
    (odd / "verify_performance.txt").write_text("")
    bin_dir = comp / "TEST07"
    bin_dir.mkdir()
    (bin_dir / "verify_accuracy.txt").write_bytes(random.Random(7).randbytes(4096))
    return sub


def test_a_submitter_folder_with_every_compliance_form_ingests(tmp_path: Path, mlperf_logs_dir: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    sub = _compliance_tree(tmp_path, mlperf_logs_dir)
    db = tmp_path / "c.duckdb"
    assert main(["ingest", str(sub), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    skipped = [ln for ln in out.splitlines() if ln.startswith("skipped ")]
    assert len(skipped) == 3, out
    assert any("TEST05/verify_accuracy.txt" in ln and "known form" in ln for ln in skipped)
    assert any("TEST05/verify_performance.txt" in ln for ln in skipped)
    assert any("TEST07/verify_accuracy.txt" in ln and "binary" in ln for ln in skipped)
    cols, rows = store.query_rows(db, "SELECT source_path, mode, compliance_test, compliance_passed FROM run_summary")
    by = {Path(r[0]).relative_to(sub).as_posix(): r[1:] for r in rows}
    comp = "compliance/C885_H200x8_TRT/llama3.1-8b/Offline"
    assert by[f"{comp}/TEST06"] == ("compliance", "TEST06", True)
    assert by[f"{comp}/TEST01"] == ("compliance", "TEST01", True)
    assert by[f"{comp}/TEST04"] == ("compliance", "TEST04", False)
    assert by[f"{comp}/TEST01/performance/run_1"][:2] == ("compliance", "TEST01")
    assert by[f"{comp}/TEST04/performance/run_1"][:2] == ("compliance", "TEST04")
    assert by["results/C885_H200x8_TRT/llama3.1-8b/Offline/performance/run_1"][0] == "performance"
    assert len(rows) == 7  # performance and accuracy, TEST06, TEST01 and its run, TEST04 and its run
    settings = dict(store.query_rows(db, "SELECT key, value_json FROM settings s JOIN runs r USING (run_id) "
                                         "WHERE r.compliance_test = 'TEST01' AND s.kind LIKE 'verify%'")[1])
    assert json.loads(settings["num_perf_log_data_mismatch"]) == "0" and json.loads(settings["test score"]) == "453.11"
    files = json.loads(store.query_rows(db, "SELECT files_json FROM provenance p JOIN runs r USING (run_id) "
                                            "WHERE r.source_path LIKE '%/TEST01'")[1][0][0])
    assert {f["name"] for f in files} >= {"verify_accuracy.txt", "verify_performance.txt",
                                         "accuracy/baseline_accuracy.txt", "accuracy/compliance_accuracy.txt"}


def test_a_folder_of_only_unknown_verification_files_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "TEST05").mkdir()
    (tmp_path / "TEST05" / "verify_accuracy.txt").write_text("nothing to see\n")
    db = tmp_path / "x.duckdb"
    assert main(["ingest", str(tmp_path / "TEST05"), "--db", str(db)]) == 2
    err = _one_error_line(capsys)
    assert "no run could be ingested" in err and "verify_accuracy.txt" in err
    assert not db.exists()


# ------------------------------------------------------------------------- newcomer 5: file modes


def test_accuracy_txt_is_written_world_readable(tmp_path: Path) -> None:
    from mlperf_assets.accuracy import write_accuracy_txt

    class Report:
        def to_accuracy_txt(self) -> str:
            return "Results\n\n{'rouge1': '38.1', 'gen_len': 1, 'gen_num': 1}\n"

    old = os.umask(0o022)
    try:
        path = write_accuracy_txt(Report(), tmp_path / "out" / "accuracy.txt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert ll.parse_accuracy_txt(path).results["rouge1"] == 38.1


# ------------------------------------------------------------------------------ D9, D10 (one place each)


def test_number_helpers() -> None:
    from mlperf_assets import numbers as n

    assert n.as_float(True) is None and n.as_float("1.5") is None and n.as_float(2) == 2.0
    assert n.as_float(10**400) is None and n.as_int(float("inf")) is None and n.as_int(7.9) == 7
    assert n.parse_float(" 1.5 ") == 1.5 and n.parse_float("x") is None and n.parse_float(None) is None
    assert n.parse_int("1180591620717411303424") == 1180591620717411303424 and n.parse_int("nan") is None
    assert n.checked_int(n.INT64_MAX) == n.INT64_MAX and n.checked_int(None) is None and n.checked_int("abc") is None
    for bad, bits in ((n.INT64_MAX + 1, 64), ("1e30", 64), (2**31, 32), (float("inf"), 64), ("1e400", 64)):
        with pytest.raises(n.NumberError):
            n.checked_int(bad, bits=bits)
    with pytest.raises(n.NumberError, match="finite"):
        n.checked_float("1e400")
    with pytest.raises(n.NumberError):
        n.checked_float(10**400)
    assert n.checked_float(1e300) == 1e300


@pytest.mark.parametrize(
    ("name", "expected"),
    [("llama3_1-8b", "llama3.1-8b"), ("llama3.1-8b", "llama3.1-8b"), ("llama3_1-8b-edge", "llama3.1-8b-edge"),
     ("llama3_1-8b-interactive", "llama3.1-8b-interactive"), ("gptj-99", "gptj-99"), ("gptj-99.9", "gptj-99.9"),
     ("gptj", "gptj"), ("gpt-j", "gptj"), ("llama2-70b-99.9", "llama2-70b-99.9"), ("llama2_70b-99", "llama2-70b-99"),
     ("mixtral-8x7b", "mixtral-8x7b")],
)
def test_normalize_benchmark_follows_the_registry(name: str, expected: str) -> None:
    assert ll.normalize_benchmark(name) == expected
