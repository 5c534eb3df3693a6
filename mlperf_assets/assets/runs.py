"""``scenario_run``: one MLPerf LoadGen run (performance, then accuracy) per node x scenario partition.

The partition's plan (``mlperf_assets.plan``) says what each mode runs; the node's runner (resource
``runner_<node>``) runs it through ``resources.runners.ledger.PartitionRun``, which reattaches to a run an earlier
orchestrator left in flight, and collects the run folders into ``<artifact_root>/<node>/<scenario>/<run_id>/``
only when every mode succeeded. This asset logs progress to the Dagster log every ``benchmark.log_interval_s``
(and as the run tag ``mlperf/progress``). It returns the collected run (:class:`~mlperf_assets.assets.io.CollectedRun`)
to ``loadgen_results`` and ``accuracy_scores`` through its IO manager (``assets/io.py`` says why), and LoadGen's verdict,
token throughput and p99 TTFT from the performance run's summary as metadata; ``loadgen_results``, which parses the
folder into the store, attaches the other headline figures.
"""

import time
import warnings
from pathlib import Path
from typing import Any, Callable

import dagster as dg

from mlperf_assets.assets.dataset import DATASET_KEY
from mlperf_assets.assets.io import CollectedRun, collected_run_io_manager
from mlperf_assets.config import MlperfConfig, runner_resource_key
from mlperf_assets.harness.backends import BACKENDS
from mlperf_assets.harness.run_folder import SUMMARY_LOG, RunProgress
from mlperf_assets.plan import NODE_DIM, SCENARIO_DIM, PartitionPlan, prepared_dataset_path
from resources.runners.ledger import ModeProgress, PartitionRun, PartitionRunError

SCENARIO_RUN_KEY = dg.AssetKey("scenario_run")
PROGRESS_TAG = "mlperf/progress"  # the run tag that shows where a run is on the Runs page

# fn(node, scenario, mode, progress): every observation of a harness run, for whoever builds the definitions
# (``mlperf-dagster run`` draws its progress bars with it).
PartitionProgress = Callable[[str, str, str, RunProgress], None]


def split_partition(context: dg.AssetExecutionContext) -> tuple[str, str]:
    keys = context.partition_key.keys_by_dimension  # type: ignore[union-attr]
    return keys[NODE_DIM], keys[SCENARIO_DIM]


def tag_progress(context: dg.AssetExecutionContext, text: str) -> None:
    """Show ``text`` as the run's ``mlperf/progress`` tag, so the Runs page shows where each run is without opening
    its log. Never raises: progress display must never fail a run."""
    try:
        context.instance.add_run_tags(context.run.run_id, {PROGRESS_TAG: text[:250]})
    except Exception as exc:  # noqa: BLE001 - see the docstring
        context.log.debug(f"could not tag the run with its progress: {exc}")


def _progress_logger(
    context: dg.AssetExecutionContext, node: str, scenario: str, interval_s: float, forward: PartitionProgress | None
) -> ModeProgress:
    last = [0.0]

    def on_progress(mode: str, progress: RunProgress) -> None:
        if forward is not None:
            forward(node, scenario, mode, progress)
        now = time.monotonic()
        if progress.done or now - last[0] >= interval_s:
            last[0] = now
            line = progress.describe()
            context.log.info(f"{node}/{scenario} {mode}: {line}")
            tag_progress(context, f"{mode}: {line}")

    return on_progress


def _mark_cancelled(context: dg.AssetExecutionContext) -> None:
    """An interrupted step (Ctrl-C or SIGTERM on ``mlperf-dagster run``, a stopped run worker): record the Dagster
    run as being cancelled, so it ends CANCELED (as a run terminated from the UI does), not as a failure that would
    set off the failure alert. A run already being cancelled from the UI is left as it is."""
    try:
        run = context.instance.get_run_by_id(context.run.run_id)
        if run is not None and run.status not in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED):
            context.instance.report_run_canceling(run, message="interrupted: the harness run was cancelled on its node")
    except Exception as exc:  # noqa: BLE001 - the interrupt must go on regardless
        context.log.debug(f"could not mark the run as cancelled: {exc}")


def _failure(exc: PartitionRunError) -> dg.Failure:
    metadata: dict[str, Any] = {}
    if exc.run_folder:
        metadata["run_folder"] = exc.run_folder
    if exc.harness_output is not None:
        metadata["harness_output"] = dg.MetadataValue.md(f"```\n{exc.harness_output}\n```")
    return dg.Failure(description=str(exc), metadata=metadata, allow_retries=exc.retry)


