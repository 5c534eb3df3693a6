"""The report's text helpers (mlperf_assets.reporting.text): figures formatted by hand-checked rules, caveats present."""

from __future__ import annotations

import math

from mlperf_assets.charts import backend_label
from mlperf_assets.reporting.text import fmt_bool, fmt_ms, fmt_number, notes_section

ROW = {"node": "jw2", "scenario": "Server", "backend": "vllm", "backend_kind": "model", "result_validity": "VALID"}


def test_figures_format_units_and_missing_values():
    assert fmt_ms(1_500_000_000) == "1,500.000"
    assert fmt_ms(45_678_901) == "45.679"
    assert fmt_number(1234.5) == "1,234.50"
    assert [fmt_ms(None), fmt_ms(math.nan), fmt_number(None), fmt_bool(None)] == ["-", "-", "-", "-"]
    assert (fmt_bool(True), fmt_bool(False)) == ("pass", "FAIL")
    assert backend_label(ROW) == "vllm"
    assert backend_label({**ROW, "backend": "extractive", "backend_kind": "baseline"}) == "extractive (baseline)"
    assert backend_label({**ROW, "backend": "replay", "backend_kind": "harness-ceiling"}) == "replay (harness ceiling)"


def test_caveats_label_baselines_and_invalid_runs():
    notes = notes_section([{**ROW, "backend": "extractive", "backend_kind": "baseline", "result_validity": "INVALID"}])
    assert notes.startswith("## Notes\n")
    assert "not from a language model" in notes
    assert "LoadGen judged jw2/Server INVALID" in notes
    assert notes_section([ROW]) == ""
