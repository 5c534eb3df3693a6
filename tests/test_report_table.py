"""The pure markdown report (mlperf_assets.report): figures formatted by hand-checked rules, caveats present."""

from __future__ import annotations

import math
from datetime import datetime

from mlperf_assets.report import build_report, summary_table

ROW = {
    "node": "jw2", "scenario": "Server", "backend": "vllm", "backend_kind": "model", "result_validity": "VALID",
    "samples_per_second": 12.3456, "tokens_per_second": 1234.5, "ttft_p99_ns": 1_500_000_000, "tpot_p99_ns": 45_678_901,
    "latency_p99_ns": 9_000_000_000, "rouge1": 38.91234, "rouge2": 15.5, "rougeL": 24.0, "accuracy_passed": True,
    "harness_run_id": "20261128T020000Z-jw2-Server-abcd1234",
}  # fmt: skip


def test_summary_row_formats_units_and_missing_values():
    baseline = {**ROW, "node": "local", "backend": "extractive", "backend_kind": "baseline",
                "ttft_p99_ns": None, "tpot_p99_ns": math.nan, "rouge1": None, "accuracy_passed": None}  # fmt: skip
    lines = summary_table([ROW, baseline]).splitlines()
    assert lines[2] == (
        "| jw2 | Server | vllm | VALID | 12.35 | 1,234.50 | 1,500.000 | 45.679 | 9,000.000 | 38.9123 | 15.5000 "
        "| 24.0000 | pass | `20261128T020000Z-jw2-Server-abcd1234` |"
    )
    cells = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert cells[2] == "extractive (baseline)"
    assert (cells[6], cells[7], cells[9], cells[12]) == ("-", "-", "-", "-")


def test_report_labels_baselines_and_invalid_runs():
    rows = [{**ROW, "backend": "extractive", "backend_kind": "baseline", "result_validity": "INVALID"}]
    text = build_report(rows, generated_at=datetime(2026, 11, 28, 2, 0, 0), context_lines=["Config: `x.yaml`."])
    assert text.startswith("# MLPerf Inference benchmark report\n\nGenerated 2026-11-28 02:00:00 UTC.\nConfig: `x.yaml`.\n")
    assert "not from a language model" in text
    assert "LoadGen judged jw2/Server INVALID" in text
    empty = build_report([], generated_at=datetime(2026, 1, 1))
    assert "No benchmark runs in the results store yet" in empty and "## Notes" not in empty
