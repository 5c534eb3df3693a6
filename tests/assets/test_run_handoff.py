"""scenario_run hands its collected run to loadgen_results and accuracy_scores as a value (assets/io.py), and the run
folder is parsed once: on a real Dagster instance, with the local runner driving the real harness (extractive
baseline, real LoadGen) on the real CNN/DM stories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from mlperf_assets.assets import ACCURACY_KEY, LOADGEN_RESULTS_KEY, SCENARIO_RUN_KEY
from mlperf_assets.config import load_config

PARTITION = dg.MultiPartitionKey({"node": "local", "scenario": "Offline"})


def _config(folder: Path, stories: Path):
    path = folder / "config.yaml"
    path.write_text(
        "storage: {artifact_root: out/artifacts, duckdb_path: out/mlperf.duckdb, report_dir: out/report}\n"
        f"dataset: {{source: stories, path: '{stories}', max_samples: 8}}\n"
        "benchmark:\n"
        "  model: llama3.1-8b\n  checkpoint: null\n  backend: extractive\n"
        "  scenarios:\n    Offline: {min_duration_ms: 200, min_query_count: 8}\n"
        "nodes: [{name: local, runner: local}]\n"
    )  # fmt: skip
    return load_config(path, use_env_dataset=False)


def _handoff_file(instance: dg.DagsterInstance) -> Path:
    return Path(instance.storage_directory()) / "scenario_run" / "local" / "Offline.json"


@pytest.mark.slow
def test_downstream_assets_read_the_run_handed_on_not_the_materialization_metadata(stories_dir, tmp_path):
    from mlperf_assets.definitions import build_definitions

    config = _config(tmp_path, stories_dir)
    defs = build_definitions(config)
    job = defs.resolve_job_def("benchmark_job")
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("dataset_job").execute_in_process(instance=instance).success
        first = job.execute_in_process(instance=instance, partition_key=PARTITION, asset_selection=[SCENARIO_RUN_KEY])
        assert first.success
        [mat] = first.asset_materializations_for_node("scenario_run")
        folder = Path(mat.metadata["artifacts"].value)
        assert folder.parent == config.storage.artifact_root / "local" / "Offline"
        # LoadGen's verdict stays on the run; the other headline figures are the ingest's (loadgen_results)
        assert mat.metadata["result_validity"].value in ("VALID", "INVALID") and mat.metadata["tokens_per_second"].value > 0
        assert "samples_per_second" not in mat.metadata and "latency_p99_ms" not in mat.metadata

        handed = json.loads(_handoff_file(instance).read_text())
        assert handed == {"folder": str(folder), "run_id": mat.metadata["run_id"].value,
                          "dataset": mat.metadata["dataset"].value}

        # The value is the contract: point it at a copy of the run and forget scenario_run's materializations. The
        # downstream assets, in a later run, read the copy; the collected folder is left as it was.
        copy = tmp_path / "elsewhere" / folder.name
        shutil.copytree(folder, copy)
        _handoff_file(instance).write_text(json.dumps({**handed, "folder": str(copy)}))
        instance.wipe_assets([SCENARIO_RUN_KEY])
        assert not instance.fetch_materializations(SCENARIO_RUN_KEY, limit=1).records

        second = job.execute_in_process(instance=instance, partition_key=PARTITION,
                                        asset_selection=[LOADGEN_RESULTS_KEY, ACCURACY_KEY])
        assert second.success
        [results] = second.asset_materializations_for_node("loadgen_results")
        assert results.metadata["source"].value == str(copy)
        assert set(results.metadata["run_ids"].value.split(", ")) == {f"{handed['run_id']}-{mode}"
                                                                     for mode in ("performance", "accuracy")}
        assert results.metadata["tokens_per_second"].value > 0 and results.metadata["samples_per_second"].value > 0
        assert results.metadata["backend_kind"].value == "baseline"
        [scores] = second.asset_materializations_for_node("accuracy_scores")
        assert scores.metadata["run_id"].value == handed["run_id"]
        assert scores.metadata["accuracy_txt"].value == str(copy / "accuracy" / "accuracy.txt")
        assert (copy / "accuracy" / "accuracy.txt").read_text().startswith("\nResults\n")
        assert not (folder / "accuracy" / "accuracy.txt").exists()


def test_a_partition_never_run_in_this_instance_says_to_run_scenario_run_first(tmp_path, stories_dir):
    from mlperf_assets.definitions import build_definitions

    job = build_definitions(_config(tmp_path, stories_dir)).resolve_job_def("benchmark_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, partition_key=PARTITION,
                                        asset_selection=[LOADGEN_RESULTS_KEY], raise_on_error=False)
        assert not result.success
        [failure] = [e for e in result.all_events if e.is_step_failure]
        message = failure.step_failure_data.error.message
        assert "scenario_run has no collected run for partition local|Offline in this Dagster instance" in message
        assert not _handoff_file(instance).exists()


def test_handed_on_folder_that_is_gone_fails_the_step_naming_it(tmp_path, stories_dir):
    from mlperf_assets.definitions import build_definitions

    job = build_definitions(_config(tmp_path, stories_dir)).resolve_job_def("benchmark_job")
    with dg.instance_for_test() as instance:
        gone = tmp_path / "artifacts" / "local" / "Offline" / "run-1"
        _handoff_file(instance).parent.mkdir(parents=True)
        _handoff_file(instance).write_text(json.dumps({"folder": str(gone), "run_id": "run-1", "dataset": "d.json"}))
        result = job.execute_in_process(instance=instance, partition_key=PARTITION,
                                        asset_selection=[LOADGEN_RESULTS_KEY], raise_on_error=False)
        [failure] = [e for e in result.all_events if e.is_step_failure]
        assert f"the run folder of scenario_run local|Offline ({gone}) is missing" in failure.step_failure_data.error.message


@pytest.mark.parametrize("run", [
    "ntuhpc-v5.1__Cisco-C885_H200x8_TRT__llama3.1-8b__Offline/performance/run_1",
    "ntuhpc-v5.1__Intel-1-node-2S-GNR_128C__llama3_1-8b__Server/performance/run_1",
    "ntuhpc-v5.1__Intel-1-node-1x-BMG-Pro-B60-Dual__llama3.1-8b-edge__SingleStream/performance/run_1",
])
def test_the_runs_summary_figures_are_the_full_parses(mlperf_logs_dir, run):
    """What scenario_run shows from LoadGen's summary equals what the one full parse (the ingest) stores."""
    from mlperf_assets.assets.runs import ns_to_ms, summary_figures
    from mlperf_assets.loadgen_logs import parse_run

    row = parse_run(mlperf_logs_dir / run).row
    figures = summary_figures(mlperf_logs_dir / run)
    assert figures["result_validity"] == row["result_validity"]
    # the summary prints fewer digits than the detail log the parse prefers (37.73 for 37.7261)
    assert figures["tokens_per_second"] == pytest.approx(row["tokens_per_second"], rel=1e-3)
    if row["ttft_p99_ns"] is not None:
        assert figures["ttft_p99_ms"] == ns_to_ms(row["ttft_p99_ns"])


def test_an_unreadable_summary_is_reported_not_raised(tmp_path):
    from mlperf_assets.assets.runs import summary_figures

    assert set(summary_figures(tmp_path)) == {"parse_error"}
