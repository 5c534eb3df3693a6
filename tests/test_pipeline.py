"""The whole pipeline in-process on a temporary Dagster instance: the local runner drives the real harness
(extractive baseline, real LoadGen) on the real CNN/DM stories; results land in a real DuckDB file."""

from __future__ import annotations

import socket
from pathlib import Path

import dagster as dg
import pytest

from mlperf_assets.config import load_config

pytestmark = pytest.mark.slow

SCENARIOS_YAML = """\
    Offline: {min_duration_ms: 200, min_query_count: 8}
    Server: {target_qps: 40, min_duration_ms: 300, min_query_count: 8}
    SingleStream: {min_duration_ms: 200, min_query_count: 8, target_latency_ms: 1}
"""


def _write_config(folder: Path, stories: Path, *, extra_benchmark: str = "", scenarios: str = SCENARIOS_YAML) -> Path:
    path = folder / "config.yaml"
    path.write_text(
        "storage: {artifact_root: out/artifacts, duckdb_path: out/mlperf.duckdb, report_dir: out/report}\n"
        f"dataset: {{source: stories, path: '{stories}', max_samples: 8}}\n"
        "benchmark:\n"
        "  model: llama3.1-8b\n  checkpoint: null\n  backend: extractive\n"
        "  progress_interval_s: 0.2\n  log_interval_s: 0.5\n"
        f"{extra_benchmark}"
        "  scenarios:\n" + scenarios +
        "nodes: [{name: local, runner: local}]\n"
    )  # fmt: skip
    return path


def _query(config, sql, params=None):
    from mlperf_assets import store

    return store.query(config.storage.duckdb_path, sql, params)


@pytest.fixture(scope="module")
def pipeline(stories_dir, tmp_path_factory):
    """One full run of every partition, shared by the tests below (it is the slow part)."""
    from mlperf_assets.commands.pipeline import run_pipeline

    folder = tmp_path_factory.mktemp("pipeline")
    config = load_config(_write_config(folder, stories_dir), use_env_dataset=False)
    with dg.instance_for_test() as instance:
        outcome = run_pipeline(config, instance=instance, progress=False)
        yield config, instance, outcome


def test_every_partition_lands_in_duckdb_with_a_report(pipeline):
    config, instance, outcome = pipeline
    assert outcome.success, [p.error for p in outcome.partitions] + outcome.errors
    assert [(p.node, p.scenario) for p in outcome.partitions] == [
        ("local", "Offline"), ("local", "Server"), ("local", "SingleStream")
    ]  # fmt: skip
    rows = _query(config, "SELECT * FROM run_summary ORDER BY scenario, mode").to_dict("records")
    assert [(r["scenario"], r["mode"]) for r in rows] == [
        ("Offline", "accuracy"), ("Offline", "performance"), ("Server", "accuracy"), ("Server", "performance"),
        ("SingleStream", "accuracy"), ("SingleStream", "performance"),
    ]  # fmt: skip
    by_run = {p.dagster_run_id: p.scenario for p in outcome.partitions}
    for r in rows:
        assert r["node"] == "local" and r["backend"] == "extractive" and r["backend_kind"] == "baseline"
        assert by_run[r["dagster_run_id"]] == r["scenario"]  # each row knows the Dagster run that made it
        assert 0 < r["rouge1"] < 100 and r["gen_num"] == 8  # accuracy attached to both modes of the run
    perf = [r for r in rows if r["mode"] == "performance"]
    assert all(r["result_validity"] in ("VALID", "INVALID") and r["tokens_per_second"] > 0 for r in perf)
    server = next(r for r in perf if r["scenario"] == "Server")
    assert server["ttft_p99_ns"] > 0 and server["tpot_p99_ns"] >= 0

    report = outcome.report_path.read_text()
    assert outcome.report_path == config.storage.report_dir / "report.md"
    for r in perf:
        assert f"| local | {r['scenario']} | llama3.1-8b | extractive (baseline) |" in report
    assert (config.storage.report_dir / "dashboard.html").stat().st_size > 1_000_000  # plotly.js inline
    assert "extractive (baseline)" in report


