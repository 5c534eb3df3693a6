"""The capacity search's layers: its steps and probe figures go through the results store (``ResultsStore``), the
probes take the store as an argument, the algorithm does no I/O, and the report draws the search without
importing it (``charts.search_charts``, ``charts.drop_probe_runs`` over ``store`` reads)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd

from mlperf_assets import charts, store
from mlperf_assets.config import parse_config
from mlperf_assets.plan import engine_args
from mlperf_assets.search import CONFIRM, ESTIMATE, PROBE, RESULT, RunnerProbes, Step
from resources.store import ResultsStore

PROJECT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, extra: str = ""):
    text = ("benchmark: {model: llama3.1-8b, backend: extractive, checkpoint: null, "
            f"scenarios: {{Server: {{target_qps: 5}}}}{extra}}}\n"
            "storage: {duckdb_path: out/r.duckdb}\n"
            "nodes: [{name: box, runner: local}]\n")
    return parse_config(text, tmp_path / "c.yaml")


def _step(search_id: str, step: int, kind: str, qps: float | None, run_id: str | None = None) -> Step:
    return Step(search_id=search_id, step=step, kind=kind, target_qps=qps, verdict="pass", reason="r",
                node="box", scenario="Server", ttft_p99_ns=1.5e8, ttft_limit_ns=2e9, run_id=run_id)


def test_search_steps_are_saved_and_read_through_the_results_store(tmp_path):
    resource = ResultsStore(path=str(tmp_path / "new" / "r.duckdb"))
    assert resource.search_ids("abc") == [] and resource.search_steps("abc-1") == []
    resource.migrate()  # the folder and the schema, before any step
    assert Path(resource.path).is_file() and resource.search_ids("abc") == []
    steps = [_step("abc-1", 0, ESTIMATE, 10.0, "e0"), _step("abc-1", 1, PROBE, 5.0, "p1"),
             _step("abc-1", 2, CONFIRM, 5.0, "c2"), _step("abc-1", 3, RESULT, 5.0)]
    for step in [*steps, _step("abc-2", 0, ESTIMATE, 11.0), _step("abcd-1", 0, ESTIMATE, 12.0)]:
        resource.save_search_step(step.row())
    resource.save_search_step(steps[1].row())  # saving a step again replaces its row
    assert resource.search_ids("abc") == ["abc-1", "abc-2"]
    assert [Step.from_row(r) for r in resource.search_steps("abc-1")] == steps
    assert resource.run_figures("p1") is None  # a probe run the store never ingested
    assert resource.latest_offline_runs(node="box", backend="extractive", benchmark="llama3.1-8b") == []
    with store.open_read_only(resource.path) as conn:  # the report leaves out probes and estimates, not confirmations
        assert store.search_probe_run_ids(conn) == {"e0", "p1"}


def test_a_store_without_a_search_table_has_no_probe_runs(tmp_path):
    import duckdb

    db = tmp_path / "old.duckdb"
    duckdb.connect(str(db)).close()
    with store.open_read_only(db) as conn:
        assert store.search_probe_run_ids(conn) == set()


class _OfflineRuns:
    """A store that knows only Offline runs (what the estimate reads), newest first."""

    def __init__(self, runs: list[dict]) -> None:
        self.runs = runs
        self.asked: list[dict] = []

    def latest_offline_runs(self, **wanted) -> list[dict]:
        self.asked.append(wanted)
        return self.runs


def test_the_estimate_is_the_latest_offline_run_with_the_same_engine_arguments(tmp_path):
    config = _config(tmp_path, ", engine: {sentences: 8}")
    wanted = engine_args(config, "box")
    assert wanted["sentences"] == 8
    fake = _OfflineRuns([
        {"run_id": "newest", "samples_per_second": 9.0, "started_at": "t2", "engine_args": {**wanted, "sentences": 4}},
        {"run_id": "match", "samples_per_second": 7.5, "started_at": "t1",
         "engine_args": {**{k: str(v) for k, v in wanted.items()}, "other": 1}},  # "8" == 8; extra keys ignored
    ])
    probes = RunnerProbes(config, "box", "Server", runner=None, dataset=tmp_path / "d.json", store=fake,
                          search_id="s-1", dagster_run_id="d", log=None)
    rate, source, run_id = probes.estimate()
    assert (rate, run_id) == (7.5, "match") and "latest Offline run match" in source
    assert fake.asked == [{"node": "box", "backend": "extractive", "benchmark": "llama3.1-8b"}]
    fake.runs = fake.runs[:1]
    assert probes.latest_offline() is None


def test_max_qps_search_takes_the_store_resource(tmp_path):
    from mlperf_assets.definitions import build_definitions

    repo = build_definitions(_config(tmp_path)).get_repository_def()
    assert "store" in repo.assets_defs_by_key[dg.AssetKey("max_qps_search")].required_resource_keys


def test_report_draws_the_search_from_store_rows():
    summary = pd.DataFrame({"run_id": ["a", "p1", "c"], "node": ["n"] * 3})
    assert list(charts.drop_probe_runs(summary, {"p1", "gone"})["run_id"]) == ["a", "c"]
    assert charts.drop_probe_runs(summary, set()) is summary
    assert charts.search_charts([]) == []
    rows = [_step("abc-1", 1, PROBE, 5.0, "p1").row() | {"recorded_at": pd.Timestamp("2025-01-01")}]
    [chart] = charts.search_charts(rows)
    assert chart.key == charts.QPS_SEARCH_KEY and chart.available


def test_reporting_imports_nothing_of_the_search():
    code = "import sys, mlperf_assets.reporting; print(sorted(m for m in sys.modules if m.startswith('mlperf_assets.search')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_search_algorithm_does_no_io():
    tree = ast.parse((PROJECT / "mlperf_assets/search/algorithm.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    io = ("duckdb", "dagster", "resources", "subprocess", "pathlib", "mlperf_assets.store", "mlperf_assets.plan",
          "mlperf_assets.search.probes", "mlperf_assets.search.node")
    assert not {m for m in imported if m.startswith(io)}, imported
