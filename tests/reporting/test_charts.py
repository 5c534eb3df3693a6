"""Chart builders on a real store: the MLPerf submission logs of ../shared plus real harness runs (LoadGen).

Expected values come from the logs themselves (MANIFEST.md literals) or from the harness's own files
(samples.jsonl, progress.jsonl), never from the chart code.
"""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path

import pytest

from mlperf_assets import charts as ch
from mlperf_assets.reporting import load_summary
from support.reportdata import full_store, harness_runs, shared_base, submission_store


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return shared_base(tmp_path_factory)


@pytest.fixture(scope="module")
def db(base: Path, mlperf_logs_dir: Path, stories_dir: Path) -> Path:
    return full_store(base, mlperf_logs_dir, stories_dir)


@pytest.fixture(scope="module")
def summary(db: Path):
    return load_summary(db)


@pytest.fixture(scope="module")
def runs(base: Path, stories_dir: Path) -> dict:
    return harness_runs(base, stories_dir)


def all_y(fig) -> list[float]:
    return [float(y) for trace in fig.data for y in (trace.y if trace.y is not None else []) if y is not None]


def png_size(chart: ch.Chart) -> tuple[int, int]:
    import matplotlib.image as mpimg

    data = chart.png()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(io.BytesIO(data), format="png")
    return image.shape[1], image.shape[0]


def mpl_labels(chart: ch.Chart) -> list[str]:
    return [ax.get_ylabel() for ax in chart.mpl.axes]


LIMIT_TRACE = "p99 limit (each run's own)"


def limit_markers(fig, yaxis: str) -> dict[str, float]:
    """x label (run) -> the p99 limit marker drawn for that run in the panel of `yaxis`."""
    found: dict[str, float] = {}
    for trace in fig.data:
        if trace.name == LIMIT_TRACE and (trace.yaxis or "y") == yaxis:
            found.update(zip(trace.x, trace.y))
    return found


def marker_of(markers: dict[str, float], system: str) -> float:
    (value,) = [v for x, v in markers.items() if x.startswith(system)]
    return value


# Literal values from ../shared/testdata/mlperf_logs/MANIFEST.md (performance/run_1 summaries)
DELL_INTERACTIVE_TPS = 102906.82
CISCO_OFFLINE_TPS = 58304.3
INTEL_GNR_TTFT_P99_NS = 1740584245
INTEL_GNR_TPOT_P99_NS = 94509649
CISCO_P99_LATENCY_NS = 1001488266732
CISCO_ROUGE1 = 38.732
LLAMA_ROUGE1_99 = 0.99 * 38.7792  # spec: 99% of the reference


def test_throughput_over_time(summary, runs) -> None:
    chart = ch.throughput_over_time(summary)
    assert chart.available
    ys = all_y(chart.figure)
    assert any(y == pytest.approx(DELL_INTERACTIVE_TPS, rel=1e-4) for y in ys)
    assert any(y == pytest.approx(CISCO_OFFLINE_TPS, rel=1e-4) for y in ys)
    names = [t.name for t in chart.figure.data]
    # one series per node/scenario/benchmark/backend: the two replay nights of node-a share one line
    node_a = [t for t in chart.figure.data if t.name.startswith("node-a")]
    assert len(node_a) == 1 and len(node_a[0].y) == 2
    assert node_a[0].name.endswith("(harness ceiling)")
    assert any(n.startswith("node-b") and n.endswith("(baseline)") for n in names)
    for rid_node, folder in runs.items():  # every harness run's tokens/s, from its own summary file
        text = (folder / "mlperf_log_summary.txt").read_text()
        line = next(x for x in text.splitlines() if "tokens per second" in x.lower())
        assert any(y == pytest.approx(float(line.split(":")[1]), rel=1e-3) for y in ys), rid_node
    # the gpt-j SingleStream submission reports no tokens/s: it has no point
    assert not any("NVIDIA-Orin" in n for n in names)
    assert "tokens/s" in chart.figure.layout.yaxis.title.text
    assert chart.figure.layout.yaxis.type == "log"  # 37 to 100k tokens/s
    assert "tokens/s" in mpl_labels(chart)[0]
    assert len(chart.mpl.axes[0].get_lines()) == len(chart.figure.data)
    width, height = png_size(chart)
    assert width >= 900 and height >= 400


