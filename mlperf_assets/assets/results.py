"""``loadgen_results``: a partition's latest run folders parsed into the DuckDB store.

The run comes from ``scenario_run`` as a value (:class:`~mlperf_assets.assets.io.CollectedRun`, through its IO
manager). Ingesting is the one parse of the run folder, so the performance run's headline figures (as the store holds
them) are this asset's metadata.

Re-materializing a partition re-ingests the same run folders: the store replaces their rows (keyed by the harness
run id and mode), so nothing is duplicated. History across materializations of ``scenario_run`` (each a new run id)
stays in DuckDB.
"""

from typing import Any

import dagster as dg
import pandas as pd

from mlperf_assets.assets.io import CollectedRun
from mlperf_assets.assets.runs import SCENARIO_RUN_KEY, ns_to_ms, split_partition
from mlperf_assets.reporting.text import fmt_ms, fmt_number, fmt_text, markdown_table
from resources.mlperf_config import MlperfConfigResource
from resources.store import ResultsStore

LOADGEN_RESULTS_KEY = dg.AssetKey("loadgen_results")
_SUMMARY_COLUMNS = ("run_id", "mode", "result_validity", "samples_per_second", "tokens_per_second", "latency_p99_ns",
                    "ttft_p99_ns", "tpot_p99_ns", "min_duration_met", "backend_kind")


def _plain(value: Any) -> Any:
    """A DataFrame cell as a plain value for metadata: None for a null, else a bool, str or float."""
    if value is None or pd.isna(value):
        return None
    if pd.api.types.is_bool(value):
        return bool(value)
    return value if isinstance(value, str) else float(value)


def headline_metadata(perf: dict[str, Any]) -> dict[str, Any]:
    """The performance run's headline figures from its ``run_summary`` row, as metadata (missing ones left out)."""
    figures = {
        "samples_per_second": _plain(perf.get("samples_per_second")),
        "tokens_per_second": _plain(perf.get("tokens_per_second")),
        "latency_p99_ms": ns_to_ms(_plain(perf.get("latency_p99_ns"))),
        "ttft_p99_ms": ns_to_ms(_plain(perf.get("ttft_p99_ns"))),
        "tpot_p99_ms": ns_to_ms(_plain(perf.get("tpot_p99_ns"))),
        "min_duration_met": _plain(perf.get("min_duration_met")),
        "backend_kind": _plain(perf.get("backend_kind")),
    }
    return {k: v for k, v in figures.items() if v is not None}


def build_loadgen_results(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=LOADGEN_RESULTS_KEY,
        group_name="mlperf",
        ins={"run": dg.AssetIn(SCENARIO_RUN_KEY)},
        partitions_def=partitions,
        kinds={"duckdb"},
        tags={"mlperf/stage": "results"},
        description="The partition's latest LoadGen logs (performance and accuracy runs) ingested into DuckDB.",
        check_specs=[
            dg.AssetCheckSpec(
                "loadgen_result_valid",
                asset=LOADGEN_RESULTS_KEY,
                description="LoadGen reported 'Result is: VALID' for the performance run (WARN for baselines).",
            )
        ],
    )
    def loadgen_results(
        context: dg.AssetExecutionContext, run: CollectedRun, mlperf_config: MlperfConfigResource, store: ResultsStore
    ) -> dg.MaterializeResult:
        from mlperf_assets.loadgen_logs import LogFormatError
        from mlperf_assets.store import StoreError

        cfg = mlperf_config.load()
        node, scenario = split_partition(context)
        folder = run.folder
        try:
            ingested = store.ingest(folder, node=node, dagster_run_id=context.run.run_id)
        except (LogFormatError, StoreError) as exc:
            raise dg.Failure(description=f"ingesting {folder} failed (nothing written): {exc}") from None
        if not ingested:
            raise dg.Failure(description=f"no LoadGen run found in {folder}")
        perf = [r for r in ingested if r.mode == "performance"]
        validity = perf[0].result_validity if perf else None
        ids = [r.run_id for r in ingested]
        rows = store.query(
            f"SELECT {', '.join(_SUMMARY_COLUMNS)} FROM run_summary WHERE list_contains(?, run_id) ORDER BY mode DESC",
            [ids],
        ).to_dict("records")
        perf_rows = [r for r in rows if r["mode"] == "performance"]
        table = markdown_table(pd.DataFrame(
            [{"run_id": r["run_id"], "mode": r["mode"], "validity": fmt_text(r["result_validity"]),
              "samples/s": fmt_number(r["samples_per_second"]), "tokens/s": fmt_number(r["tokens_per_second"]),
              "TTFT p99 ms": fmt_ms(r["ttft_p99_ns"]), "TPOT p99 ms": fmt_ms(r["tpot_p99_ns"])}
             for r in rows]
        ), empty="_no rows_")
        baseline = cfg.benchmark.is_baseline
        check = dg.AssetCheckResult(
            check_name="loadgen_result_valid",
            passed=validity == "VALID",
            severity=dg.AssetCheckSeverity.WARN if baseline else dg.AssetCheckSeverity.ERROR,
            metadata={"result_validity": validity or "unknown", "baseline": baseline},
        )
        context.log.info(f"{node}/{scenario}: ingested {len(ingested)} run(s) from {folder}: {', '.join(ids)}")
        return dg.MaterializeResult(
            metadata={
                "runs": len(ingested),
                "run_ids": ", ".join(ids),
                "result_validity": validity or "unknown",
                **(headline_metadata(perf_rows[0]) if perf_rows else {}),
                "duckdb": dg.MetadataValue.path(store.path),
                "source": dg.MetadataValue.path(str(folder)),
                "summary": dg.MetadataValue.md(table),
            },
            check_results=[check],
        )

    return loadgen_results
