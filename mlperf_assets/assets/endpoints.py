"""MLPerf Endpoints in the UI: ``endpoints_plan`` (the curve's points, before any GPU time) and ``endpoint_point``,
one partition per node x point, each MLCommons' reference client run through the node's runner and the ledger
(``resources.runners.ledger.PartitionRun``: reattach after an orchestrator restart, no duplicate run, one point
re-run alone by materializing its partition again).

``endpoints_plan`` writes the client's CNN/DM parquet from the prepared dataset and plans the curve
(``endpoints/plan.py``), finding the highest concurrency from short probes when the config leaves it open
(:func:`probe_rates`); it hands the plan to the points through its output. ``endpoint_point`` logs progress like
``scenario_run`` (Dagster log + the ``mlperf/progress`` run tag), and stores the collected point through the
``store`` resource (``endpoint_points`` / ``endpoint_accuracy``).
"""

import json
import time
from pathlib import Path
from typing import Any, Callable

import dagster as dg

from mlperf_assets.assets.dataset import DATASET_KEY
from mlperf_assets.assets.runs import _mark_cancelled, resolve_dataset, tag_progress
from mlperf_assets.config import MlperfConfig, runner_resource_key
from mlperf_assets.endpoints.plan import EndpointsPlan, auto_points
from mlperf_assets.endpoints.runs import (
    NODE_DIM,
    POINT_DIM,
    EndpointPointPlan,
    client_dataset_path,
    dataset_samples,
    endpoints_node,
    write_client_dataset,
)
from mlperf_assets.harness.run_folder import CLIENT_REPORT_DIR, RunProgress
from resources.runners.ledger import PartitionRun, PartitionRunError

ENDPOINTS_PLAN_KEY = dg.AssetKey("endpoints_plan")
ENDPOINT_POINT_KEY = dg.AssetKey("endpoint_point")
ENDPOINTS_PLAN_JOB, ENDPOINT_POINT_JOB = "endpoints_plan_job", "endpoint_point_job"
POINTS_PARTITIONS = "endpoint_points"  # the dynamic point dimension, when C_max is found by probes

# fn(node, label, progress): every observation of a point's run (``mlperf-dagster endpoints run`` prints them)
PointProgress = Callable[[str, str, RunProgress], None]


def point_labels(config: MlperfConfig) -> list[str] | None:
    """The curve's point labels when the config fixes them (listed points or a set highest concurrency), else None
    (the plan finds C_max from probes, and the point dimension is dynamic)."""
    ep = config.endpoints
    assert ep is not None
    if isinstance(ep.points, list):
        conc = list(ep.points)
    elif ep.highest_concurrency is not None:
        conc = auto_points(ep.lowest_concurrency, ep.highest_concurrency)
    else:
        return None
    return [f"c{c}" for c in conc] + (["offline"] if ep.offline == "dedicated" else [])


def endpoint_partitions(config: MlperfConfig) -> dg.MultiPartitionsDefinition:
    labels = point_labels(config)
    points = (dg.StaticPartitionsDefinition(labels) if labels is not None
              else dg.DynamicPartitionsDefinition(name=POINTS_PARTITIONS))
    return dg.MultiPartitionsDefinition({NODE_DIM: dg.StaticPartitionsDefinition([endpoints_node(config)]),
                                         POINT_DIM: points})