def ns_to_ms(value: Any) -> float | None:
    return None if value is None else round(float(value) / 1e6, 3)


def summary_figures(performance: Path) -> dict[str, Any]:
    """LoadGen's verdict, token throughput and p99 TTFT, as its one-page summary of the performance run prints them:
    what the run's materialization shows at a glance. The run folder itself is parsed once, by ``loadgen_results``.
    Missing figures are left out; an unreadable summary gives ``parse_error``."""
    from mlperf_assets.loadgen_logs import LogFormatError, parse_summary_log, summary_headline

    try:
        summary = parse_summary_log(performance / SUMMARY_LOG)
        figures = summary_headline(summary)
    except (LogFormatError, OSError) as exc:
        return {"parse_error": str(exc)}
    found = {
        "result_validity": summary.result_validity,
        "tokens_per_second": figures["tokens_per_second"],
        "ttft_p99_ms": ns_to_ms(figures["ttft_p99_ns"]),
    }
    return {k: v for k, v in found.items() if v is not None}


def run_metadata(config: MlperfConfig, folder: Path, run_id: str, node: str, scenario: str) -> dict[str, Any]:
    """The run's metadata: what ran where, its artifacts, and LoadGen's verdict (:func:`summary_figures`)."""
    meta: dict[str, Any] = {
        "run_id": run_id,
        "node": node,
        "scenario": scenario,
        "backend": config.benchmark.backend,
        "label": BACKENDS[config.benchmark.backend].kind + ("" if not config.benchmark.is_baseline else " (not a model)"),
        "artifacts": dg.MetadataValue.path(str(folder)),
    }
    meta.update(summary_figures(folder / "performance"))
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
    made_for = (meta["benchmark"].value, meta["tokenizer"].value) if "benchmark" in meta and "tokenizer" in meta else None
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


def build_scenario_run(
    config: MlperfConfig, partitions: dg.PartitionsDefinition, on_progress: PartitionProgress | None = None
) -> dg.AssetsDefinition:
    """The asset for ``config``'s nodes over ``partitions``; ``on_progress`` sees every harness observation."""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # io_manager_def is beta in Dagster 1.13 (assets/io.py: why)
        as_asset = dg.asset(
            key=SCENARIO_RUN_KEY,
            group_name="mlperf",
            deps=[DATASET_KEY],
            partitions_def=partitions,
            io_manager_def=collected_run_io_manager,
            required_resource_keys={"mlperf_config", *(runner_resource_key(n) for n in config.node_names)},
            kinds={"python"},
            tags={"mlperf/stage": "run"},
            description=(
                "One MLPerf LoadGen run per node x scenario: performance, then accuracy, through the node's runner. "
                "Artifacts: <artifact_root>/<node>/<scenario>/<run_id>/."
            ),
        )

    @as_asset
    def scenario_run(context: dg.AssetExecutionContext) -> dg.Output[CollectedRun]:
        cfg: MlperfConfig = context.resources.mlperf_config.load()
        node, scenario = split_partition(context)
        plan = PartitionPlan(cfg, node, scenario, resolve_dataset(context, cfg))
        runner = getattr(context.resources, runner_resource_key(node))
        session = PartitionRun(runner, plan, log=context.log, dagster_run_id=context.run.run_id)
        started = time.monotonic()
        try:
            result = session.run(_progress_logger(context, node, scenario, cfg.benchmark.log_interval_s, on_progress))
        except PartitionRunError as exc:
            raise _failure(exc) from None
        except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
            _mark_cancelled(context)  # the harness run is already cancelled (runner.wait does that on the way out)
            raise
        meta = run_metadata(cfg, result.folder, result.run_id, node, scenario)
        meta["modes"] = ", ".join(run.folder for run in plan.runs(result.run_id))
        meta["dataset"] = dg.MetadataValue.path(str(plan.dataset))
        meta["wall_time_s"] = round(time.monotonic() - started, 2)
        meta["dagster_run_id"] = context.run.run_id
        if result.started_by != context.run.run_id:
            meta["started_by_dagster_run"] = result.started_by  # reattached to a run an earlier one started
        context.log.info(
            f"{node}/{scenario}: {meta.get('result_validity', '?')}, "
            f"{meta.get('tokens_per_second', 0) or 0:,.1f} tokens/s; artifacts in {result.folder}"
        )
        return dg.Output(CollectedRun(folder=result.folder, run_id=result.run_id, dataset=plan.dataset), metadata=meta)

    return scenario_run