def test_server_latency_against_limits(summary) -> None:
    chart = ch.server_latency_vs_limits(summary)
    assert chart.available
    fig = chart.figure
    assert fig.layout.yaxis.title.text.startswith("TTFT (ms")
    assert fig.layout.yaxis2.title.text.startswith("TPOT (ms")
    ys = all_y(fig)
    assert any(y == pytest.approx(INTEL_GNR_TTFT_P99_NS / 1e6) for y in ys)  # shown in ms
    assert any(y == pytest.approx(INTEL_GNR_TPOT_P99_NS / 1e6) for y in ys)
    symbols = {t.name: t.marker.symbol for t in fig.data if t.name in ("p50", "p90", "p99")}
    assert set(symbols) == {"p50", "p90", "p99"}
    # Each run's own p99 limits, as its LoadGen log states them (MANIFEST.md: ttft_latency / tpot_latency (ns)):
    # llama3.1-8b Server 2 s / 100 ms, llama3.1-8b Interactive 0.5 s / 30 ms, llama2-70b Server 2 s / 200 ms,
    # llama2-70b Interactive (v6.0) 450 ms / 40 ms; the harness's replay runs ran as llama3_1-8b Server.
    ttft, tpot = limit_markers(fig, "y"), limit_markers(fig, "y2")
    expected = {"Intel-1-node-2S-GNR_128C": (2000.0, 100.0), "Dell-XE9680L_B200_SXM_180GBx8_TRT": (500.0, 30.0),
                "Lenovo-SR680a_V3_B200SXMx8_TRT": (2000.0, 200.0), "AMD-8xMI355X_2xEPYC_9575F": (450.0, 40.0),
                "node-a": (2000.0, 100.0)}
    for system, (ttft_ms, tpot_ms) in expected.items():
        assert marker_of(ttft, system) == ttft_ms and marker_of(tpot, system) == tpot_ms, system
    assert len(ttft) == len(tpot) == len(expected)  # one marker per run and panel
    assert "Interactive" in " ".join(chart.notes) and "LoadGen log" in " ".join(chart.notes)
    # Server runs only: no Offline system appears
    xs = {x for t in fig.data for x in (t.x or []) if x}
    assert not any("Cisco" in x for x in xs) and any("Intel-1-node-2S-GNR" in x for x in xs)
    assert [lbl.split(" (")[0] for lbl in mpl_labels(chart)] == ["TTFT", "TPOT"]
    assert all("(ms" in lbl for lbl in mpl_labels(chart))
    png_size(chart)


def test_latency_percentiles(summary) -> None:
    chart = ch.latency_percentiles(summary)
    assert chart.available
    assert any(y == pytest.approx(CISCO_P99_LATENCY_NS / 1e6) for y in all_y(chart.figure))
    assert "(ms" in chart.figure.layout.yaxis.title.text
    assert "(ms" in mpl_labels(chart)[0]
    png_size(chart)


def test_rouge_against_targets(summary) -> None:
    chart = ch.rouge_vs_target(summary)
    assert chart.available
    fig = chart.figure
    assert [fig.layout[f"yaxis{i or ''}"].title.text.split()[0] for i in ("", 2, 3, 4)] == [
        "rouge1", "rouge2", "rougeL", "rougeLsum"]
    node_traces = [t for t in fig.data if "target" not in t.name and t.xaxis == "x"]
    assert any(y == pytest.approx(CISCO_ROUGE1) for t in node_traces for y in t.y)
    targets = {t.name: set(t.y) for t in fig.data if "target" in t.name and t.xaxis == "x"}
    # each benchmark's own minimum (spec: llama3.1-8b 38.3914, -edge 38.6694, gptj-99 42.5566, gptj-99.9 42.9435)
    assert {name: round(next(iter(ys)), 4) for name, ys in targets.items()} == {
        "llama3.1-8b target (99.0%)": pytest.approx(LLAMA_ROUGE1_99, abs=1e-4),
        "llama3.1-8b-edge target (99.0%)": 38.6694, "gptj-99 target (99.0%)": 42.5566,
        "gptj-99.9 target (99.9%)": 42.9435}
    # llama2-70b and mixtral are not in our target table: said, not guessed
    assert any("llama2-70b" in note and "mixtral" in note for note in chart.notes)
    assert len(chart.mpl.axes) == 4
    png_size(chart)


def test_node_comparison_table(summary) -> None:
    chart = ch.node_comparison_table(summary)
    assert chart.available
    table = chart.table
    for column in ("validity", "accuracy", "tokens/s", "p99 TTFT (ms)", "p99 TPOT (ms)", "p99 latency (ms)",
                   "held to (p99 limits)"):
        assert column in table.columns
    header = [h.replace("<b>", "").replace("</b>", "") for h in chart.figure.data[0].header.values]
    assert header == list(table.columns)
    dell = table[table["node"] == "Dell-XE9680L_B200_SXM_180GBx8_TRT"].iloc[0]
    assert dell["scenario"] == "Interactive"
    assert dell["tokens/s"] == "102,906.8"
    assert dell["p99 TTFT (ms)"] == "328.9"  # 328857803 ns
    assert dell["accuracy"] == "PASS"  # 38.4887 >= 38.3914 ...
    assert dell["held to (p99 limits)"] == "TTFT 500 ms · TPOT 30 ms (LoadGen log)"
    # open-division edge run on 4761 samples: rouge2 15.9281 < 15.9536
    assert table[table["node"].str.startswith("GATEOverflow")].iloc[0]["accuracy"] == "FAIL"
    # the latest of node-a's two nights, labelled as the harness ceiling it is
    node_a = table[table["node"] == "node-a"]
    assert len(node_a) == 1 and node_a.iloc[0]["backend"] == "replay (harness ceiling)"
    assert node_a.iloc[0]["validity"] == "INVALID"  # a 300 ms run does not meet MLPerf's rules
    png_size(chart)


