"""Published context: the systems JSON of a results tree in run_summary, and "your runs vs published results".

The results tree is laid out as MLCommons publishes it (`inference_results_vX/<division>/<submitter>/results/...`),
built from the real logs of ../shared/testdata/mlperf_logs (every file a link to the real one; MANIFEST.json says
where each came from) plus systems JSON written by the test (tests/support/reportdata.py SYSTEMS: one malformed, one
missing). Your runs are real harness runs (LoadGen) whose run_manifest.json carries the GPU list nvidia-smi prints
on a one-H200 node. Expected figures come from MANIFEST.json literals and the systems JSON the test wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlperf_assets import charts as ch
from mlperf_assets import loadgen_logs, store
from mlperf_assets.reporting import build_report, load_summary
from support.reportdata import SYSTEMS, manifest_entries, published_store, published_tree, shared_base, your_runs
from support.browser import RENDERED, Browser, assert_offline_and_clean, needs_chromium


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return shared_base(tmp_path_factory)


@pytest.fixture(scope="module")
def db(base: Path, mlperf_logs_dir: Path, stories_dir: Path) -> Path:
    return published_store(base, mlperf_logs_dir, stories_dir)


@pytest.fixture(scope="module")
def summary(db: Path):
    return load_summary(db)


@pytest.fixture(scope="module")
def report(db: Path, tmp_path_factory):
    return build_report(db, tmp_path_factory.mktemp("report-published"))


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


def manifest_summary(mlperf_logs_dir: Path, folder: str) -> dict[str, str]:
    entry = next(e for e in manifest_entries(mlperf_logs_dir) if e["folder"] == folder)
    return entry["summaries"]["performance/run_1/mlperf_log_summary.txt"]


def perf_row(summary, system: str) -> dict:
    rows = summary[(summary["system"] == system) & (summary["mode"] == "performance")]
    assert len(rows) == 1, (system, len(rows))
    return rows.iloc[0].to_dict()


CISCO = "ntuhpc-v5.1__Cisco-C885_H200x8_TRT__llama3.1-8b__Offline"
AMD_MI355X = "gbeezybez-v6.0__AMD-8xMI355X_2xEPYC_9575F__llama2-70b-99__Interactive"


def test_systems_json_fills_run_summary(summary, mlperf_logs_dir: Path) -> None:
    cisco = perf_row(summary, "C885_H200x8_TRT")
    written = SYSTEMS[("inference_results_v5.1", "Cisco", "C885_H200x8_TRT")]
    assert cisco["accelerator"] == written["accelerator_model_name"] == "NVIDIA H200-SXM-141GB"
    assert cisco["accelerators_per_node"] == 8 and cisco["number_of_nodes"] == 1  # given as the strings "8", "1"
    assert cisco["host_processor"] == written["host_processor_model_name"]
    assert cisco["framework"] == written["framework"]
    assert (cisco["round"], cisco["division"], cisco["submitter"]) == ("v5.1", "closed", "Cisco")
    assert cisco["system_source"] == "systems JSON" and ch.isnull(cisco["system_note"])
    tokens = float(manifest_summary(mlperf_logs_dir, CISCO)["Tokens per second"])  # 58304.3
    assert cisco["tokens_per_second_per_accelerator"] == pytest.approx(tokens / 8, rel=1e-9)
    # a Server run (v6.0 Interactive) is scored on completed tokens/s
    amd = perf_row(summary, "8xMI355X_2xEPYC_9575F")
    completed = float(manifest_summary(mlperf_logs_dir, AMD_MI355X)["Completed tokens per second"])  # 73608.25
    assert (amd["accelerator"], amd["round"]) == ("AMD Instinct MI355X", "v6.0")
    assert amd["tokens_per_second_per_accelerator"] == pytest.approx(completed / 8, rel=1e-9)
    # every run of a results tree knows its round and division, whatever its systems JSON says
    tree_runs = summary[summary["source_kind"] == "submission"]
    assert len(tree_runs) == 32 and tree_runs["round"].notna().all() and tree_runs["division"].notna().all()
    assert set(tree_runs["round"]) == {"v4.1", "v5.1", "v6.0"} and set(tree_runs["division"]) == {"closed", "open"}


def test_bad_or_missing_systems_json_still_ingests(summary, mlperf_logs_dir: Path) -> None:
    # malformed (cut off): the run is stored with its real figures, its accelerator unknown, and the note says why
    mixtral = perf_row(summary, "8xMI300X_2xEPYC_9575F")
    literal = manifest_summary(mlperf_logs_dir, "ntuhpc-v5.1__AMD-8xMI300X_2xEPYC_9575F__mixtral-8x7b__Offline")
    assert mixtral["tokens_per_second"] == pytest.approx(float(literal["Tokens per second"]))
    assert ch.isnull(mixtral["accelerator"]) and ch.isnull(mixtral["tokens_per_second_per_accelerator"])
    assert "8xMI300X_2xEPYC_9575F.json unusable: not valid JSON" in mixtral["system_note"]
    # missing: said so
    gate = perf_row(summary, "GATEOverflow_RTX4090x2-reference-gpu-vllm-default_config")
    assert ch.isnull(gate["accelerator"]) and gate["division"] == "open"
    assert "no systems/GATEOverflow_RTX4090x2-reference-gpu-vllm-default_config.json" in gate["system_note"]
    # a CPU-only system (accelerator_model_name N/A, 0 per node): no accelerator, no per-accelerator figure
    cpu = perf_row(summary, "1-node-2S-GNR_128C")
    assert ch.isnull(cpu["accelerator"]) and "names no accelerator" in cpu["system_note"]


def test_harness_runs_take_the_gpu_list(summary) -> None:
    node_b = summary[(summary["node"] == "node-b") & (summary["mode"] == "performance")].iloc[0]
    assert (node_b["accelerator"], node_b["accelerators_per_node"]) == ("NVIDIA H200", 1)
    assert node_b["system_source"] == "run_manifest.json (nvidia-smi)"
    assert node_b["tokens_per_second_per_accelerator"] == pytest.approx(node_b["tokens_per_second"])
    assert ch.isnull(node_b["round"]) and ch.isnull(node_b["submitter"])  # one of yours, not published
    node_a = summary[summary["node"] == "node-a"]
    assert node_a["accelerator"].isna().all()
    assert all("run_manifest.json lists no GPU" in note for note in node_a["system_note"])


def test_your_runs_beside_published_results(summary, base: Path, stories_dir: Path) -> None:
    chart = ch.published_context(summary)
    assert chart.available
    table = chart.table
    # node-b's H200 Offline run: the only group (node-a's runs have no accelerator; nothing else is yours)
    assert set(zip(table["benchmark"], table["scenario"], table["accelerator"])) == {("llama3.1-8b", "Offline",
                                                                                     "H200")}
    mine = table[table["run"] == "yours"]
    published = table[table["run"] == "published"]
    assert len(mine) == 1 and mine.iloc[0]["node / system"] == "node-b · extractive (baseline)"
    summary_text = (your_runs(base, stories_dir)[("night-1", "node-b")] / "mlperf_log_summary.txt").read_text()
    node_b_tps = float(next(x for x in summary_text.splitlines() if x.startswith("Tokens per second")).split(":")[1])
    assert mine.iloc[0]["tokens/s per accelerator"] == f"{node_b_tps:,.1f}"
    assert len(published) == 1
    cisco = published.iloc[0]
    assert (cisco["node / system"], cisco["submitter"], cisco["round"], cisco["division"]) == (
        "C885_H200x8_TRT", "Cisco", "v5.1", "closed")
    assert cisco["accelerators"] == "8 × NVIDIA H200-SXM-141GB"
    assert cisco["tokens/s per accelerator"] == f"{58304.3 / 8:,.1f}" == "7,288.0"
    assert cisco["vs your best"] == f"{(58304.3 / 8) / node_b_tps:,.2f}×"
    # what was left out, and why
    notes = " ".join(chart.notes)
    assert "2 of your runs: accelerator unknown: run_manifest.json lists no GPU" in notes
    assert "not valid JSON" in notes and "names no accelerator" in notes and "no tokens/s in its logs" in notes
    # the figure: one point per row, published points carry submitter, round and division
    fig = chart.figure
    assert sorted(t.name for t in fig.data) == ["node-b · extractive (baseline) (yours)", "published (closed)"]
    pub = next(t for t in fig.data if t.name == "published (closed)")
    assert list(pub.x) == [pytest.approx(58304.3 / 8)] and list(pub.customdata[0][1:4]) == ["Cisco", "v5.1", "closed"]
    assert chart.png()[:4] == b"\x89PNG"


def test_published_results_alone(base: Path, mlperf_logs_dir: Path) -> None:
    summary = load_summary(published_store(base, mlperf_logs_dir))
    chart = ch.published_context(summary)
    assert chart.available and chart.notes[0].startswith("None of your runs has a known accelerator")
    assert (chart.table["run"] == "published").all()
    # every published performance run with an accelerator, a count and tokens/s, from the systems JSON written here
    expected = set()
    for entry in manifest_entries(mlperf_logs_dir):
        repo = entry["repo"].split("/")[1]
        _, submitter, _, system = entry["results_dir"].split("/")[:4]
        written = SYSTEMS.get((repo, submitter, system))
        literal = entry["summaries"]["performance/run_1/mlperf_log_summary.txt"]
        has_tokens = any("tokens per second" in k.lower() or k.startswith("TPS w/o") for k in literal)
        if isinstance(written, dict) and str(written["accelerators_per_node"]) != "0" and has_tokens:
            expected.add(system)
    assert set(chart.table["node / system"]) == expected
    assert len(chart.table) == len(expected) == 7
    # one group per benchmark, scenario and accelerator model
    groups = set(zip(chart.table["benchmark"], chart.table["scenario"], chart.table["accelerator"]))
    assert ("llama3.1-8b", "Interactive", "B200") in groups and ("llama2-70b", "Server", "B200") in groups
    assert ("llama2-70b", "Interactive", "MI355X") in groups and ("gptj", "Offline", "H100") in groups


def test_report_section(report) -> None:
    text = report.report_path.read_text()
    section = text.split("## Your runs vs published results", 1)[1].split("\n## ", 1)[0]
    assert "![Your runs vs published results (tokens/s per accelerator)](published_context.png)" in section
    row = next(line for line in section.splitlines() if "| C885_H200x8_TRT |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:9] == ["llama3.1-8b", "Offline", "H200", "published", "C885_H200x8_TRT", "Cisco", "v5.1", "closed",
                         "8 × NVIDIA H200-SXM-141GB"]
    assert "7,288.0" in cells
    assert "not valid JSON" in section and "run_manifest.json lists no GPU" in section
    assert (report.out_dir / "published_context.png").read_bytes()[:4] == b"\x89PNG"
    assert text.count("](published_context.png)") == 1  # in its section, not again under Charts


@pytest.mark.slow
@needs_chromium
def test_published_view_renders_in_chromium(browser: Browser, report) -> None:
    browser.open(report.dashboard_path)
    assert browser.wait_for(RENDERED) == str(len(report.charts_drawn))
    state = browser.evaluate("""(() => { const d = document.getElementById('chart-published_context');
        return [d.closest('section').id, d.classList.contains('js-plotly-plot'), d.querySelectorAll('.point').length,
                document.getElementById('published-table').textContent]; })()""")
    section, is_plot, points, table = state
    assert section == "published" and is_plot and points == 2
    assert "C885_H200x8_TRT" in table and "7,288.0" in table and "Cisco" in table and "v5.1" in table
    hover = browser.evaluate("""(() => { const d = document.getElementById('chart-published_context');
        const i = d.data.findIndex(t => t.name === 'published (closed)');
        Plotly.Fx.hover(d, [{curveNumber: i, pointNumber: 0}]);
        return Array.from(d.querySelectorAll('.hoverlayer .hovertext')).map(e => e.textContent).join(' '); })()""")
    assert "submitter Cisco" in hover and "round v5.1" in hover and "division closed" in hover
    assert "7,288" in hover
    assert_offline_and_clean(browser, report.dashboard_path)


def test_systems_json_parsing(tmp_path: Path) -> None:
    def write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    good = write("ok.json", b'\xef\xbb\xbf{"accelerator_model_name": "NVIDIA H200", "accelerators_per_node": "8"}')
    assert loadgen_logs.parse_system_json(good)["accelerators_per_node"] == "8"  # a BOM is fine
    for name, data, message in (("list.json", b"[1, 2]", "not a JSON object (a list)"),
                                ("cut.json", b'{"a": ', "not valid JSON (line 1 column 7"),
                                ("latin1.json", b'{"a": "\xe9"}', "not UTF-8 text (byte 0xe9"),
                                ("huge.json", b" " * (1 << 20) + b"{}", "larger than")):
        with pytest.raises(loadgen_logs.LogFormatError, match=r"^" + str(tmp_path / name).replace(".", r"\.")) as exc:
            loadgen_logs.parse_system_json(write(name, data))
        assert message in str(exc.value)
    assert loadgen_logs.results_round("/x/inference_results_v5.1/closed/A/results/s/b/Offline") == "v5.1"
    assert loadgen_logs.results_round("/x/ntuhpc-v5.1__Cisco__llama3.1-8b__Offline/performance/run_1") == "v5.1"
    assert loadgen_logs.results_round("/x/results/v4.1/closed") == "v4.1"
    assert loadgen_logs.results_round("/home/me/runs/node-a-Server-night-1") is None
    # a count as the MLCommons files give it; anything else is no count
    tree = tmp_path / "inference_results_v5.1" / "closed" / "Acme" / "results" / "box" / "llama3.1-8b" / "Offline"
    (tree / "performance" / "run_1").mkdir(parents=True)
    systems = tmp_path / "inference_results_v5.1" / "closed" / "Acme" / "systems"
    systems.mkdir()
    for value, count, note in (("8", 8, None), (4, 4, None), ("eight", None, "'eight' is not a count"),
                               ("0", None, "'0' is not a count")):
        (systems / "box.json").write_text(json.dumps({"accelerator_model_name": "NVIDIA H200",
                                                      "accelerators_per_node": value}))
        row = loadgen_logs.system_context(tree / "performance" / "run_1")
        assert row["accelerators_per_node"] == count and row["round"] == "v5.1" and row["division"] == "closed"
        assert (row["system_note"] is None) if note is None else note in row["system_note"]


def test_accelerator_names_match_by_model() -> None:
    assert ch.accelerator_family("NVIDIA H200-SXM-141GB") == ch.accelerator_family("NVIDIA H200") == "H200"
    assert ch.accelerator_family("NVIDIA H100-PCIe-80GB") == "H100"
    assert ch.accelerator_family("AMD Instinct MI300X") == "MI300X"
    assert ch.accelerator_family("NVIDIA GeForce RTX 4090") == "RTX 4090"
    assert ch.accelerator_family("NVIDIA Jetson AGX Orin 64G") == "NVIDIA Jetson AGX Orin 64G"  # kept whole
    assert ch.accelerator_family("N/A") is None and ch.accelerator_family(None) is None
    assert ch.workload("gptj-99.9") == ch.workload("gptj") == "gptj"
    assert ch.workload("llama2-70b-99.9") == ch.workload("llama2-70b-99") == "llama2-70b"
    assert ch.workload("llama3.1-8b-interactive") == "llama3.1-8b" != ch.workload("llama3.1-8b-edge")


def test_an_older_store_gets_the_systems_of_its_runs(base: Path, mlperf_logs_dir: Path, tmp_path: Path) -> None:
    """Migration 4 on a store made before it: every run's systems row, read from the files still on disk."""
    db = tmp_path / "old.duckdb"
    store.ingest_path(db, published_tree(base, mlperf_logs_dir))
    before = store.query(db, "SELECT run_id, accelerator, round, system_note, submitter, system FROM run_summary "
                             "ORDER BY run_id")
    with store.open_for_write(db) as conn:  # back to schema 3: no run_systems, the view without its columns
        conn.execute("DROP VIEW run_summary")
        conn.execute(f"CREATE VIEW run_summary AS SELECT {store._RUN_SUMMARY_SELECT} FROM runs r "
                     "LEFT JOIN accuracy_latest a ON a.group_id = r.group_id")
        conn.execute("DROP TABLE run_systems")
        conn.execute("DELETE FROM schema_version WHERE version >= 4")  # schema 3: before 4 and 5
    assert "accelerator" not in store.query(db, "SELECT * FROM run_summary LIMIT 0").columns
    store.init_db(db)  # migrates
    after = store.query(db, "SELECT run_id, accelerator, round, system_note, submitter, system FROM run_summary "
                            "ORDER BY run_id")
    assert after.equals(before)
    for row in after.itertuples():  # an accelerator exactly where the systems JSON written here names one
        written = SYSTEMS.get((f"inference_results_{row.round}", row.submitter, row.system))
        named = isinstance(written, dict) and str(written["accelerators_per_node"]) != "0"
        assert (row.accelerator == written["accelerator_model_name"]) if named else ch.isnull(row.accelerator)
    assert after["accelerator"].notna().sum() >= 16
