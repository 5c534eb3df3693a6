"""`mlperf-dagster ingest` and `mlperf-dagster query` on the real submission logs."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlperf_assets.cli import main

ORIN = "mlc-v4.1__NVIDIA-Orin_TRT__gptj-99__SingleStream"
LENOVO = "ntuhpc-v5.1__Lenovo-SR680a_V3_B200SXMx8_TRT__llama2-70b-99.9__Server"


@pytest.fixture()
def db(tmp_path: Path, mlperf_logs_dir: Path, capsys: pytest.CaptureFixture) -> Path:
    path = tmp_path / "r.duckdb"
    assert main(["ingest", str(mlperf_logs_dir / LENOVO), "--db", str(path), "--node", "lenovo-1"]) == 0
    capsys.readouterr()
    return path


def test_ingest_prints_one_line_per_run(tmp_path: Path, mlperf_logs_dir: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "r.duckdb"
    assert main(["ingest", str(mlperf_logs_dir / LENOVO), "--db", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    body = [ln for ln in out if ln.startswith("lg-")]
    assert len(body) == 3
    ranging = next(ln for ln in body if "ranging" in ln)
    # run id, scenario, mode, validity, headline (the summary's completed tokens/s)
    assert "Server" in ranging and "INVALID" in ranging and "99204.76 tokens/s" in ranging
    perf = next(ln for ln in body if "performance/run_1" in ln)
    assert " VALID" in perf and "99203.92 tokens/s" in perf
    acc = next(ln for ln in body if " accuracy " in ln)
    assert "rouge1 44.758" in acc
    assert out[-1] == f"3 run(s) ingested into {path}"


def test_query_formats(db: Path, capsys: pytest.CaptureFixture) -> None:
    sql = "SELECT mode, result_validity, tokens_per_second, ttft_p99_ns, node FROM run_summary ORDER BY mode"
    assert main(["query", sql, "--db", str(db), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [
        {"mode": "accuracy", "result_validity": None, "tokens_per_second": None, "ttft_p99_ns": None, "node": "lenovo-1"},
        {"mode": "performance", "result_validity": "VALID", "tokens_per_second": 99203.92, "ttft_p99_ns": 412105975,
         "node": "lenovo-1"},
        {"mode": "ranging", "result_validity": "INVALID", "tokens_per_second": 99204.76, "ttft_p99_ns": 3849383881,
         "node": "lenovo-1"},
    ]
    assert main(["query", sql, "--db", str(db), "--format", "csv"]) == 0
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["mode"] for r in parsed] == ["accuracy", "performance", "ranging"]
    assert parsed[1]["ttft_p99_ns"] == "412105975" and parsed[0]["tokens_per_second"] == ""
    assert main(["query", sql, "--db", str(db)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["mode", "result_validity", "tokens_per_second", "ttft_p99_ns", "node"]
    assert set(table[1]) <= {"-", " "}
    assert table[-1] == "(3 rows)"
    # columns are aligned: every data row is as wide as the header's column starts allow
    starts = [table[0].index(h) for h in ("result_validity", "node")]
    for line in table[2:5]:
        assert line[starts[1]:].strip() == "lenovo-1"


def test_query_json_types(db: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["query", "SELECT started_at, min_duration_met, rouge1 FROM run_summary WHERE mode = 'performance'",
                 "--db", str(db), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row == {"started_at": "2025-07-28T15:17:09", "min_duration_met": True, "rouge1": 44.758}


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, mlperf_logs_dir: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "orin"
    shutil.copytree(mlperf_logs_dir / ORIN, run)
    detail = run / "performance/run_1/mlperf_log_detail.txt"
    detail.write_text(detail.read_text()[:-40])
    db = tmp_path / "x.duckdb"
    assert main(["ingest", str(run), "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlperf-dagster ingest: error: ") and str(detail) in err and len(err.splitlines()) == 1
    assert not db.exists()  # parsing fails before the database is even created
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["ingest", str(empty), "--db", str(db)]) == 2
    assert "no LoadGen run found" in capsys.readouterr().err


def test_query_errors(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["query", "SELECT nope FROM run_summary", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "query failed" in err and "nope" in err and len(err.strip().splitlines()) == 1
    assert main(["query", "SELECT 1", "--db", str(tmp_path / "missing.duckdb")]) == 2
    assert "no such database" in capsys.readouterr().err


def test_console_script(db: Path) -> None:
    exe = Path(sys.executable).with_name("mlperf-dagster")
    if not exe.exists():
        pytest.skip(f"{exe} not installed (pip install -e .)")
    out = subprocess.run([str(exe), "query", "SELECT count(*) AS n FROM runs", "--db", str(db), "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"n": 3}]
    helptext = subprocess.run([str(exe), "ingest", "--help"], capture_output=True, text=True, timeout=120).stdout
    assert "submission tree" in helptext and "--node" in helptext