def test_latency_distribution_from_sample_timings(summary, runs) -> None:
    harness_rows = summary[summary["node"].isin(["node-a", "node-b"])]
    from mlperf_assets import store

    db_samples = store.query(load_db(summary), "SELECT * FROM sample_timings")
    chart = ch.latency_distribution(db_samples, harness_rows)
    assert chart.available and chart.needs_harness_data
    boxes = [t for t in chart.figure.data if t.type == "box"]
    # latency and TTFT/TPOT panels: 3 runs each (the Offline extractive run has no first-token times)
    folder = runs[("night-2", "node-a")]
    lines = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
    latencies_ms = [(x["complete_ns"] - x["issue_ns"]) / 1e6 for x in lines]
    ttfts_ms = [(x["first_token_ns"] - x["issue_ns"]) / 1e6 for x in lines]
    medians = [float(b.median[i]) for b in boxes for i, custom in enumerate(b.customdata)
               if custom[0] == "node-a-Server-night-2-performance"]
    assert len(medians) == 3  # latency, TTFT, TPOT
    assert len({x for b in boxes for x in b.x}) == 3  # three runs, kept apart even when started the same minute
    assert any(m == pytest.approx(statistics.median(latencies_ms), rel=1e-6) for m in medians)
    assert any(m == pytest.approx(statistics.median(ttfts_ms), rel=1e-6) for m in medians)
    assert {b.xaxis for b in boxes} == {"x", "x2", "x3"}
    assert chart.figure.layout.yaxis.title.text.startswith("latency (ms")
    assert chart.figure.layout.yaxis2.title.text.startswith("TTFT (ms")
    assert chart.figure.layout.yaxis3.title.text.startswith("TPOT (ms")
    assert [lbl.split(" (")[0] for lbl in mpl_labels(chart)] == ["latency", "TTFT", "TPOT"]
    png_size(chart)


def load_db(summary) -> Path:
    # every harness row's source folder lives under the shared base folder, beside the store
    folder = Path(summary[summary["node"] == "node-a"].iloc[0]["source_path"])
    return folder.parents[1] / "full.duckdb"


def test_throughput_timeline_from_progress(summary, runs) -> None:
    from mlperf_assets import store

    progress = store.query(load_db(summary), "SELECT * FROM progress")
    harness_rows = summary[summary["node"].isin(["node-a", "node-b"])]
    chart = ch.progress_timeline(progress, harness_rows)
    assert chart.available and chart.needs_harness_data
    assert len(chart.figure.data) == 3
    assert chart.figure.layout.xaxis.title.text == "elapsed (s)"
    assert chart.figure.layout.yaxis.title.text == "tokens/s"
    folder = runs[("night-1", "node-b")]
    final = [json.loads(x) for x in (folder / "progress.jsonl").read_text().splitlines()][-1]
    trace = next(t for t in chart.figure.data if t.name.startswith("node-b"))
    assert trace.x[-1] == pytest.approx(final["elapsed_s"]) and trace.y[-1] == pytest.approx(final["tokens_per_s"])
    assert chart.mpl.axes[0].get_xlabel() == "elapsed (s)"
    png_size(chart)


def test_colours_are_stable_per_node(summary) -> None:
    nodes = sorted(summary["node"].unique())
    colours = ch.node_colors(nodes)
    assert ch.node_colors(reversed(nodes)) == colours  # row order does not matter
    assert ch.node_colors(["node-a"])["node-a"] == ch.node_colors(["node-a", "node-b"])["node-a"]
    throughput = ch.throughput_over_time(summary, colours)
    rouge = ch.rouge_vs_target(summary, colors=colours)
    for fig in (throughput.figure, rouge.figure):
        for trace in fig.data:
            node = trace.name.split(" · ")[0]
            if node in colours:
                assert trace.marker.color == colours[node], trace.name


def test_submission_logs_alone(base: Path, mlperf_logs_dir: Path) -> None:
    summary = load_summary(submission_store(base, mlperf_logs_dir))
    charts = [ch.throughput_over_time(summary), ch.server_latency_vs_limits(summary), ch.latency_percentiles(summary),
              ch.rouge_vs_target(summary), ch.node_comparison_table(summary)]
    assert all(c.available for c in charts)
    import pandas as pd

    missing = ch.latency_distribution(pd.DataFrame(), summary.head(0))
    assert not missing.available and missing.needs_harness_data and "samples.jsonl" in missing.reason
    assert not ch.progress_timeline(pd.DataFrame(), summary).available


