"""``scenario_run``: one MLPerf LoadGen run (performance, then accuracy) per node x scenario partition.

The node's runner resource (``runner_<node>``) executes the harness; this asset builds the run specs,
logs progress to the Dagster log every ``benchmark.log_interval_s``, and collects the run folders into
``<artifact_root>/<node>/<scenario>/<run_id>/{performance,accuracy}``. The folders are collected into a
staging folder and renamed into place only when every mode succeeded, so a failed run fails the asset and
leaves nothing in the artifact store (its node-side folder is kept for debugging and named in the error).

One run per node at a time: runs launched through the Dagster queue are limited per value of the
``dagster/partition/node`` tag (``dagster.yaml``); in-process materializations (``mlperf-dagster run``) also
take a per-node file lock, so two processes never drive one node at once.
"""


import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import dagster as dg

from mlperf_assets.assets.dataset import DATASET_KEY, prepared_dataset_path
from mlperf_assets.config import MlperfConfig, runner_resource_key
from resources.runners.base import SUCCEEDED, BenchmarkRunner, RunHandle, RunnerError, RunProgress, RunSpec

SCENARIO_RUN_KEY = dg.AssetKey("scenario_run")
NODE_DIM, SCENARIO_DIM = "node", "scenario"
ACTIVE_DIR = ".active"  # <artifact_root>/.active/<node>.json while a run is in flight (for `monitor`)
LOCK_DIR = ".locks"

# In-process listeners (the `mlperf-dagster run` progress bars): fn(node, scenario, mode, progress).
ProgressListener = Callable[[str, str, str, RunProgress], None]
PROGRESS_LISTENERS: list[ProgressListener] = []


def node_scenario_partitions(config: MlperfConfig) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition(
        {
            NODE_DIM: dg.StaticPartitionsDefinition(config.node_names),
            SCENARIO_DIM: dg.StaticPartitionsDefinition(config.scenario_names),
        }
    )


def partition_key(node: str, scenario: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({NODE_DIM: node, SCENARIO_DIM: scenario})


def split_partition(context: dg.AssetExecutionContext) -> tuple[str, str]:
    keys = context.partition_key.keys_by_dimension  # type: ignore[union-attr]
    return keys[NODE_DIM], keys[SCENARIO_DIM]


def new_run_id(node: str, scenario: str, dagster_run_id: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{node}-{scenario}-{dagster_run_id[:8]}"


def run_folder(config: MlperfConfig, node: str, scenario: str, run_id: str) -> Path:
    return config.storage.artifact_root / node / scenario / run_id


def build_spec(config: MlperfConfig, *, run_id: str, node: str, scenario: str, mode: str, dataset: Path) -> RunSpec:
    b = config.benchmark
    engine = dict(b.engine)
    # The checkpoint reaches the backend as an engine argument: vLLM's `model`, the OpenAI server's `api_model`.
    model_key = {"vllm": "model", "openai": "api_model"}.get(b.backend)
    if model_key and b.checkpoint and model_key not in engine:
        engine[model_key] = b.checkpoint
    return RunSpec(
        run_id=run_id,
        node=node,
        scenario=scenario,
        mode=mode,
        benchmark=b.model,
        backend=b.backend,
        dataset_path=str(dataset),
        engine_args=engine,
        settings=b.scenarios.enabled()[scenario].as_settings(),
        lg_model_name=b.lg_model_name,
        progress_interval_s=b.progress_interval_s,
    )


def _acquire_node_lock(context: dg.AssetExecutionContext, config: MlperfConfig, node: str):
    from filelock import FileLock, Timeout

    lock_dir = config.storage.artifact_root / LOCK_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_dir / f"{node}.lock"))
    waited = 0.0
    while True:
        try:
            lock.acquire(timeout=5)
            return lock
        except Timeout:
            waited += 5
            if waited % 60 == 5:
                context.log.info(f"node {node} is busy with another run; waiting ({waited:.0f} s so far)")


def _progress_logger(context: dg.AssetExecutionContext, node: str, scenario: str, mode: str, interval_s: float):
    last = [0.0]

    def on_progress(progress: RunProgress) -> None:
        for listener in list(PROGRESS_LISTENERS):
            listener(node, scenario, mode, progress)
        now = time.monotonic()
        if progress.done or now - last[0] >= interval_s:
            last[0] = now
            context.log.info(f"{node}/{scenario} {mode}: {progress.describe()}")

    return on_progress


