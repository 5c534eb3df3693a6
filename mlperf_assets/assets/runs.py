"""``scenario_run``: one MLPerf LoadGen run (performance, then accuracy) per node x scenario partition.

The node's runner resource (``runner_<node>``) executes the harness; this asset builds the run specs,
logs progress to the Dagster log every ``benchmark.log_interval_s``, and collects the run folders into
``<artifact_root>/<node>/<scenario>/<run_id>/{performance,accuracy}``. The folders are collected into a
staging folder and renamed into place only when every mode succeeded, so a failed run fails the asset and
leaves nothing in the artifact store (its node-side folder is kept for debugging and named in the error).

One run per node at a time: runs launched through the Dagster queue are limited per value of the
``dagster/partition/node`` tag (``dagster.yaml``); in-process materializations (``mlperf-dagster run``) also
take a per-node file lock, so two processes never drive one node at once.

Surviving an orchestrator restart: while a partition's harness runs are in flight, and until they are
collected, ``<artifact_root>/.active/<node>/<scenario>.json`` records their specs and runner handles. A
new materialization of the same partition reads it first: if the recorded run was made with the same
settings and the runner reports it still running, or finished but not collected, the new materialization
*reattaches* (same run id, same node-side folder; no second harness) and collects it. A record whose run
failed, was cancelled, vanished from the node or used other settings is cleared, and a fresh run starts.
A run of another partition still going on the node (unwatched, its orchestrator gone) fails this
partition with a message saying how to pick it up, rather than disturbing its measurement.
"""


import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import dagster as dg

from mlperf_assets.assets.dataset import DATASET_KEY, prepared_dataset_path
from mlperf_assets.config import MlperfConfig, runner_resource_key
from resources.runners.base import (
    RUNNING,
    SUCCEEDED,
    BenchmarkRunner,
    RunHandle,
    RunnerError,
    RunProgress,
    RunSpec,
)

SCENARIO_RUN_KEY = dg.AssetKey("scenario_run")
NODE_DIM, SCENARIO_DIM = "node", "scenario"
ACTIVE_DIR = ".active"  # <artifact_root>/.active/<node>/<scenario>.json: runs in flight or not yet collected
ACTIVE_SCHEMA = 2
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


def _staging_folder(config: MlperfConfig, node: str, scenario: str, run_id: str) -> Path:
    """Where a run's modes are collected before the whole run folder is renamed into place."""
    return config.storage.artifact_root / node / scenario / f".staging-{run_id}"


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
            line = progress.describe()
            context.log.info(f"{node}/{scenario} {mode}: {line}")
            # Also on the run itself, so the Runs page shows where each partition is without opening its log.
            try:
                context.instance.add_run_tags(context.run_id, {"mlperf/progress": f"{mode}: {line}"})
            except Exception as exc:  # noqa: BLE001 - progress display must never fail a benchmark run
                context.log.debug(f"could not tag the run with its progress: {exc}")

    return on_progress


# ------------------------------------------------------------------------------ the in-flight record


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ModeRun:
    """One harness run (mode) of a partition run: its spec, the runner's handle once launched, and whether its
    folder is already collected into the staging folder."""

    spec: dict[str, Any]
    handle: dict[str, Any] | None = None
    collected: bool = False

    def run_spec(self) -> RunSpec:
        return RunSpec.from_json(json.dumps(self.spec))

    def run_handle(self) -> RunHandle | None:
        return RunHandle.from_dict(self.handle) if self.handle else None


@dataclass
class ActiveRecord:
    """``<artifact_root>/.active/<node>/<scenario>.json``: a partition run that is in flight or not yet collected."""

    node: str
    scenario: str
    run_id: str
    dagster_run_id: str  # the Dagster run that started it
    started_at: str  # ISO 8601 UTC
    dataset: dict[str, Any]  # {"path", "size", "mtime_ns"} of the prepared dataset it reads
    runs: dict[str, ModeRun] = field(default_factory=dict)  # mode -> run, in the order they were started
    reattached_by: list[str] = field(default_factory=list)  # Dagster runs that picked it up since

    @property
    def origin(self) -> str:
        return f"run {self.run_id} started at {self.started_at} by Dagster run {self.dagster_run_id}"

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["schema"] = ACTIVE_SCHEMA
        return json.dumps(data, indent=2, default=str)

    @classmethod
    def from_json(cls, text: str) -> "ActiveRecord":
        data = json.loads(text)
        if data.pop("schema", None) != ACTIVE_SCHEMA:
            raise ValueError("unknown record schema")
        data["runs"] = {mode: ModeRun(**run) for mode, run in data.get("runs", {}).items()}
        return cls(**data)


