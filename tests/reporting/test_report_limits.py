"""Every real run is judged by its own rules, in every chart and table of the report.

For each folder of ../shared/testdata/mlperf_logs (as shipped, flattened, and laid out as MLCommons publishes it):
the p99 limits each run is held to are the ones its own LoadGen summary states (MANIFEST.json literals:
`ttft_latency (ns)`, `tpot_latency (ns)`, and gpt-j's end-to-end `target_latency (ns)`), in the latency charts'
per-run limit markers, the summary table's `held to` column, the rules table and the dashboard's run view; the
accuracy targets are the ones of the run's own benchmark (the spec's targets table), in the ROUGE chart and the
accuracy verdicts; and no VALID run is shown as over a limit. A llama2-70b Server run (200 ms TPOT in its log) is
never drawn against llama3.1-8b's 100 ms, a llama2-70b Interactive run (450 ms / 40 ms) never against
llama3.1-8b Interactive's 500 ms / 30 ms.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from mlperf_assets import charts as ch
from mlperf_assets.reporting import build_report, load_summary
from support.reportdata import manifest_entries, published_store, shared_base, submission_store

# reference/mlperf_inference_llm_spec.md, "Targets": metric -> (minimum, maximum or None)
SPEC_TARGETS = {
    "llama3.1-8b": {"rouge1": (38.3914, None), "rouge2": (15.7484, None), "rougeL": (24.2507, None),
                    "rougeLsum": (35.4351, None), "gen_len": (7_350_880, 8_984_408)},
    "llama3.1-8b-edge": {"rouge1": (38.6694, None), "rouge2": (15.9536, None), "rougeL": (24.3911, None),
                         "rougeLsum": (35.7628, None), "gen_len": (2_746_002, 3_356_224)},
    "gptj-99": {"rouge1": (42.5566, None), "rouge2": (19.9223, None), "rougeL": (29.6882, None),
                "gen_len": (3_615_190, None)},
    "gptj-99.9": {"rouge1": (42.9435, None), "rouge2": (20.1034, None), "rougeL": (29.9581, None),
                  "gen_len": (3_615_190, None)},
}
# benchmark folder names of the shared logs -> the spec's target row (None: no target in the spec)
FOLDER_BENCHMARKS = {"gptj-99": "gptj-99", "gptj-99.9": "gptj-99.9", "llama3.1-8b": "llama3.1-8b",
                     "llama3_1-8b": "llama3.1-8b", "llama3.1-8b-edge": "llama3.1-8b-edge",
                     "llama3_1-8b-edge": "llama3.1-8b-edge", "llama2-70b-99": None, "llama2-70b-99.9": None,
                     "mixtral-8x7b": None}


@pytest.fixture(scope="module", params=["flat", "tree"])
def layout(request, tmp_path_factory, mlperf_logs_dir: Path):
    base = shared_base(tmp_path_factory)
    db = submission_store(base, mlperf_logs_dir) if request.param == "flat" else published_store(base, mlperf_logs_dir)
    return request.param, db


@pytest.fixture(scope="module")
def summary(layout):
    return load_summary(layout[1])


@pytest.fixture(scope="module")
def report(layout, tmp_path_factory):
    return build_report(layout[1], tmp_path_factory.mktemp(f"report-limits-{layout[0]}"))


def cases(mlperf_logs_dir: Path) -> list[dict]:
    """What each real run must be held to, from MANIFEST.json alone."""
    out = []
    for entry in manifest_entries(mlperf_logs_dir):
        literal = entry["summaries"]["performance/run_1/mlperf_log_summary.txt"]
        limits: dict[str, float] = {}
        if literal["Scenario"] == "Server":
            if "ttft_latency (ns)" in literal:
                limits = {"ttft": int(literal["ttft_latency (ns)"]) / 1e6, "tpot": int(literal["tpot_latency (ns)"]) / 1e6}
            elif int(literal.get("target_latency (ns)", "0")) > 0:
                limits = {"latency": int(literal["target_latency (ns)"]) / 1e6}
        p99 = {"ttft": literal.get("99.00 percentile first token latency (ns)"),
               "tpot": literal.get("99.00 percentile time to output token (ns)"),
               "latency": literal.get("99.00 percentile latency (ns)")}
        folder_benchmark = entry["folder"].split("__")[2]
        accuracy = ast.literal_eval(entry["accuracy_txt"]["results_line"])
        out.append({
            "folder": entry["folder"], "results_dir": entry["results_dir"], "limits": limits,
            "p99_ms": {k: int(v) / 1e6 for k, v in p99.items() if v is not None},
            "interactive": entry["folder"].endswith("__Interactive"),
            "target": FOLDER_BENCHMARKS[folder_benchmark], "accuracy": {k: float(v) for k, v in accuracy.items()},
        })
    return out


def run_row(summary, case: dict, sub: str = "performance/run_1") -> dict:
    suffixes = (f"/{case['folder']}/{sub}", f"/{case['results_dir']}/{sub}")
    rows = summary[[str(p).endswith(suffixes) for p in summary["source_path"]]]
    assert len(rows) == 1, (case["folder"], sub, len(rows))
    return rows.iloc[0].to_dict()


def markers(fig, name: str = "p99 limit (each run's own)") -> dict[str, dict[str, float]]:
    """yaxis -> {run label: limit} of the per-run limit markers."""
    found: dict[str, dict[str, float]] = {}
    for trace in fig.data:
        if trace.name == name:
            found.setdefault(trace.yaxis or "y", {}).update(zip(trace.x, trace.y))
    return found


def test_the_limits_each_run_is_held_to_are_its_own(summary, mlperf_logs_dir: Path) -> None:
    all_cases = cases(mlperf_logs_dir)
    assert len(all_cases) == 12
    lenovo = next(c for c in all_cases if "llama2-70b-99.9__Server" in c["folder"])
    assert lenovo["limits"] == {"ttft": 2000.0, "tpot": 200.0}  # not llama3.1-8b's 100 ms
    for case in all_cases:
        row = run_row(summary, case)
        rules = ch.latency_rules(row)
        assert rules.as_dict() == case["limits"], case["folder"]
        if case["limits"]:
            assert rules.source == "LoadGen log", case["folder"]
        assert ch.scenario_kind(row) == ("Interactive" if case["interactive"] else row["scenario"]), case["folder"]
        for name, limit in case["limits"].items():  # every run here is VALID: within its own limits
            assert case["p99_ms"][name] <= limit, (case["folder"], name)


def test_latency_charts_draw_each_run_against_its_own_limits(summary, mlperf_logs_dir: Path) -> None:
    server = ch.server_latency_vs_limits(summary)
    latency = ch.latency_percentiles(summary)
    server_markers, latency_markers = markers(server.figure), markers(latency.figure)
    token_cases = [c for c in cases(mlperf_logs_dir) if "ttft" in c["limits"]]
    e2e_cases = [c for c in cases(mlperf_logs_dir) if "latency" in c["limits"]]
    assert len(token_cases) == 4 and len(e2e_cases) == 2
    for case in token_cases:
        label = ch.run_label(run_row(summary, case))
        assert server_markers["y"][label] == case["limits"]["ttft"], case["folder"]
        assert server_markers["y2"][label] == case["limits"]["tpot"], case["folder"]
    for case in e2e_cases:  # gpt-j Server: the end-to-end target latency of its log, in the latency chart
        assert latency_markers["y"][ch.run_label(run_row(summary, case))] == case["limits"]["latency"]
    assert len(server_markers["y"]) == len(server_markers["y2"]) == len(token_cases)  # no other run has a marker
    assert len(latency_markers["y"]) == len(e2e_cases)
    # the hover of each p99 point says it is within its own limit, never over
    texts = [t for trace in server.figure.data + latency.figure.data for t in (trace.hovertext or [])]
    assert not any("OVER" in t for t in texts)
    assert sum("within its p99 limit" in t for t in texts) == 2 * len(token_cases) + len(e2e_cases)
    assert any("within its p99 limit 200 ms (LoadGen log)" in t for t in texts)  # llama2-70b Server's TPOT
    # the PNGs draw the same markers
    for chart in (server, latency):
        drawn = [c for ax in chart.mpl.axes for c in ax.collections if c.get_offsets().shape[0] and
                 tuple(c.get_edgecolor()[0][:3]) == tuple(int(ch.LIMIT_COLOR[i:i + 2], 16) / 255 for i in (1, 3, 5))]
        ys = sorted(float(y) for c in drawn for _, y in c.get_offsets())
        expected = sorted(v for m in markers(chart.figure).values() for v in m.values())
        assert ys == pytest.approx(expected)


def test_tables_say_which_limits_and_targets_each_run_was_held_to(summary, report, mlperf_logs_dir: Path) -> None:
    table = ch.summary_table(summary)
    text = report.report_path.read_text()
    for case in cases(mlperf_logs_dir):
        row = run_row(summary, case)
        mine = table[(table["node"] == row["node"]) & (table["scenario"] == ch.scenario_kind(row))]
        assert len(mine) == 1, case["folder"]
        held = mine.iloc[0]["held to (p99 limits)"]
        if "ttft" in case["limits"]:
            expected = (f"TTFT {ch.fmt_limit(case['limits']['ttft'])} ms · TPOT {ch.fmt_limit(case['limits']['tpot'])}"
                        " ms (LoadGen log)")
        elif case["limits"]:
            expected = f"latency {ch.fmt_limit(case['limits']['latency'])} ms (LoadGen log)"
        else:
            expected = f"none ({row['scenario']})"
        assert held == expected, case["folder"]
        assert f"| {expected} |" in text, case["folder"]  # in report.md's summary and rules tables
        # accuracy: judged against the run's own benchmark's targets (spec), no verdict without a known target
        target = SPEC_TARGETS.get(case["target"])
        if target is None:
            verdict = "–"
        else:
            ok = all(case["accuracy"][m] >= low and (high is None or case["accuracy"][m] <= high)
                     for m, (low, high) in target.items())
            verdict = "PASS" if ok else "FAIL"
        assert mine.iloc[0]["accuracy"] == verdict, case["folder"]
    assert "TTFT 2,000 ms · TPOT 200 ms (LoadGen log)" in text and "TTFT 450 ms · TPOT 40 ms (LoadGen log)" in text
    section = text.split("## Rules each run is held to", 1)[1].split("\n## ", 1)[0]
    assert "none known for llama2-70b" in section and "none known for mixtral-8x7b" in section
    assert "gptj-99.9 (99.9% of the reference): rouge1 ≥ 42.9435" in section


def test_rouge_chart_holds_each_run_to_its_own_benchmark(summary, mlperf_logs_dir: Path) -> None:
    chart = ch.rouge_vs_target(summary)
    targets = {}  # run id -> the rouge1 target its point's hover names
    for trace in chart.figure.data:
        if trace.xaxis == "x" and trace.customdata is not None and "target" not in trace.name:
            targets.update({c[0]: trace.meta[1] for c in trace.customdata})
    for case in cases(mlperf_logs_dir):
        row = run_row(summary, case, "accuracy")
        target = SPEC_TARGETS.get(case["target"])
        expected = "none known" if target is None else f"≥ {target['rouge1'][0]:.4f}"
        assert targets[row["run_id"]] == expected, case["folder"]
    # one target line per benchmark that has one, at the spec's minimum
    lines = {t.name: t.y[0] for t in chart.figure.data if t.xaxis == "x" and "target" in t.name}
    assert lines == {"llama3.1-8b target (99.0%)": pytest.approx(38.3914, abs=1e-4),
                     "llama3.1-8b-edge target (99.0%)": pytest.approx(38.6694, abs=1e-4),
                     "gptj-99 target (99.0%)": pytest.approx(42.5566, abs=1e-4),
                     "gptj-99.9 target (99.9%)": pytest.approx(42.9435, abs=1e-4)}


def test_dashboard_run_view_shows_each_runs_own_limits(summary, report, mlperf_logs_dir: Path) -> None:
    page = report.dashboard_path.read_text()
    data = re.search(r'<script type="application/json" id="dashboard-data">(.*?)</script>', page, re.S).group(1)
    runs = {r["id"]: r for r in json.loads(data.replace("<\\/", "</"))["runs"]}
    for case in cases(mlperf_logs_dir):
        view = runs[run_row(summary, case)["run_id"]]
        assert (view["limits"] or {}) == case["limits"], case["folder"]
        assert view["limits_source"] == ("LoadGen log" if case["limits"] else None)
        held = dict(view["details"])["held to (p99 limits)"]
        assert ("LoadGen log" in held) == bool(case["limits"]), case["folder"]
