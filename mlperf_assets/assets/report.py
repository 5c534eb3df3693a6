"""``benchmark_report``: ``<report_dir>/report.md`` of the latest run per node and scenario, also shown in
Dagster as markdown metadata. The text comes from the pure ``mlperf_assets.report.build_report``."""


import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from mlperf_assets.assets.accuracy import ACCURACY_KEY
from mlperf_assets.assets.results import LOADGEN_RESULTS_KEY
from mlperf_assets.config import MlperfConfig
from resources.mlperf_config import MlperfConfigResource
from resources.store import ResultsStore

REPORT_KEY = dg.AssetKey("benchmark_report")
REPORT_FILE = "report.md"


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def latest_rows(store: ResultsStore) -> list[dict]:
    """Latest performance run per node/scenario/backend from ``run_summary`` (empty if there is no store yet)."""
    from mlperf_assets.report import LATEST_RUNS_SQL

    if not store.exists():
        return []
    return store.query(LATEST_RUNS_SQL).to_dict("records")


def context_lines(config: MlperfConfig) -> list[str]:
    b = config.benchmark
    dataset = config.dataset
    size = dataset.max_samples if dataset.max_samples is not None else "all"
    return [
        f"Config: `{config.source_path}`.",
        f"Benchmark {b.model}, backend {b.backend}"
        + (f" ({b.checkpoint})" if b.checkpoint and not b.is_baseline else " (baseline, no model)" if b.is_baseline else "")
        + f"; dataset {dataset.source} ({size} samples).",
        f"Results store: `{config.storage.duckdb_path}`.",
    ]


@dg.asset(
    key=REPORT_KEY,
    group_name="mlperf",
    deps=[LOADGEN_RESULTS_KEY, ACCURACY_KEY],
    kinds={"markdown"},
    tags={"mlperf/stage": "report"},
    description="Markdown report of the latest run per node and scenario (results/report/report.md).",
)
def benchmark_report(
    context: dg.AssetExecutionContext, mlperf_config: MlperfConfigResource, store: ResultsStore
) -> dg.MaterializeResult:
    from mlperf_assets.report import build_report

    cfg = mlperf_config.load()
    rows = latest_rows(store)
    text = build_report(rows, generated_at=datetime.now(timezone.utc), context_lines=context_lines(cfg))
    path = cfg.storage.report_dir / REPORT_FILE
    write_text_atomic(path, text)
    context.log.info(f"wrote {path} ({len(rows)} node x scenario rows)")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "rows": len(rows),
            "report": dg.MetadataValue.md(text),
        }
    )
