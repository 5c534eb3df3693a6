"""The code location loads (through Dagster's own CLI) and holds every asset, check, job and resource of the platform."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mlperf_assets.config import load_config

PROJECT = Path(__file__).resolve().parents[1]
ASSETS = {"cnn_dailymail_dataset", "scenario_run", "loadgen_results", "accuracy_scores", "benchmark_charts",
          "benchmark_report", "max_qps_search", "submission_package"}
CHECKS = {
    ("cnn_dailymail_dataset", "sample_count"),
    ("cnn_dailymail_dataset", "no_empty_articles"),
    ("cnn_dailymail_dataset", "token_lengths"),
    ("cnn_dailymail_dataset", "official_dataset"),
    ("loadgen_results", "loadgen_result_valid"),
    ("accuracy_scores", "rouge_meets_mlperf_target"),
    ("benchmark_report", "no_performance_regression"),
}


@pytest.fixture()
def dagster_home(tmp_path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    return home


def test_dagster_definitions_validate_cli(dagster_home):
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    env.pop("MLPERF_DAGSTER_CONFIG", None)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Validation successful for code location mlperf_dagster" in output


def test_defs_hold_every_named_asset_check_job_and_resource():
    from mlperf_assets.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == ASSETS
    graph = defs.get_repository_def().asset_graph
    check_keys = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert check_keys == CHECKS
    repo = defs.get_repository_def()
    jobs = {j.name for j in repo.get_all_jobs()}
    assert {"benchmark_job", "report_job", "dataset_job"} <= jobs
    assert set(defs.resources) == {"mlperf_config", "store", "runner_local"}
    from resources.runners import LocalRunner
    from resources.store import ResultsStore

    assert isinstance(defs.resources["runner_local"], LocalRunner)
    assert isinstance(defs.resources["store"], ResultsStore)


def test_rouge_check_is_blocking_and_partitions_come_from_config():
    from mlperf_assets.definitions import defs

    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    run_parts = specs["scenario_run"].partitions_def
    assert isinstance(run_parts, dg.MultiPartitionsDefinition)
    assert {d.name for d in run_parts.partitions_defs} == {"node", "scenario"}
    keys = {(k.keys_by_dimension["node"], k.keys_by_dimension["scenario"]) for k in run_parts.get_partition_keys()}
    assert keys == {("local", "Offline"), ("local", "Server"), ("local", "SingleStream")}
    assert specs["benchmark_report"].partitions_def is None
    repo = defs.get_repository_def()
    checks = [c for a in repo.asset_graph.assets_defs for c in a.check_specs]
    blocking = {c.name: c.blocking for c in checks}
    assert blocking["rouge_meets_mlperf_target"] is True
    benchmark = defs.resolve_job_def("benchmark_job")
    assert {k.to_user_string() for k in benchmark.asset_layer.executable_asset_keys} == {
        "scenario_run", "loadgen_results", "accuracy_scores"
    }  # fmt: skip


def test_fleet_config_gets_one_runner_per_node():
    from mlperf_assets.definitions import build_definitions
    from resources.runners import BenchmarkRunner

    config = load_config(PROJECT / "config" / "examples" / "ssh-fleet.yaml")
    defs = build_definitions(config)
    runners = {k: v for k, v in defs.resources.items() if k.startswith("runner_")}
    assert set(runners) == {"runner_jw2", "runner_jw3"}
    assert all(isinstance(r, BenchmarkRunner) and r.node == k.removeprefix("runner_") for k, r in runners.items())
    parts = defs.resolve_assets_def("scenario_run").partitions_def
    assert len(parts.get_partition_keys()) == 4  # 2 nodes x (Offline, Server)


def test_dagster_yaml_limits_one_run_per_node(dagster_home, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    instance = dg.DagsterInstance.get()
    try:
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        limits = coordinator.get_run_queue_config().tag_concurrency_limits
        assert {"key": "dagster/partition/node", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
        assert Path(instance.root_directory) == dagster_home
    finally:
        instance.dispose()


# ------------------------------------------------------------------------------- one config, one field list
def test_assets_see_the_config_the_definitions_were_built_from(tmp_path):
    """The config file is read once, when the definitions are built: editing it afterwards changes nothing a run
    sees until the code location is reloaded (partitions, runners and settings stay consistent)."""
    from mlperf_assets.definitions import build_definitions

    path = tmp_path / "config.yaml"
    path.write_text("nodes: [{name: box, runner: local}]\nbenchmark: {backend: extractive, checkpoint: null}\n")
    local_copy = tmp_path / "cnn.jsonl"
    local_copy.write_text('{"id": "a", "article": "x", "highlights": "y"}\n')
    config = load_config(path, dataset_override=str(local_copy))  # provenance of an override is kept as-is
    resource = build_definitions(config).resources["mlperf_config"]
    path.write_text("nodes: [{name: other, runner: local}]\nbenchmark: {backend: replay, checkpoint: null}\n")

    @dg.asset(required_resource_keys={"mlperf_config"})
    def reads_config(context) -> dg.MaterializeResult:
        cfg = context.resources.mlperf_config.load()
        return dg.MaterializeResult(metadata={"backend": cfg.benchmark.backend, "nodes": ",".join(cfg.node_names),
                                              "overridden_by": cfg.dataset_overridden_by or ""})  # fmt: skip

    result = dg.materialize([reads_config], resources={"mlperf_config": resource})
    [mat] = result.asset_materializations_for_node("reads_config")
    assert (mat.metadata["backend"].value, mat.metadata["nodes"].value) == ("extractive", "box")
    assert mat.metadata["overridden_by"].value == f"MLPERF_DAGSTER_DATASET={local_copy}"
    assert resource.load() == config and resource.load().source_path == path.resolve()


def test_runner_settings_and_defaults_come_from_the_node_model(tmp_path):
    from mlperf_assets.config import SSHNode, parse_config
    from resources.runners import LocalRunner, build_runner
    from resources.runners.ssh import SSHRunner

    config = parse_config(
        "storage: {artifact_root: out/artifacts}\n"
        "nodes: [{name: box, runner: local}, {name: gpu, runner: ssh, host: 10.0.0.9}]\n", tmp_path / "c.yaml"
    )  # fmt: skip
    local, ssh = (build_runner(n) for n in config.nodes)
    assert isinstance(local, LocalRunner) and local.settings is config.node("box")
    assert local.workdir == tmp_path / "out" / "work"  # the config's default, set on load
    assert isinstance(ssh, SSHRunner) and ssh.settings is config.node("gpu")
    defaults = SSHNode.model_fields
    assert (ssh.workdir, ssh.connect_timeout_s) == (defaults["workdir"].default, defaults["connect_timeout_s"].default)
    by_fields = SSHRunner(node="gpu", host="10.0.0.9", poll_interval_s=0.5)  # scripts and tests: the model's fields
    loaded = config.node("gpu").model_dump(exclude={"known_hosts"})  # a loaded config also expands ~ in paths
    assert by_fields.settings.model_dump(exclude={"known_hosts"}) == loaded and by_fields.poll_interval_s == 0.5
    with pytest.raises(AttributeError):
        _ = ssh.no_such_setting


def test_openai_gets_the_checkpoint_as_api_model(tmp_path):
    """One build_spec for the pipeline and render: the checkpoint reaches each backend as its own argument."""
    from mlperf_assets.config import parse_config
    from mlperf_assets.plan import build_spec

    for backend, key in (("vllm", "model"), ("openai", "api_model")):
        config = parse_config(
            f"nodes: [{{name: box, runner: local}}]\nbenchmark: {{backend: {backend}, checkpoint: org/model-1}}\n",
            tmp_path / "c.yaml",
        )
        spec = build_spec(config, run_id="r1", node="box", scenario="Offline", mode="performance", dataset=tmp_path)
        assert spec.engine_args == {key: "org/model-1"}


# --------------------------------------------------------------------------------------- one door into DuckDB
def test_duckdb_readers_and_writers_take_the_store_resource_of_the_configured_file(tmp_path):
    """The regression sensor and check, and the assets that read or write results, reach DuckDB through the `store`
    resource, which holds the config's storage.duckdb_path: the sensor evaluated with it reads that file."""
    from jobs.sensors import REGRESSION_SENSOR
    from mlperf_assets.assets.checks import REGRESSION_CHECK
    from mlperf_assets.config import parse_config
    from mlperf_assets.definitions import build_definitions

    config = parse_config("storage: {duckdb_path: out/r.duckdb}\nnodes: [{name: box, runner: local}]\n",
                          tmp_path / "c.yaml")
    defs = build_definitions(config)
    store = defs.resources["store"]
    assert Path(store.path) == tmp_path / "out" / "r.duckdb"
    repo = defs.get_repository_def()
    sensor = repo.get_sensor_def(REGRESSION_SENSOR)
    assert sensor.required_resource_keys == {"store"}
    for key in ("loadgen_results", "accuracy_scores", "benchmark_report", "submission_package"):
        assert "store" in repo.assets_defs_by_key[dg.AssetKey(key)].required_resource_keys, key
    [check] = [c for c in defs.asset_checks if REGRESSION_CHECK in {k.name for k in c.check_keys}]
    assert "store" in check.required_resource_keys
    tick = sensor.evaluate_tick(dg.build_sensor_context(resources={"store": store}))
    assert tick.skip_message == f"no results store at {store.path} yet"