def _write_active(config: MlperfConfig, node: str, payload: dict[str, Any] | None) -> None:
    """Record (or clear) the run in flight on ``node``: ``<artifact_root>/.active/<node>.json``."""
    path = config.storage.artifact_root / ACTIVE_DIR / f"{node}.json"
    if payload is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def _run_mode(
    context: dg.AssetExecutionContext,
    config: MlperfConfig,
    runner: BenchmarkRunner,
    spec: RunSpec,
    staging: Path,
) -> tuple[RunHandle, RunProgress]:
    """Start, watch and collect one harness run; raises dg.Failure if it did not succeed."""
    node, scenario, mode = spec.node, spec.scenario, spec.mode
    try:
        handle = runner.start(spec)
    except RunnerError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    context.log.info(f"{node}/{scenario} {mode}: started run {spec.run_id} in {handle.run_dir}")
    _write_active(
        config,
        node,
        {"handle": handle.to_dict(), "spec": json.loads(spec.to_json()), "dagster_run_id": context.run.run_id},
    )
    try:
        progress = runner.wait(
            handle,
            _progress_logger(context, node, scenario, mode, config.benchmark.log_interval_s),
            timeout_s=config.benchmark.run_timeout_s,
        )
    except RunnerError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    finally:
        _write_active(config, node, None)
    if progress.state != SUCCEEDED:
        tail = runner.log_tail(handle, 15)
        raise dg.Failure(
            description=(
                f"{node}/{scenario} {mode} run {spec.run_id} {progress.state}: {progress.message}. "
                f"Run folder kept on the node at {handle.run_dir}."
            ),
            metadata={"run_folder": handle.run_dir, "harness_output": dg.MetadataValue.md(f"```\n{tail}\n```")},
            allow_retries=False,
        )
    try:
        runner.collect(handle, staging / mode)
    except (RunnerError, OSError) as exc:
        raise dg.Failure(description=f"{node}/{scenario} {mode}: collecting the run folder failed: {exc}") from None
    return handle, progress


def _ns_to_ms(value: Any) -> float | None:
    return None if value is None else round(float(value) / 1e6, 3)


def run_metadata(config: MlperfConfig, folder: Path, run_id: str, node: str, scenario: str) -> dict[str, Any]:
    """Headline figures of the performance run (LoadGen's, via the pure parser) for the asset's metadata."""
    from mlperf_assets.loadgen_logs import LogFormatError, parse_run

    meta: dict[str, Any] = {
        "run_id": run_id,
        "node": node,
        "scenario": scenario,
        "backend": config.benchmark.backend,
        "label": "baseline (not a model)" if config.benchmark.is_baseline else "model",
        "artifacts": dg.MetadataValue.path(str(folder)),
    }
    try:
        row = parse_run(folder / "performance").row
    except (LogFormatError, OSError) as exc:
        meta["parse_error"] = str(exc)
        return meta
    figures = {
        "result_validity": row.get("result_validity"),
        "samples_per_second": row.get("samples_per_second"),
        "tokens_per_second": row.get("tokens_per_second"),
        "latency_p99_ms": _ns_to_ms(row.get("latency_p99_ns")),
        "ttft_p99_ms": _ns_to_ms(row.get("ttft_p99_ns")),
        "tpot_p99_ms": _ns_to_ms(row.get("tpot_p99_ns")),
        "min_duration_met": row.get("min_duration_met"),
        "backend_kind": row.get("backend_kind"),
    }
    meta.update({k: v for k, v in figures.items() if v is not None})
    return meta


def resolve_dataset(context: dg.AssetExecutionContext, config: MlperfConfig) -> Path:
    """The prepared dataset the runs read: this config's file when it exists, else the file of the latest
    ``cnn_dailymail_dataset`` materialization in this instance (e.g. the UI started without the
    ``MLPERF_DAGSTER_DATASET`` the demo used), provided it was made for the same benchmark and tokenizer."""
    path = prepared_dataset_path(config)
    if path.is_file():
        return path
    records = context.instance.fetch_materializations(DATASET_KEY, limit=1).records
    meta = dict(records[0].asset_materialization.metadata) if records and records[0].asset_materialization else {}
    latest = Path(meta["path"].value) if "path" in meta else None
    if latest is None or not latest.is_file():
        raise dg.Failure(
            description=f"no prepared dataset ({path} does not exist): materialize cnn_dailymail_dataset first",
            allow_retries=False,
        )
    made_for = None
    if "benchmark" in meta and "tokenizer" in meta:
        made_for = (meta["benchmark"].value, meta["tokenizer"].value)
    wanted = (config.benchmark.model, config.tokenizer)
    if made_for != wanted:
        raise dg.Failure(
            description=(
                f"the latest cnn_dailymail_dataset ({latest}) was prepared for {made_for}, but the config asks "
                f"for benchmark {wanted[0]} with tokenizer {wanted[1]}: materialize cnn_dailymail_dataset"
            ),
            allow_retries=False,
        )
    context.log.info(f"using the latest prepared dataset {latest} ({path} does not exist)")
    return latest