def _prober(context: dg.AssetExecutionContext, cfg: MlperfConfig, parquet: Path, samples: int) -> Callable:
    """probe(concurrency) -> KneeStep: one short client run through the node's runner and the ledger, its figures
    read as the checker computes them (``endpoints/results.py``)."""
    from mlperf_assets.endpoints.plan import KneeStep, probe_point
    from mlperf_assets.endpoints.results import read_point

    node = endpoints_node(cfg)
    runner = getattr(context.resources, runner_resource_key(node))

    def probe(concurrency: int | None) -> KneeStep:
        plan, point = probe_point(cfg.endpoints, samples, concurrency)
        run_plan = EndpointPointPlan(cfg, node, plan, point, parquet)
        try:
            result = PartitionRun(runner, run_plan, log=context.log, dagster_run_id=context.run.run_id).run()
        except PartitionRunError as exc:
            raise dg.Failure(description=f"probe {point.label}: {exc}", allow_retries=exc.retry) from None
        row = read_point(result.folder).row
        duration = float(row.get("duration_s") or 0.0)
        rate = (row.get("n_samples_completed") or 0) / duration if duration > 0 else 0.0
        step = KneeStep(concurrency, float(row.get("system_tps") or 0.0), rate)
        context.log.info(f"probe {point.label}: {step.system_tps:,.1f} system tokens/s, {rate:,.2f} samples/s")
        tag_progress(context, f"probe {point.label}: {step.system_tps:,.1f} tok/s")
        return step

    return probe


def build_endpoints_plan(config: MlperfConfig) -> dg.AssetsDefinition:
    node_name = endpoints_node(config)

    @dg.asset(key=ENDPOINTS_PLAN_KEY, group_name="endpoints", deps=[DATASET_KEY],
              required_resource_keys={"mlperf_config", runner_resource_key(node_name)}, kinds={"python"},
              tags={"mlperf/stage": "plan"},
              description="The MLPerf Endpoints curve's points (regions, accuracy, queries), planned before any GPU "
              "time with the checker's own region rules; C_max and the queries per point from short probes where "
              "the config leaves them open. Writes the client's CNN/DM parquet.")
    def endpoints_plan(context: dg.AssetExecutionContext) -> dg.Output[EndpointsPlan]:
        from mlperf_assets.endpoints.plan import EndpointsPlanError, needs_probes, plan_curve, plan_with_probes

        cfg: MlperfConfig = context.resources.mlperf_config.load()
        if cfg.endpoints is None:
            raise dg.Failure(description="the config has no endpoints: block", allow_retries=False)
        parquet = client_dataset_path(cfg)
        prepared = resolve_dataset(context, cfg)
        if not parquet.is_file() or parquet.stat().st_mtime < prepared.stat().st_mtime:
            write_client_dataset(prepared, parquet)
        samples = dataset_samples(parquet)
        steps: list = []
        try:
            if needs_probes(cfg.endpoints):
                plan, steps = plan_with_probes(cfg.endpoints, samples, _prober(context, cfg, parquet, samples),
                                               context.log.info)
            else:
                plan = plan_curve(cfg.endpoints, samples)
        except EndpointsPlanError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        if point_labels(cfg) is None:
            context.instance.add_dynamic_partitions(POINTS_PARTITIONS, plan.labels)
        context.log.info("\n" + plan.table())
        meta: dict[str, Any] = {
            "plan": dg.MetadataValue.md(f"```\n{plan.table()}\n```"), "points": len(plan.points),
            "official": plan.official, "c_min": plan.c_min, "c_max": plan.c_max, "dataset": str(parquet),
            "dataset_samples": samples,
        }
        if steps:
            meta["probes"] = dg.MetadataValue.json([{"concurrency": s.concurrency, "system_tps": s.system_tps,
                                                      "samples_per_s": s.samples_per_s} for s in steps])
        return dg.Output(plan, metadata=meta)

    return endpoints_plan


def _figures(folder: Path) -> dict[str, Any]:
    """The client's own headline counts of the performance run (the store holds the checker-exact figures)."""
    try:
        summary = json.loads((folder / CLIENT_REPORT_DIR / "performance" / "result_summary.json").read_text())
    except (OSError, ValueError):
        return {}
    out = {k: summary.get(k) for k in ("n_samples_issued", "n_samples_completed", "n_samples_failed")}
    if summary.get("duration_ns"):
        out["duration_s"] = round(summary["duration_ns"] / 1e9, 3)
    if summary.get("qps") is not None:
        out["client_qps"] = round(float(summary["qps"]), 3)
    return {k: v for k, v in out.items() if v is not None}