def test_empty_store_charts_say_why() -> None:
    import pandas as pd

    empty = pd.DataFrame(columns=["run_id", "node", "scenario", "mode", "started_at"])
    for builder in (ch.throughput_over_time, ch.server_latency_vs_limits, ch.latency_percentiles,
                    ch.rouge_vs_target, ch.node_comparison_table):
        chart = builder(empty)
        assert not chart.available and chart.reason
        with pytest.raises(ValueError, match="nothing to render"):
            chart.png()


def test_accuracy_verdict_without_a_stored_verdict_applies_every_mlperf_threshold():
    """A run whose ROUGE clears llama3.1-8b's 99% minimums but whose gen_len is under 0.9 x 8,167,644 fails."""
    from mlperf_assets.charts import accuracy_verdict

    row = {"benchmark": "llama3_1-8b", "accuracy_passed": None, "rouge1": 38.732, "rouge2": 15.8897,
           "rougeL": 24.4546, "rougeLsum": 35.7444, "gen_len": 8209602}
    assert accuracy_verdict(row) is True
    assert accuracy_verdict({**row, "gen_len": 7000000}) is False
    assert accuracy_verdict({**row, "rouge2": 15.7}) is False
    assert accuracy_verdict({**row, "accuracy_passed": False}) is False  # the store's verdict wins
    assert accuracy_verdict({**row, "benchmark": "mixtral-8x7b"}) is None  # no MLPerf target known here


def server_run(node: str, benchmark: str, lg_model_name: str, ttft_ms: float, tpot_ms: float, **extra) -> dict:
    """A Server performance row as run_summary holds it, without LoadGen's logged limits unless `extra` has them."""
    import pandas as pd

    return {"run_id": f"{node}-Server", "node": node, "scenario": "Server", "mode": "performance",
            "started_at": pd.Timestamp("2026-11-28 02:00", tz="UTC"), "benchmark": benchmark,
            "lg_model_name": lg_model_name, "backend": "vllm", "backend_kind": "model", "result_validity": "VALID",
            **{f"ttft_{p}_ns": ttft_ms * 1e6 for p in ("p50", "p90", "p99")},
            **{f"tpot_{p}_ns": tpot_ms * 1e6 for p in ("p50", "p90", "p99")}, **extra}


def test_server_limits_are_each_runs_own() -> None:
    """Each run is drawn against its benchmark's limits (mlperf.conf: llama3_1-8b-interactive 500 ms TTFT / 30 ms
    TPOT; gpt-j's end-to-end 20 s), or the limits its own LoadGen log states, never llama3.1-8b's for everyone."""
    import pandas as pd

    interactive = server_run("edge-box", "llama3.1-8b", "llama3_1-8b-interactive", 400, 25)
    gptj = server_run("gptj-box", "gptj-99", "gptj", 900, 40)
    assert ch.limits_for(interactive) == {"ttft": 500.0, "tpot": 30.0}
    assert ch.latency_rules(interactive).source == "benchmark table (llama3_1-8b-interactive)"
    assert ch.limits_for(gptj) == {"latency": 20000.0}  # no token limits: the end-to-end target
    chart = ch.server_latency_vs_limits(pd.DataFrame([interactive, gptj]))
    assert chart.available
    assert list(limit_markers(chart.figure, "y").values()) == [500.0]
    assert list(limit_markers(chart.figure, "y2").values()) == [30.0]

    # a run whose log states its own TTFT limit is drawn against it; its TPOT limit comes from its benchmark
    own = server_run("lab", "llama3.1-8b", "llama3_1-8b", 900, 40, ttft_latency_ns=1_500_000_000)
    assert ch.limits_for(own) == {"ttft": 1500.0, "tpot": 100.0}
    assert ch.latency_rules(own).describe() == ("TTFT 1,500 ms · TPOT 100 ms (LoadGen log; TPOT from the benchmark "
                                                "table (llama3_1-8b))")
    # an Interactive run known only by its folder and benchmark name still gets the interactive limits
    folder = server_run("dell", "llama3.1-8b", None, 300, 20, source_path="/r/dell/llama3.1-8b-interactive/Server")
    assert ch.limits_for(folder) == {"ttft": 500.0, "tpot": 30.0}
    # a benchmark the registry does not know gets no limit rather than another benchmark's
    unknown = server_run("x", "llama2-70b-99", None, 300, 20)
    assert ch.limits_for(unknown) == {} and "not in the benchmark table" in ch.latency_rules(unknown).describe()
    # limits apply to Server runs only
    assert ch.limits_for({**own, "scenario": "Offline"}) == {}