def build_scenario_run(config: MlperfConfig) -> dg.AssetsDefinition:
    runner_keys = {runner_resource_key(n) for n in config.node_names}

    @dg.asset(
        key=SCENARIO_RUN_KEY,
        group_name="mlperf",
        deps=[DATASET_KEY],
        partitions_def=node_scenario_partitions(config),
        required_resource_keys={"mlperf_config", *runner_keys},
        kinds={"python"},
        tags={"mlperf/stage": "run"},
        description=(
            "One MLPerf LoadGen run per node x scenario: performance, then accuracy, through the node's runner. "
            "Artifacts: <artifact_root>/<node>/<scenario>/<run_id>/."
        ),
    )
    def scenario_run(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        cfg: MlperfConfig = context.resources.mlperf_config.load()
        node, scenario = split_partition(context)
        runner: BenchmarkRunner = getattr(context.resources, runner_resource_key(node))
        dataset = resolve_dataset(context, cfg)
        run_id = new_run_id(node, scenario, context.run.run_id)
        final = run_folder(cfg, node, scenario, run_id)
        staging = final.parent / f".staging-{run_id}"
        modes = ["performance", "accuracy"] if cfg.benchmark.accuracy else ["performance"]
        lock = _acquire_node_lock(context, cfg, node)
        handles: list[RunHandle] = []
        started = time.monotonic()
        try:
            for mode in modes:
                spec = build_spec(cfg, run_id=run_id, node=node, scenario=scenario, mode=mode, dataset=dataset)
                handle, _ = _run_mode(context, cfg, runner, spec, staging)
                handles.append(handle)
            os.replace(staging, final)
        finally:
            lock.release()
            shutil.rmtree(staging, ignore_errors=True)
        for handle in handles:
            runner.discard(handle)
        meta = run_metadata(cfg, final, run_id, node, scenario)
        meta["modes"] = ", ".join(modes)
        meta["dataset"] = dg.MetadataValue.path(str(dataset))
        meta["wall_time_s"] = round(time.monotonic() - started, 2)
        meta["dagster_run_id"] = context.run.run_id
        context.log.info(
            f"{node}/{scenario}: {meta.get('result_validity', '?')}, "
            f"{meta.get('tokens_per_second', 0) or 0:,.1f} tokens/s; artifacts in {final}"
        )
        return dg.MaterializeResult(metadata=meta)

    return scenario_run


def _latest_run_metadata(context: dg.AssetExecutionContext) -> dict | None:
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SCENARIO_RUN_KEY, asset_partitions=[context.partition_key]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    return dict(records[0].asset_materialization.metadata)


def run_dataset(context: dg.AssetExecutionContext) -> Path | None:
    """The prepared dataset this partition's latest ``scenario_run`` read (its ``dataset`` metadata)."""
    meta = _latest_run_metadata(context) or {}
    entry = meta.get("dataset")
    return Path(entry.value) if entry is not None else None


def latest_run_folder(context: dg.AssetExecutionContext) -> Path:
    """The artifact folder of this partition's latest ``scenario_run`` materialization (its ``artifacts`` metadata)."""
    meta = _latest_run_metadata(context)
    if meta is None:
        raise dg.Failure(
            description=f"scenario_run has no materialization for partition {context.partition_key}: run it first",
            allow_retries=False,
        )
    entry = meta.get("artifacts")
    folder = Path(entry.value) if entry is not None else None
    if folder is None or not folder.is_dir():
        raise dg.Failure(
            description=f"the artifacts of scenario_run {context.partition_key} ({folder}) are missing",
            allow_retries=False,
        )
    return folder