def test_materializations_carry_metadata_and_checks(pipeline):
    config, instance, outcome = pipeline
    key = dg.MultiPartitionKey({"node": "local", "scenario": "Server"})
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("scenario_run"), asset_partitions=[key]), limit=1
    ).records[0]
    meta = record.asset_materialization.metadata
    folder = Path(meta["artifacts"].value)
    assert folder.parent == config.storage.artifact_root / "local" / "Server"
    assert (folder / "performance" / "mlperf_log_summary.txt").is_file()
    assert (folder / "accuracy" / "mlperf_log_accuracy.json").is_file()
    assert (folder / "accuracy" / "accuracy.txt").read_text().startswith("\nResults\n")
    assert meta["result_validity"].value in ("VALID", "INVALID")
    assert meta["tokens_per_second"].value > 0 and meta["ttft_p99_ms"].value > 0
    assert meta["label"].value == "baseline (not a model)"
    # nothing left behind: no staging folders, the local work folder emptied after collection
    assert not list((config.storage.artifact_root / "local").glob("*/.staging-*"))
    assert not list((config.storage.artifact_root.parent / "work").glob("*/*"))

    run = instance.get_run_by_id(record.run_id)
    assert run.tags["dagster/partition/node"] == "local"  # the tag dagster.yaml limits per node
    # live progress is also a run tag; the last one written is the accuracy run's final line
    assert run.tags["mlperf/progress"].startswith("accuracy: succeeded 8/8 samples (100%)")
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("accuracy_scores"), "rouge_meets_mlperf_target")]
    )
    evaluation = list(check.values())[0].event.dagster_event.event_specific_data
    assert evaluation.severity == dg.AssetCheckSeverity.WARN  # a baseline's miss warns; a model's blocks
    report = instance.fetch_materializations(dg.AssetKey("benchmark_report"), limit=1).records[0]
    assert "Latest run per node and scenario" in report.asset_materialization.metadata["report"].value


def test_rematerializing_results_replaces_rows(pipeline):
    config, instance, outcome = pipeline
    from mlperf_assets.definitions import build_definitions

    before = _query(config, "SELECT run_id, ingested_at FROM runs ORDER BY run_id").to_dict("records")
    job = build_definitions(config).resolve_job_def("benchmark_job")
    result = job.execute_in_process(
        instance=instance,
        partition_key=dg.MultiPartitionKey({"node": "local", "scenario": "Offline"}),
        asset_selection=[dg.AssetKey("loadgen_results")],
    )
    assert result.success
    after = _query(config, "SELECT run_id, ingested_at FROM runs ORDER BY run_id").to_dict("records")
    assert [r["run_id"] for r in after] == [r["run_id"] for r in before]  # same rows, none added
    changed = [a["run_id"] for a, b in zip(after, before) if a["ingested_at"] != b["ingested_at"]]
    assert len(changed) == 2 and all("-Offline-" in c for c in changed)  # Offline's perf + accuracy rewritten
    samples = _query(config, "SELECT count(*) AS n FROM sample_timings WHERE list_contains(?, run_id)", [changed])
    assert samples["n"][0] > 0


def test_failing_run_fails_the_asset_and_writes_nothing(stories_dir, tmp_path):
    from mlperf_assets.commands.pipeline import run_pipeline

    # lg_model_name gptj does not fit a llama3.1-8b dataset: the harness refuses it after start (exit code 2)
    config_path = _write_config(
        tmp_path, stories_dir, extra_benchmark="  lg_model_name: gptj\n",
        scenarios="    Offline: {min_duration_ms: 200, min_query_count: 8}\n",
    )  # fmt: skip
    config = load_config(config_path, use_env_dataset=False)
    with dg.instance_for_test() as instance:
        outcome = run_pipeline(config, instance=instance, progress=False, report=False)
        assert not outcome.success
        [part] = outcome.partitions
        assert not part.success
        assert "scenario_run: local/Offline performance run" in part.error and "failed" in part.error
        assert "exited with code 2" in part.error
        for key in ("scenario_run", "loadgen_results", "accuracy_scores"):
            records = instance.fetch_materializations(dg.AssetKey(key), limit=1).records
            assert records == [], key
    offline = config.storage.artifact_root / "local" / "Offline"
    assert not offline.exists() or list(offline.iterdir()) == []
    assert not config.storage.duckdb_path.exists()
    # the failed harness folder stays on the node for debugging, with the harness's own words
    kept = list((config.storage.artifact_root.parent / "work").glob("*/performance/runner.log"))
    assert len(kept) == 1 and "gptj" in kept[0].read_text()