def active_record_path(config: MlperfConfig, node: str, scenario: str) -> Path:
    return config.storage.artifact_root / ACTIVE_DIR / node / f"{scenario}.json"


def read_active(config: MlperfConfig, node: str, scenario: str) -> ActiveRecord | None:
    """The partition's record; None if there is none. An unreadable record raises ValueError."""
    path = active_record_path(config, node, scenario)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return ActiveRecord.from_json(text)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path} is not a readable run record ({exc})") from None


def write_active(config: MlperfConfig, record: ActiveRecord) -> None:
    path = active_record_path(config, record.node, record.scenario)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(record.to_json())
    os.replace(tmp, path)


def clear_active(config: MlperfConfig, node: str, scenario: str) -> None:
    active_record_path(config, node, scenario).unlink(missing_ok=True)


def _dataset_identity(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _pid_runs_folder(handle: RunHandle) -> bool:
    """For a run on this machine: does the recorded pid still belong to the run (not a reused pid)?"""
    try:
        cmdline = Path(f"/proc/{handle.pid}/cmdline").read_bytes()
    except OSError:
        return True  # gone (the runner sees that itself) or no /proc: nothing better to go on
    return handle.run_dir.encode() in cmdline.split(b"\0")


@dataclass(frozen=True)
class Observation:
    """What the runner says about a recorded run: ``progress`` when it is running or finished successfully,
    else ``problem`` (why it cannot be reattached). ``uncertain``: the runner could not be asked (no connection,
    API error), so the run may well be alive; its record must not be dropped."""

    progress: RunProgress | None = None
    problem: str | None = None
    uncertain: bool = False


def _run_gone(exc: RunnerError) -> bool:
    # The runner reached the node and found no trace of the run: the SSH runner's "run folder ... no longer
    # exists on the node", the Kubernetes runner's "Job ... no longer exists". Anything else (refused key,
    # unreachable API) says nothing about the run.
    return "no longer exists" in str(exc)


def _observe(runner: BenchmarkRunner, handle: RunHandle) -> Observation:
    from resources.runners.local import LocalRunner

    if isinstance(runner, LocalRunner) and handle.pid is not None and not _pid_runs_folder(handle):
        handle.pid = None  # the pid was reused by another process: judge by the exit-code file alone
    try:
        progress = runner.poll(handle)
    except RunnerError as exc:
        gone = _run_gone(exc)
        return Observation(problem=f"is gone ({exc})" if gone else str(exc), uncertain=not gone)
    if getattr(runner, "disconnected_for_s", None) is not None:  # SSH: a stale answer given while reconnecting
        return Observation(progress=progress, uncertain=True)
    if progress.state in (RUNNING, SUCCEEDED):
        return Observation(progress=progress)
    return Observation(problem=f"{progress.state} ({progress.message or progress.describe()})")


def _spec_differences(recorded: RunSpec, wanted: RunSpec) -> list[str]:
    return [f.name for f in dataclasses.fields(RunSpec) if getattr(recorded, f.name) != getattr(wanted, f.name)]


def _describe_state(progress: RunProgress) -> str:
    if progress.state == SUCCEEDED:
        return "finished, not yet collected"
    done = f"{progress.completed}/{progress.total}" if progress.total else str(progress.completed)
    text = f"still running ({done} samples done after {progress.elapsed_s:.0f} s)"
    return text + (f"; {progress.message}" if progress.message else "")


def _stop_hint(handle: RunHandle) -> str:
    """How to stop a recorded run by hand."""
    if handle.pid:
        return f"stop it on node {handle.node} (kill -INT -{handle.pid}: the harness's process group)"
    if handle.extra.get("job"):
        return f"stop it (kubectl delete job -n {handle.extra.get('namespace', 'default')} {handle.extra['job']})"
    return f"stop it on node {handle.node}"


def _check_other_partitions(
    context: dg.AssetExecutionContext, config: MlperfConfig, runner: BenchmarkRunner, node: str, scenario: str
) -> None:
    """Fail if a run of another partition is still going on the node with no orchestrator watching it: a
    second harness would disturb its measurement (and ours). Finished ones wait for their own partition."""
    folder = config.storage.artifact_root / ACTIVE_DIR / node
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        other = path.stem
        if other == scenario:
            continue
        try:
            record = read_active(config, node, other)
        except ValueError:
            continue  # its own partition reports it
        if record is None or not record.runs:
            continue
        mode, last = list(record.runs.items())[-1]
        handle = last.run_handle()
        if handle is None or last.collected:
            continue
        seen = _observe(runner, handle)
        progress = seen.progress
        if progress is not None and progress.state == RUNNING and not seen.uncertain:
            raise dg.Failure(
                description=(
                    f"node {node} is busy: {record.origin} ({other} {mode}) is {_describe_state(progress)}, "
                    f"and no orchestrator is watching it. Materialize partition {node}|{other} to reattach and "
                    f"collect it, or {_stop_hint(handle)} and retry"
                ),
                allow_retries=False,
            )


def resume_record(
    context: dg.AssetExecutionContext,
    config: MlperfConfig,
    runner: BenchmarkRunner,
    node: str,
    scenario: str,
    dataset: Path,
    modes: list[str],
) -> ActiveRecord | None:
    """The partition's recorded run, if this materialization should reattach to it; else None (after clearing
    a stale record and saying why). Mode runs recorded without a handle (the orchestrator died while launching)
    are started again with the same spec: a runner that finds the run already launched adopts it."""
    try:
        record = read_active(config, node, scenario)
    except ValueError as exc:
        context.log.warning(f"{exc}; removing it and starting a new run")
        clear_active(config, node, scenario)
        return None
    if record is None:
        return None
    why_not: str | None = None
    observed: list[str] = []
    same_dataset = record.dataset == _dataset_identity(dataset)
    for mode, entry in record.runs.items():
        if mode not in modes:
            continue
        try:
            recorded = entry.run_spec()
        except (ValueError, TypeError) as exc:
            why_not = f"its {mode} spec is unreadable ({exc})"
            break
        wanted = build_spec(config, run_id=record.run_id, node=node, scenario=scenario, mode=mode, dataset=dataset)
        diffs = _spec_differences(recorded, wanted) + ([] if same_dataset else ["dataset file"])
        staged = (_staging_folder(config, node, scenario, record.run_id) / mode).is_dir()
        if entry.collected and staged and not diffs:
            observed.append(f"{mode} collected")
            continue
        handle = entry.run_handle()
        if handle is None:
            if diffs:
                why_not = f"it was made with different {', '.join(diffs)}"
                break
            try:
                handle = runner.start(recorded)  # reattaches if the launch got through, else launches it now
            except RunnerError as exc:
                why_not = f"its {mode} run cannot be adopted ({exc})"
                break
            entry.handle = handle.to_dict()
            write_active(config, record)
        seen = _observe(runner, handle)
        progress = seen.progress
        if seen.problem is not None and seen.uncertain:
            raise dg.Failure(
                description=(
                    f"{node}/{scenario}: cannot check {record.origin}: {seen.problem}. Its record "
                    f"({active_record_path(config, node, scenario)}) is kept, so the next materialization can "
                    "reattach to the run; delete that file if the run is gone for good"
                ),
                allow_retries=False,
            )
        if diffs:
            if progress is not None and progress.state == RUNNING:
                raise dg.Failure(
                    description=(
                        f"node {node} is busy: {record.origin} ({mode}) is {_describe_state(progress)} but was made "
                        f"with different {', '.join(diffs)} than the config now asks for. Restore the earlier "
                        f"config and materialize this partition again to collect it, or {_stop_hint(handle)} and retry"
                    ),
                    allow_retries=False,
                )
            why_not = f"it was made with different {', '.join(diffs)}"
            break
        if seen.problem is not None:
            why_not = f"its {mode} run {seen.problem}"
            break
        assert progress is not None
        entry.collected = entry.collected and staged
        observed.append(f"{mode} {_describe_state(progress)}")
    if why_not is None and not observed:
        why_not = "no harness run of it was launched"
    if why_not is not None:
        context.log.warning(
            f"{node}/{scenario}: not reattaching to {record.origin}: {why_not}. Its record is cleared and a new run "
            "starts" + (" (its folder stays on the node for inspection)" if record.runs else "")
        )
        clear_active(config, node, scenario)
        shutil.rmtree(_staging_folder(config, node, scenario, record.run_id), ignore_errors=True)
        return None
    record.reattached_by.append(context.run.run_id)
    write_active(config, record)
    context.log.info(f"{node}/{scenario}: reattaching to {record.origin} ({'; '.join(observed)})")
    return record


# ------------------------------------------------------------------------------ running one mode


def _run_mode(
    context: dg.AssetExecutionContext,
    config: MlperfConfig,
    runner: BenchmarkRunner,
    record: ActiveRecord,
    spec: RunSpec,
    staging: Path,
) -> RunHandle:
    """Start (or adopt, from ``record``), watch and collect one harness run; raises dg.Failure if it did not
    succeed. ``record`` is kept up to date on disk: it is cleared when the run failed or was cancelled here,
    and kept when the outcome is unknown (connection lost, collection failed) so a later materialization
    reattaches."""
    node, scenario, mode = spec.node, spec.scenario, spec.mode
    entry = record.runs.get(mode)
    handle = entry.run_handle() if entry is not None else None
    if entry is not None and entry.collected:
        context.log.info(f"{node}/{scenario} {mode}: run {spec.run_id} was already collected")
        return handle  # type: ignore[return-value]
    if handle is not None:
        context.log.info(f"{node}/{scenario} {mode}: watching run {spec.run_id} in {handle.run_dir} (reattached)")
    else:
        record.runs[mode] = entry = ModeRun(spec=json.loads(spec.to_json()))
        write_active(config, record)  # before launching: a restart during the launch adopts what got started
        try:
            handle = runner.start(spec)
        except RunnerError as exc:
            del record.runs[mode]
            if record.runs:
                write_active(config, record)
            else:
                clear_active(config, node, scenario)
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        entry.handle = handle.to_dict()
        write_active(config, record)
        context.log.info(f"{node}/{scenario} {mode}: started run {spec.run_id} in {handle.run_dir}")
    try:
        progress = runner.wait(
            handle,
            _progress_logger(context, node, scenario, mode, config.benchmark.log_interval_s),
            timeout_s=config.benchmark.run_timeout_s,
        )
    except RunnerError as exc:
        seen = _observe(runner, handle)
        if seen.problem is not None and not seen.uncertain:  # it ended (e.g. cancelled on timeout): nothing to resume
            clear_active(config, node, scenario)
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        raise dg.Failure(
            description=f"{exc} (materializing {node}|{scenario} again reattaches to the run if it is still going)",
            allow_retries=False,
        ) from None
    except BaseException:
        clear_active(config, node, scenario)  # interrupted: wait() has cancelled the run
        raise
    if progress.state != SUCCEEDED:
        clear_active(config, node, scenario)
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
        raise dg.Failure(
            description=(
                f"{node}/{scenario} {mode}: collecting the run folder failed: {exc} (the run is kept on the node; "
                f"materializing {node}|{scenario} again collects it)"
            )
        ) from None
    entry.collected = True
    write_active(config, record)
    return handle


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
        modes = ["performance", "accuracy"] if cfg.benchmark.accuracy else ["performance"]
        lock = _acquire_node_lock(context, cfg, node)
        handles: list[RunHandle] = []
        started = time.monotonic()
        staging: Path | None = None
        try:
            record = resume_record(context, cfg, runner, node, scenario, dataset, modes)
            _check_other_partitions(context, cfg, runner, node, scenario)
            if record is None:
                record = ActiveRecord(
                    node=node,
                    scenario=scenario,
                    run_id=new_run_id(node, scenario, context.run.run_id),
                    dagster_run_id=context.run.run_id,
                    started_at=_utc_now(),
                    dataset=_dataset_identity(dataset),
                )
            run_id = record.run_id
            final = run_folder(cfg, node, scenario, run_id)
            staging = _staging_folder(cfg, node, scenario, run_id)
            for mode in modes:
                spec = build_spec(cfg, run_id=run_id, node=node, scenario=scenario, mode=mode, dataset=dataset)
                handles.append(_run_mode(context, cfg, runner, record, spec, staging))
            if final.exists():  # collected before, by a materialization that died before clearing its record
                shutil.rmtree(final)
            os.replace(staging, final)
            clear_active(cfg, node, scenario)
        finally:
            lock.release()
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        for handle in handles:
            if handle is not None:
                runner.discard(handle)
        meta = run_metadata(cfg, final, run_id, node, scenario)
        meta["modes"] = ", ".join(modes)
        meta["dataset"] = dg.MetadataValue.path(str(dataset))
        meta["wall_time_s"] = round(time.monotonic() - started, 2)
        meta["dagster_run_id"] = context.run.run_id
        if record.dagster_run_id != context.run.run_id:
            meta["started_by_dagster_run"] = record.dagster_run_id  # reattached to a run an earlier one started
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
