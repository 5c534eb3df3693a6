"""A snapshot of the code location's graph, in the manner of dagster-open-platform's ``test_defs``: every asset with
its upstream assets, partitioning, resources and checks; every job's selection; schedules and sensors with the
resources they need. Built from ``config/examples/ssh-fleet.yaml`` (two SSH nodes, a nightly schedule), so runner
resources per node show up too.

The expected graph is written out here by hand, from the pipeline in the README (dataset -> scenario_run ->
loadgen_results -> accuracy_scores -> charts -> report; the search and the submission beside it). A feature that
adds, removes or rewires an asset, check, job or resource changes this table on purpose, in the same commit."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from mlperf_assets.config import load_config

PROJECT = Path(__file__).resolve().parents[1]
RUNNERS = {"runner_jw2", "runner_jw3"}
MULTI, STATIC = "MultiPartitionsDefinition", "StaticPartitionsDefinition"

# asset -> (upstream assets, partitions, resources beyond the default io_manager, checks as (name, blocking))
ASSETS = {
    "cnn_dailymail_dataset": (set(), None, {"mlperf_config"},
                              {("sample_count", False), ("no_empty_articles", False), ("token_lengths", False),
                               ("official_dataset", False)}),
    "scenario_run": ({"cnn_dailymail_dataset"}, MULTI, {"mlperf_config", "scenario_run__io_manager", *RUNNERS},
                     set()),
    "loadgen_results": ({"scenario_run"}, MULTI, {"mlperf_config", "store"}, {("loadgen_result_valid", False)}),
    "accuracy_scores": ({"scenario_run", "loadgen_results"}, MULTI, {"mlperf_config", "store"},
                        {("rouge_meets_mlperf_target", True)}),
    "benchmark_charts": ({"loadgen_results", "accuracy_scores"}, None, {"mlperf_config", "store"}, set()),
    "benchmark_report": ({"benchmark_charts"}, None, {"mlperf_config", "store"}, set()),
    "max_qps_search": ({"cnn_dailymail_dataset"}, MULTI, {"mlperf_config", "store", *RUNNERS}, set()),
    "submission_package": ({"accuracy_scores"}, STATIC, {"mlperf_config", "store"}, set()),
}
JOBS = {
    "benchmark_job": {"scenario_run", "loadgen_results", "accuracy_scores"},
    "report_job": {"benchmark_charts", "benchmark_report"},
    "dataset_job": {"cnn_dailymail_dataset"},
    "submission_job": {"submission_package"},
}
SCHEDULES = {"nightly_benchmarks": ("0 2 * * *", "benchmark_job")}
SENSORS = {"alert_on_regression": {"store"}, "alert_on_run_failure": set(), "report_after_benchmark": set()}
RESOURCES = {"mlperf_config", "store", *RUNNERS}


def _snapshot(defs: dg.Definitions) -> dict:
    repo = defs.get_repository_def()
    assets = {}
    for a in repo.asset_graph.assets_defs:
        for key in a.keys:
            assets[key.to_user_string()] = (
                {d.to_user_string() for d in a.asset_deps[key]},
                type(a.partitions_def).__name__ if a.partitions_def else None,
                set(a.required_resource_keys) - {"io_manager"},
                {(c.name, c.blocking) for c in a.check_specs},
            )
    jobs = {j.name: {k.to_user_string() for k in j.asset_layer.executable_asset_keys}
            for j in repo.get_all_jobs() if not j.name.startswith("__")}
    return {
        "assets": assets,
        "jobs": jobs,
        "schedules": {s.name: (s.cron_schedule, s.job_name) for s in repo.schedule_defs},
        "sensors": {s.name: set(s.required_resource_keys or ()) for s in repo.sensor_defs},
        "resources": set(defs.resources),
    }


def test_the_fleet_graph_matches_the_snapshot():
    from mlperf_assets.definitions import build_definitions

    snap = _snapshot(build_definitions(load_config(PROJECT / "config" / "examples" / "ssh-fleet.yaml")))
    for name in sorted(set(ASSETS) | set(snap["assets"])):  # one asset at a time: the failure names it
        assert snap["assets"].get(name) == ASSETS.get(name), name
    assert snap["jobs"] == JOBS
    assert snap["schedules"] == SCHEDULES
    assert snap["sensors"] == SENSORS
    assert snap["resources"] == RESOURCES


def test_partitions_are_node_by_scenario_for_runs_and_searches():
    from mlperf_assets.definitions import build_definitions

    defs = build_definitions(load_config(PROJECT / "config" / "examples" / "ssh-fleet.yaml"))
    for name in ("scenario_run", "loadgen_results", "accuracy_scores", "max_qps_search"):
        parts = defs.resolve_assets_def(name).partitions_def
        assert [d.name for d in parts.partitions_defs] == ["node", "scenario"], name
        assert {d.name: set(d.partitions_def.get_partition_keys()) for d in parts.partitions_defs}["node"] == {
            "jw2", "jw3"}, name