def test_demo_without_dataset_stops_with_instructions(tmp_path, monkeypatch, capsys):
    from mlperf_assets import cli
    from mlperf_assets.commands import pipeline

    with socket.socket() as s:  # a port nobody listens on: the "hub" is unreachable, for sure
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setattr(pipeline, "HUB_HOST", ("127.0.0.1", closed))
    monkeypatch.setattr(pipeline, "LOCAL_STORIES_FALLBACK", tmp_path / "absent")
    monkeypatch.delenv("MLPERF_DAGSTER_DATASET", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert cli.main(["demo", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("mlperf-dagster demo: error: the dataset comes from the Hugging Face hub")
    assert "set MLPERF_DAGSTER_DATASET to a folder of .story files, an MLCommons cnn_eval.json" in err
    assert not (tmp_path / "home").exists()  # stopped before touching anything


def test_run_rejects_unknown_node(tmp_path, stories_dir, capsys):
    from mlperf_assets import cli

    path = _write_config(tmp_path, stories_dir)
    assert cli.main(["run", "--config", str(path), "--node", "gpu9", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mlperf-dagster run: error: --node gpu9: no such node in {path} (nodes: local)"


def test_ui_without_the_dataset_override_reuses_the_prepared_dataset(pipeline):
    """`make dev` after `make demo` without MLPERF_DAGSTER_DATASET: the config says huggingface (never prepared
    here), so scenario_run reads the dataset the demo prepared (same benchmark and tokenizer) instead of failing."""
    from mlperf_assets.config import parse_config
    from mlperf_assets.definitions import build_definitions

    config, instance, outcome = pipeline
    text = config.source_path.read_text().replace(
        f"dataset: {{source: stories, path: '{config.dataset.path}', max_samples: 8}}",
        "dataset: {source: huggingface, max_samples: 8}",
    )
    assert "huggingface" in text
    hub_config = parse_config(text, config.source_path)
    result = build_definitions(hub_config).resolve_job_def("benchmark_job").execute_in_process(
        instance=instance,
        partition_key=dg.MultiPartitionKey({"node": "local", "scenario": "Offline"}),
        asset_selection=[dg.AssetKey("scenario_run")],
    )
    assert result.success
    record = instance.fetch_materializations(dg.AssetKey("cnn_dailymail_dataset"), limit=1).records[0]
    prepared = record.asset_materialization.metadata["path"].value
    [mat] = result.asset_materializations_for_node("scenario_run")
    assert mat.metadata["dataset"].value == prepared


def test_progress_reaches_the_callback_given_to_the_definitions(pipeline):
    """`mlperf-dagster run` draws its bars from the callback it gives build_definitions (no module-global listeners):
    every observation of both harness runs of the partition reaches it, ending with each run's final line."""
    from mlperf_assets.definitions import build_definitions

    config, instance, outcome = pipeline
    seen: list[tuple[str, str, str, object]] = []
    defs = build_definitions(config, on_progress=lambda *event: seen.append(event))
    result = defs.resolve_job_def("benchmark_job").execute_in_process(
        instance=instance,
        partition_key=dg.MultiPartitionKey({"node": "local", "scenario": "Offline"}),
        asset_selection=[dg.AssetKey("scenario_run")],
    )
    assert result.success
    assert {(node, scenario) for node, scenario, _, _ in seen} == {("local", "Offline")}
    modes = [mode for _, _, mode, _ in seen]
    assert modes == sorted(modes, key=["performance", "accuracy"].index)  # performance first, then accuracy
    for mode in ("performance", "accuracy"):
        last = [p for _, _, m, p in seen if m == mode][-1]
        assert last.state == "succeeded" and last.final and last.completed == 8
