"""``benchmark_charts`` and ``benchmark_report``: one pass over DuckDB writes ``<report_dir>/``: the chart PNGs,
``dashboard.html`` (self-contained, offline) and ``report.md`` (latest run per node and scenario with validity,
accuracy pass/fail, the p99 limits each run was held to and regression flags; your runs vs published results; then
the charts). Both assets come from that one pass
(``mlperf_assets.reporting.build_report``), so the report never describes other charts than the ones beside it.
The WARN regression check on ``benchmark_report`` is ``mlperf_assets.assets.checks.build_regression_check``.
"""

from pathlib import Path

import dagster as dg

from mlperf_assets.assets.accuracy import ACCURACY_KEY
from mlperf_assets.assets.results import LOADGEN_RESULTS_KEY
from mlperf_assets.config import MlperfConfig
from resources.mlperf_config import MlperfConfigResource
from resources.store import ResultsStore

CHARTS_KEY = dg.AssetKey("benchmark_charts")
REPORT_KEY = dg.AssetKey("benchmark_report")
REPORT_FILE = "report.md"


def context_lines(config: MlperfConfig) -> list[str]:
    b = config.benchmark
    dataset = config.dataset
    size = dataset.max_samples if dataset.max_samples is not None else "all"
    model = " (baseline, no model)" if b.is_baseline else f" ({b.checkpoint})" if b.checkpoint else ""
    return [
        f"Config: `{config.source_path}`.",
        f"Benchmark {b.model}, backend {b.backend}{model}; dataset {dataset.source} ({size} samples).",
        f"Results store: `{config.storage.duckdb_path}`.",
    ]


def _png_gallery(png_paths: dict[str, Path], max_image_bytes: int = 400_000) -> str:
    import base64

    parts = []
    for key, path in png_paths.items():
        if path.is_file() and path.stat().st_size <= max_image_bytes:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(f"**{key}**\n\n![{key}](data:image/png;base64,{data})")
    return "\n\n".join(parts) or "_no charts drawn yet_"


@dg.multi_asset(
    specs=[
        dg.AssetSpec(CHARTS_KEY, deps=[LOADGEN_RESULTS_KEY, ACCURACY_KEY], group_name="mlperf", kinds={"plotly", "png"},
                     description="Chart PNGs and the offline dashboard.html, from every run in DuckDB."),
        dg.AssetSpec(REPORT_KEY, deps=[CHARTS_KEY], group_name="mlperf", kinds={"markdown"},
                     description="report.md: latest run per node and scenario, validity, accuracy, regressions, charts."),
    ],
    op_tags={"mlperf/stage": "report"},
)
def benchmark_report(context: dg.AssetExecutionContext, mlperf_config: MlperfConfigResource, store: ResultsStore):
    from mlperf_assets.reporting import build_report

    cfg = mlperf_config.load()
    if not store.exists():
        context.log.info(f"no results store at {store.path} yet: nothing to report")
        yield dg.MaterializeResult(asset_key=CHARTS_KEY, metadata={"note": "no results yet"})
        yield dg.MaterializeResult(asset_key=REPORT_KEY, metadata={"note": "no results yet"})
        return
    r = build_report(store.path, cfg.storage.report_dir, intro_lines=context_lines(cfg))
    context.log.info(f"wrote {r.report_path}, {len(r.png_paths)} charts and {r.dashboard_path} "
                     f"({r.n_runs} runs, {len(r.regressions)} regression flags)")
    yield dg.MaterializeResult(asset_key=CHARTS_KEY, metadata={
        "dashboard": dg.MetadataValue.path(str(r.dashboard_path)),
        "dashboard_bytes": r.dashboard_bytes,
        "charts_drawn": dg.MetadataValue.json(r.charts_drawn),
        "charts_not_drawn": dg.MetadataValue.json(r.charts_missing),
        "pngs_reused": dg.MetadataValue.json(r.pngs_reused),  # data unchanged since the last report
        "previews": dg.MetadataValue.md(_png_gallery(r.png_paths)),
    })
    yield dg.MaterializeResult(asset_key=REPORT_KEY, metadata={
        "path": dg.MetadataValue.path(str(r.report_path)),
        "runs": r.n_runs,
        "regressions": len(r.regressions),
        "report": dg.MetadataValue.md(r.markdown_with_inline_images()),
    })
