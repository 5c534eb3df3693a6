"""Parsers of LoadGen logs, checked against the real submission logs in ../shared and their MANIFEST.json."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from mlperf_assets import loadgen_logs as ll


@pytest.fixture(scope="module")
def manifest(mlperf_logs_dir: Path) -> list[dict]:
    return json.loads((mlperf_logs_dir / "MANIFEST.json").read_text())


# ------------------------------------------------------------------------------------------ detail


def test_detail_logs_match_manifest(mlperf_logs_dir: Path, manifest: list[dict]) -> None:
    checked = 0
    for entry in manifest:
        for rel, exp in entry["details"].items():
            log = ll.parse_detail_log(mlperf_logs_dir / entry["folder"] / rel)
            assert len(log.events) == exp["mllog_lines"], rel
            assert log.non_mllog_lines == exp["non_mllog_lines"]
            assert len(log.warnings) == exp["is_warning_events"]
            assert len(log.errors) == exp["is_error_events"]
            for key, value in exp["values"].items():
                assert log.values[key] == value, (entry["folder"], rel, key)
            checked += 1
    assert checked >= 25


def test_detail_log_keeps_duplicated_lines_and_first_values(tmp_path: Path, mlperf_logs_dir: Path) -> None:
    src = mlperf_logs_dir / "ntuhpc-v5.1__Cisco-C885_H200x8_TRT__llama3.1-8b__Offline/performance/run_1/mlperf_log_detail.txt"
    lines = src.read_text().splitlines()
    doubled = tmp_path / "mlperf_log_detail.txt"
    # every line twice, CRLF endings, one noise line in the middle
    body = []
    for i, ln in enumerate(lines):
        body += [ln, ln]
        if i == 10:
            body.append("some stray console output")
    doubled.write_bytes(("\r\n".join(body) + "\r\n").encode())
    log = ll.parse_detail_log(doubled)
    assert len(log.events) == 2 * len([ln for ln in lines if ln.strip()])
    assert log.non_mllog_lines == 1
    assert log.values["result_tokens_per_second"] == 58304.3
    assert log.values["effective_scenario"] == "Offline"


def test_truncated_detail_log_names_file_and_line(tmp_path: Path, mlperf_logs_dir: Path) -> None:
    src = mlperf_logs_dir / "mlc-v4.1__NVIDIA-Orin_TRT__gptj-99__SingleStream/performance/run_1/mlperf_log_detail.txt"
    text = src.read_text()
    cut = tmp_path / "mlperf_log_detail.txt"
    cut.write_text(text[: len(text) - 60])
    n_lines = cut.read_text().count("\n") + 1
    with pytest.raises(ll.LogFormatError) as err:
        ll.parse_detail_log(cut)
    msg = str(err.value)
    assert str(cut) in msg and f":{n_lines}:" in msg and "truncated" in msg
    assert "\n" not in msg


def test_detail_log_that_is_not_a_loadgen_log(tmp_path: Path) -> None:
    p = tmp_path / "mlperf_log_detail.txt"
    p.write_text("Traceback (most recent call last):\n  oops\n")
    with pytest.raises(ll.LogFormatError, match="not a LoadGen detail log"):
        ll.parse_detail_log(p)


# ----------------------------------------------------------------------------------------- summary


def test_summary_logs_match_manifest(mlperf_logs_dir: Path, manifest: list[dict]) -> None:
    for entry in manifest:
        for rel, exp in entry["summaries"].items():
            s = ll.parse_summary_log(mlperf_logs_dir / entry["folder"] / rel)
            assert s.scenario == exp["Scenario"]
            assert s.mode == exp["Mode"]
            assert s.result_validity == exp["Result is"]
            for label, value in exp.items():
                assert s.fields[label] == value, (entry["folder"], rel, label)


@pytest.mark.parametrize(
    ("line", "name", "value"),
    [
        ("90th percentile latency (ns) : 4149771822", "latency_p90_ns", "4149771822"),  # loadgen 4.x
        ("90.0th percentile latency (ns) : 3545895439", "latency_p90_ns", "3545895439"),  # 5.x
        ("90.0th first token percentile latency (ns) : 245686253", "ttft_p90_ns", "245686253"),
        ("99.90 percentile latency (ns)   : 3567687598", "latency_p999_ns", "3567687598"),
        ("Tokens per second (inferred): 19739.8", "inferred_tokens_per_second", "19739.8"),
        ("Completed tokens per second (inferred): 113.74", "inferred_completed_tokens_per_second", "113.74"),
        ("Mean Time to Output Token (ns)               : 23714872", "tpot_mean_ns", "23714872"),  # 5.x
        ("Mean Time per Output Token (ns)               : 34999429", "tpot_mean_ns", "34999429"),  # 6.0
        ("99.00 percentile time per output token (ns)   : 26070647", "tpot_p99_ns", "26070647"),
        ("TPS w/o loadgen overhead        : 37.73", "tps_without_loadgen_overhead", "37.73"),
        ("ttft_latency (ns): 2000000000", "ttft_latency_ns", "2000000000"),
    ],
)
def test_summary_label_variants(tmp_path: Path, line: str, name: str, value: str) -> None:
    p = tmp_path / "mlperf_log_summary.txt"
    p.write_text(f"MLPerf Results Summary\nScenario : Server\nMode     : PerformanceOnly\n{line} \nResult is : VALID\n")
    s = ll.parse_summary_log(p)
    assert s.figures[name] == value


def test_summary_garbage_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "mlperf_log_summary.txt"
    p.write_text("\x00\x01 binary junk\n")
    with pytest.raises(ll.LogFormatError, match="not a LoadGen summary"):
        ll.parse_summary_log(p)


# ------------------------------------------------------------------------------------ accuracy files


def test_accuracy_txt_matches_manifest(mlperf_logs_dir: Path, manifest: list[dict]) -> None:
    for entry in manifest:
        acc = ll.parse_accuracy_txt(mlperf_logs_dir / entry["folder"] / "accuracy/accuracy.txt")
        expected = ast.literal_eval(entry["accuracy_txt"]["results_line"])
        assert acc.results == {k: float(v) if isinstance(v, str) else v for k, v in expected.items()}
        # quoted values keep their printed form
        assert all(acc.raw[k] == str(v) for k, v in expected.items())
        assert acc.hash == entry["accuracy_txt"]["hash"]


def test_accuracy_txt_amid_noise_cr_and_non_ascii(tmp_path: Path) -> None:
    p = tmp_path / "accuracy.txt"
    p.write_bytes(
        b"Downloading \xe2\x96\x88\xe2\x96\x88 50%\r Downloading 100%\r\n\xff\xfe stray bytes\n"
        b"{'python': 486, 'php': 828}\nResults\n\n"
        b"{'rouge1': np.float64(38.7321), 'rouge2': '15.8955', 'rougeL': 24.4599, 'rougeLsum': '35.7408', "
        b"'gen_len': 8209736, 'gen_num': 13368}\r\n\r\nhash=" + b"a" * 64 + b"\r\n"
    )
    acc = ll.parse_accuracy_txt(p)
    assert acc.results == {"rouge1": 38.7321, "rouge2": 15.8955, "rougeL": 24.4599, "rougeLsum": 35.7408,
                           "gen_len": 8209736, "gen_num": 13368}
    assert acc.hash == "a" * 64


def test_accuracy_txt_without_results(tmp_path: Path) -> None:
    p = tmp_path / "accuracy.txt"
    p.write_text("INFO: nothing here\n")
    with pytest.raises(ll.LogFormatError, match="no Results dict"):
        ll.parse_accuracy_txt(p)


def test_complete_accuracy_logs(mlperf_logs_dir: Path) -> None:
    logs = sorted(mlperf_logs_dir.glob("*/compliance/TEST06/accuracy/mlperf_log_accuracy.json"))
    assert logs
    for p in logs:
        raw = json.loads(p.read_text())
        log = ll.parse_accuracy_log(p)
        assert log.state == "complete"
        assert log.qsl_idx == [e["qsl_idx"] for e in raw]
        assert log.token_count == [e["token_count"] for e in raw]
        assert log.data_bytes == [len(e["data"]) // 2 for e in raw]


def test_submission_truncated_accuracy_log_is_recognised(mlperf_logs_dir: Path) -> None:
    p = mlperf_logs_dir / "mlc-v4.1__NVIDIA-DGX-H100_H100-SXM-80GBx8_TRT__gptj-99.9__Offline/accuracy/mlperf_log_accuracy.json"
    log = ll.parse_accuracy_log(p)
    assert log.state == "submission-truncated"
    assert log.samples == 0  # never half-parsed


def test_cut_accuracy_log_is_an_error(tmp_path: Path, mlperf_logs_dir: Path) -> None:
    src = next(mlperf_logs_dir.glob("*/compliance/TEST06/accuracy/mlperf_log_accuracy.json"))
    text = src.read_text()
    p = tmp_path / "mlperf_log_accuracy.json"
    p.write_text(text[: len(text) // 2])
    with pytest.raises(ll.LogFormatError) as err:
        ll.parse_accuracy_log(p)
    assert str(p) in str(err.value) and "not a complete LoadGen accuracy log" in str(err.value)


def test_empty_performance_accuracy_log(tmp_path: Path) -> None:
    p = tmp_path / "mlperf_log_accuracy.json"
    p.write_text("[\n]\n")
    assert ll.parse_accuracy_log(p).state == "empty"


def test_verify_accuracy(mlperf_logs_dir: Path, manifest: list[dict], tmp_path: Path) -> None:
    for entry in manifest:
        for rel, text in entry["verify_accuracy"].items():
            v = ll.parse_verify_accuracy(mlperf_logs_dir / entry["folder"] / rel)
            assert v.complete
            assert v.passed
            assert set(v.checks) == {ln.split(" pass:")[0] for ln in text.splitlines() if " pass:" in ln}
    bad = tmp_path / "verify_accuracy.txt"
    bad.write_text("First token check pass: True\nEOS check pass: False\nTEST06 verification complete\n")
    assert not ll.parse_verify_accuracy(bad).passed


# -------------------------------------------------------------------------------------- paths, runs


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/x/closed/Intel/results/1-node-2S-GNR_128C/llama3_1-8b/Server/performance/run_1",
         ("closed", "Intel", "1-node-2S-GNR_128C", "llama3.1-8b", "Server")),
        ("/x/open/GATEOverflow/results/RTX4090x2/llama3_1-8b-edge/offline/accuracy",
         ("open", "GATEOverflow", "RTX4090x2", "llama3.1-8b-edge", "Offline")),
        ("/x/closed/Dell/compliance/XE9680L/llama3.1-8b/Interactive/TEST06",
         ("closed", "Dell", "XE9680L", "llama3.1-8b", "Interactive")),
    ],
)
def test_path_info_from_submission_trees(path: str, expected: tuple) -> None:
    info = ll.path_info(path)
    assert (info.division, info.submitter, info.system, info.benchmark, info.scenario_dir) == expected


def test_results_and_compliance_share_a_group() -> None:
    a = ll.path_info("/x/closed/Dell/results/XE/llama3.1-8b/Interactive/performance/run_1")
    b = ll.path_info("/x/closed/Dell/compliance/XE/llama3.1-8b/Interactive/TEST06")
    assert a.group_key == b.group_key


def test_discover_runs_finds_every_run(mlperf_logs_dir: Path, manifest: list[dict]) -> None:
    expected = set()
    for entry in manifest:
        for f in entry["files"]:
            if Path(f["rel"]).name in ("mlperf_log_detail.txt", "mlperf_log_summary.txt", "verify_accuracy.txt"):
                expected.add(mlperf_logs_dir / entry["folder"] / Path(f["rel"]).parent)
    assert set(ll.discover_runs(mlperf_logs_dir)) == expected


def test_discover_runs_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ll.NoRunsFoundError, match="no LoadGen run found"):
        ll.discover_runs(tmp_path)


def test_interactive_told_apart_by_settings_when_path_is_silent(tmp_path: Path, mlperf_logs_dir: Path) -> None:
    src = mlperf_logs_dir / "ntuhpc-v5.1__Dell-XE9680L_B200_SXM_180GBx8_TRT__llama3.1-8b__Interactive/performance/run_1"
    run = tmp_path / "somewhere" / "run_a"
    shutil.copytree(src, run)
    row = ll.parse_run(run).row
    assert row["scenario"] == "Server" and row["scenario_label"] == "Interactive"
    server = mlperf_logs_dir / "ntuhpc-v5.1__Intel-1-node-2S-GNR_128C__llama3_1-8b__Server/performance/run_1"
    shutil.copytree(server, tmp_path / "run_b")
    assert ll.parse_run(tmp_path / "run_b").row["scenario_label"] == "Server"


def test_result_token_throughput_is_ignored(mlperf_logs_dir: Path) -> None:
    run = mlperf_logs_dir / "ntuhpc-v5.1__Dell-XE9680L_B200_SXM_180GBx8_TRT__llama3.1-8b__Interactive/performance/run_1"
    row = ll.parse_run(run).row
    # the detail log's result_token_throughput is 4.1052e-08; the summary's completed tokens/s is 102906.82
    assert row["tokens_per_second"] == pytest.approx(102906.82)
    assert row["completed_tokens_per_second"] == pytest.approx(102906.82)


def test_accuracy_log_bad_entry_is_named(tmp_path: Path) -> None:
    p = tmp_path / "mlperf_log_accuracy.json"
    p.write_text('[\n{ "seq_id" : 0, "qsl_idx" : 5, "data" : "0100000002000000" },\n'
                 '{ "seq_id" : 1, "qsl_idx" : 6, "data" : "010" }\n]\n')
    with pytest.raises(ll.LogFormatError, match=r"entry 1 \(qsl_idx 6\): 'data' is not a hex string"):
        ll.parse_accuracy_log(p)
    p.write_text('[{"seq_id": 0, "qsl_idx": 5, "data": "01000000", "token_count": 1},\n'
                 ' {"seq_id": 1, "qsl_idx": 5, "data": "0200000003000000", "token_count": 2}]')
    log = ll.parse_accuracy_log(p)
    assert (log.samples, log.unique_samples, log.data_bytes, log.token_count) == (2, 1, [4, 8], [1, 2])


def test_samples_jsonl_bad_record_is_named(tmp_path: Path) -> None:
    p = tmp_path / "samples.jsonl"
    p.write_text('{"qsl_idx": 1, "issue_ns": 5, "first_token_ns": null, "complete_ns": 9, "output_tokens": 3}\n'
                 '{"qsl_idx": 2, "issue_ns": "soon", "first_token_ns": 6, "complete_ns": 9, "output_tokens": 3}\n')
    with pytest.raises(ll.LogFormatError, match="record 2"):
        ll.parse_samples_jsonl(p)
    p.write_text('{"qsl_idx": 1, "issue_ns": 5, "first_token_ns": null, "complete_ns": 9, "output_tokens": 3}\n')
    st = ll.parse_samples_jsonl(p)
    assert (st.qsl_idx, st.first_token_ns, st.complete_ns) == ([1], [None], [9])
