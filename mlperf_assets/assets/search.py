"""``max_qps_search``: the highest Server / Interactive target_qps that stays VALID, per node x {Server, Interactive}.

A thin asset over ``mlperf_assets.search.search_node``: short LoadGen probes through the node's runner (bracketing,
then bisection), one full-length confirmation run, every step stored through the ``store`` resource (DuckDB
``qps_search``; each probe's run in ``run_summary``). Each step is a line in the Dagster log and the run tag
``mlperf/progress``; the metadata holds the chosen rate, the steps and the suggestion
(``benchmark.scenarios.Server.target_qps``), also written to ``<report_dir>/qps_search_<node>_<scenario>.yaml``.
Materializing it again with the same config resumes the stored search (nothing is measured twice); ``search-qps
--fresh`` starts over.
"""

import time
from typing import Any, Callable

import dagster as dg

from mlperf_assets.assets.dataset import DATASET_KEY
from mlperf_assets.assets.runs import resolve_dataset, tag_progress
from mlperf_assets.config import MlperfConfig, runner_resource_key
from mlperf_assets.plan import NODE_DIM, SCENARIO_DIM

MAX_QPS_SEARCH_KEY = dg.AssetKey("max_qps_search")
FRESH_TAG = "mlperf/search-fresh"  # a run tagged "true" starts a new search instead of resuming the stored one

# fn(node, label, step, reused): every step of a search as it is decided (``search-qps`` prints them)
SearchStepListener = Callable[[str, str, Any, bool], None]


def search_partitions(config: MlperfConfig) -> dg.MultiPartitionsDefinition:
    """node x {Server, Interactive} (Interactive only where the benchmark registry has an -interactive model)."""
    from mlperf_assets.search import search_labels

    return dg.MultiPartitionsDefinition({
        NODE_DIM: dg.StaticPartitionsDefinition(config.node_names),
        SCENARIO_DIM: dg.StaticPartitionsDefinition(search_labels(config)),
    })


def _steps_table(steps: list) -> str:
    import pandas as pd

    from mlperf_assets.reporting.text import fmt_ms, markdown_table

    return markdown_table(pd.DataFrame([
        {"step": s.step, "kind": s.kind, "target QPS": "–" if s.target_qps is None else f"{s.target_qps:,.2f}",
         "verdict": s.verdict or "–", "TTFT p99 ms": fmt_ms(s.ttft_p99_ns), "TPOT p99 ms": fmt_ms(s.tpot_p99_ns),
         "run": s.run_id or "–"}
        for s in steps
    ]), empty="_no steps_")


def build_max_qps_search(config: MlperfConfig, partitions: dg.PartitionsDefinition | None = None,
                         on_step: SearchStepListener | None = None) -> dg.AssetsDefinition:
    partitions = partitions or search_partitions(config)

    @dg.asset(
        key=MAX_QPS_SEARCH_KEY,
        group_name="mlperf",
        deps=[DATASET_KEY],
        partitions_def=partitions,
        required_resource_keys={"mlperf_config", "store", *(runner_resource_key(n) for n in config.node_names)},
        kinds={"python", "duckdb"},
        tags={"mlperf/stage": "search"},
        description=(
            "Capacity search: the highest Server (or Interactive) target_qps that stays VALID on the node, by short "
            "LoadGen probes (bracketing + bisection, judged by LoadGen's verdict and p99 TTFT/TPOT with a margin) "
            "and a full-length confirmation run. Steps in DuckDB (qps_search); re-materializing resumes."
        ),
    )
    def max_qps_search(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from mlperf_assets.search import FOUND, SearchError, search_node, suggestion_lines
        from resources.runners.ledger import PartitionRunError

        cfg: MlperfConfig = context.resources.mlperf_config.load()
        keys = context.partition_key.keys_by_dimension  # type: ignore[union-attr]
        node, label = keys[NODE_DIM], keys[SCENARIO_DIM]
        runner = getattr(context.resources, runner_resource_key(node))
        fresh = context.run.tags.get(FRESH_TAG) == "true"
        last_note = [0.0]

        def step_seen(step: Any, reused: bool) -> None:
            line = ("(stored) " if reused else "") + step.describe()
            context.log.info(f"{node}/{label} search: {line}")
            tag_progress(context, f"{label} {line}")
            if on_step is not None:
                on_step(node, label, step, reused)

        def progress_seen(kind: str, progress: Any) -> None:
            now = time.monotonic()
            if progress.done or now - last_note[0] >= cfg.benchmark.log_interval_s:
                last_note[0] = now
                context.log.info(f"{node}/{label} {kind} run: {progress.describe()}")

        started = time.monotonic()
        try:
            result = search_node(cfg, node, label, runner, resolve_dataset(context, cfg),
                                 dagster_run_id=context.run.run_id, log=context.log, store=context.resources.store,
                                 fresh=fresh, on_step=step_seen, on_progress=progress_seen)
        except (PartitionRunError, SearchError) as exc:
            raise dg.Failure(
                description=f"{node}/{label} search stopped: {exc}. The steps measured so far are stored; "
                            "materializing this partition again resumes the search.",
                allow_retries=getattr(exc, "retry", False),
            ) from None
        outcome = result.outcome
        meta: dict[str, Any] = {
            "status": outcome.status,
            "search_id": result.search_id,
            "lg_model_name": result.lg_model_name,
            "message": outcome.message,
            "probes": outcome.probes,
            "steps_reused": result.reused,
            "steps": dg.MetadataValue.md(_steps_table(outcome.steps)),
            "suggestion_file": dg.MetadataValue.path(str(result.suggestion_file)),
            "wall_time_s": round(time.monotonic() - started, 2),
            "backend": cfg.benchmark.backend,
        }
        if outcome.qps is not None:
            meta["target_qps"] = round(outcome.qps, 4)
            meta["suggestion"] = dg.MetadataValue.md(
                "```yaml\n" + "\n".join(suggestion_lines(label, result.lg_model_name, outcome.qps)) + "\n```")
        context.log.info(f"{node}/{label} search: {outcome.message}")
        if outcome.status != FOUND:
            raise dg.Failure(description=f"{node}/{label} search: {outcome.message}", metadata=meta,
                             allow_retries=False)
        return dg.MaterializeResult(metadata=meta)

    return max_qps_search