def build_endpoint_point(config: MlperfConfig, on_progress: PointProgress | None = None) -> dg.AssetsDefinition:
    node_name = endpoints_node(config)

    @dg.asset(key=ENDPOINT_POINT_KEY, group_name="endpoints", partitions_def=endpoint_partitions(config),
              ins={"plan": dg.AssetIn(ENDPOINTS_PLAN_KEY)},
              required_resource_keys={"mlperf_config", "store", runner_resource_key(node_name)},
              kinds={"python"}, tags={"mlperf/stage": "run"},
              description="One MLPerf Endpoints point per node x point: MLCommons' reference client (performance, "
              "then accuracy at accuracy points) through the node's runner. Artifacts: "
              "<artifact_root>/endpoints/<node>/<label>/<run_id>/.")
    def endpoint_point(context: dg.AssetExecutionContext, plan: EndpointsPlan) -> dg.MaterializeResult:
        cfg: MlperfConfig = context.resources.mlperf_config.load()
        keys = context.partition_key.keys_by_dimension  # type: ignore[union-attr]
        node, label = keys[NODE_DIM], keys[POINT_DIM]
        if label not in plan.labels:
            raise dg.Failure(description=f"point {label} is not in the current plan ({', '.join(plan.labels)}): "
                             "materialize endpoints_plan again", allow_retries=False)
        run_plan = EndpointPointPlan(cfg, node, plan, plan.point(label), client_dataset_path(cfg))
        runner = getattr(context.resources, runner_resource_key(node))
        last = [0.0]

        def progress(_key: str, observed: RunProgress) -> None:
            if on_progress is not None:
                on_progress(node, label, observed)
            now = time.monotonic()
            if observed.done or now - last[0] >= cfg.benchmark.log_interval_s:
                last[0] = now
                context.log.info(f"{node}/{label}: {observed.describe()}")
                tag_progress(context, f"{label}: {observed.describe()}")

        started = time.monotonic()
        try:
            result = PartitionRun(runner, run_plan, log=context.log, dagster_run_id=context.run.run_id).run(progress)
        except PartitionRunError as exc:
            raise dg.Failure(description=str(exc), allow_retries=exc.retry,
                             metadata={"run_folder": exc.run_folder or ""}) from None
        except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
            _mark_cancelled(context)  # the point is already cancelled on its node (runner.wait does that)
            raise
        meta: dict[str, Any] = {"run_id": result.run_id, "node": node, "label": label,
                                "concurrency": plan.point(label).concurrency or "Offline",
                                "official": plan.official, "artifacts": dg.MetadataValue.path(str(result.folder)),
                                "wall_time_s": round(time.monotonic() - started, 2), **_figures(result.folder)}
        if result.started_by != context.run.run_id:
            meta["started_by_dagster_run"] = result.started_by
        from mlperf_assets.endpoints.results import load_references

        row = context.resources.store.ingest_endpoint_point(result.folder,
                                                            references=load_references(client_dataset_path(cfg)))
        for key in ("system_tps", "tps_per_user", "ttft_p90_ms", "tpot_p90_ms"):
            if row.get(key) is not None:
                meta[key] = row[key]
        return dg.MaterializeResult(metadata=meta)

    return endpoint_point


def build_endpoints_assets(config: MlperfConfig, on_progress: PointProgress | None = None) -> list:
    """The Endpoints assets for a config with an ``endpoints:`` block (none without one)."""
    if config.endpoints is None:
        return []
    return [build_endpoints_plan(config), build_endpoint_point(config, on_progress)]


def build_endpoints_jobs(config: MlperfConfig) -> list:
    if config.endpoints is None:
        return []
    return [dg.define_asset_job(ENDPOINTS_PLAN_JOB, selection=[ENDPOINTS_PLAN_KEY]),
            dg.define_asset_job(ENDPOINT_POINT_JOB, selection=[ENDPOINT_POINT_KEY])]
