"""`mlperf-dagster report`: the markdown report, chart PNGs and the offline dashboard from any results store."""

from __future__ import annotations

import argparse
import os

DEFAULT_DB = os.path.join("results", "mlperf.duckdb")
DEFAULT_OUT = os.path.join("results", "report")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write report.md, chart PNGs and dashboard.html from a DuckDB results store",
        description=(
            "Write the results report from a DuckDB store: report.md (the latest run per node and scenario with "
            "validity, accuracy pass/fail, the p99 limits each run was held to and regression flags; your runs vs "
            "published results on the same accelerator; then the charts), one PNG per chart beside it, "
            "and dashboard.html (one self-contained file with plotly.js inline: open it offline, hover for "
            "details, pick a run). Each run is judged by its own rules: the limits its LoadGen log states, else "
            "its benchmark's, and its benchmark's accuracy targets. Works on any store, including one filled by "
            "`mlperf-dagster ingest` from MLPerf submission logs (with a results tree's systems/*.json, the "
            "published context); charts that need our harness's per-sample or progress data are then listed as "
            "not drawn. PNGs whose data did not change since the last report into --out are reused."
        ),
        epilog=(
            "examples:\n"
            "  mlperf-dagster report\n"
            "  mlperf-dagster ingest ../inference_results_v5.1 --db /tmp/r.duckdb   # published context\n"
            "  mlperf-dagster report --db /tmp/r.duckdb --out /tmp/r-report --regression-threshold 5"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", default=None, metavar="DB",
                        help="DuckDB results store (default: storage.duckdb_path of the config chosen by "
                             f"$MLPERF_DAGSTER_CONFIG, else of config/config.yaml: {DEFAULT_DB})")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder for report.md, the PNGs and dashboard.html (default: storage.report_dir of "
                             f"the config: {DEFAULT_OUT})")
    parser.add_argument("--regression-threshold", type=float, default=10.0, metavar="PCT",
                        help="flag a run whose tokens/s fell, or whose p99 TTFT/TPOT rose, by more than PCT "
                             "percent against the median of earlier runs of the same node/scenario/backend "
                             "(default: 10)")
    parser.add_argument("--regression-window", type=int, default=5, metavar="N",
                        help="how many earlier runs form the baseline median (default: 5)")
    parser.add_argument("--title", default="MLPerf Inference LLM results", help="report and dashboard title")
    parser.set_defaults(func=run_report)


def _config_paths() -> tuple[str, str]:
    """(duckdb_path, report_dir) of the config ($MLPERF_DAGSTER_CONFIG, else the embedded default)."""
    try:
        from mlperf_assets.config import load_config

        cfg = load_config(None, use_env_dataset=False)
        return str(cfg.storage.duckdb_path), str(cfg.storage.report_dir)
    except Exception:  # a broken config is `validate-config`'s business; the plain defaults still work
        return DEFAULT_DB, DEFAULT_OUT


def run_report(args: argparse.Namespace) -> int:
    from mlperf_assets.errors import UserError
    from mlperf_assets.reporting import ReportError, build_report
    from mlperf_assets.store import StoreError

    if args.regression_threshold < 0:
        raise UserError(f"--regression-threshold must be a percentage >= 0, got {args.regression_threshold:g}")
    if args.regression_window < 1:
        raise UserError(f"--regression-window must be >= 1, got {args.regression_window}")
    default_db, default_out = _config_paths() if args.db is None or args.out is None else (None, None)
    db = args.db or default_db
    out = args.out or default_out
    if not os.path.isfile(db):
        raise UserError(f"{db}: no such results store (fill one with `mlperf-dagster ingest PATH --db {db}` "
                        "or `mlperf-dagster demo`)")
    from mlperf_assets.harness.outputs import check_output_folder

    # It writes report.md, dashboard.html and <chart>.png into --out and removes the chart PNGs it no longer draws.
    check_output_folder(out, option="--out", keeps={"the results store": db}, replaces=False)
    try:
        result = build_report(db, out, regression_threshold_pct=args.regression_threshold,
                              regression_window=args.regression_window, title=args.title)
    except (StoreError, ReportError) as exc:
        raise UserError(str(exc)) from None
    print(f"report: {result.report_path} ({result.n_runs} runs, {len(result.charts_drawn)} charts)")
    print(f"dashboard: {result.dashboard_path} ({result.dashboard_bytes / 1e6:.1f} MB, works offline)")
    if result.pngs_reused:
        print(f"PNGs reused (data unchanged): {', '.join(result.pngs_reused)}")
    for key, reason in result.charts_missing.items():
        print(f"not drawn: {key}: {reason}")
    for flag in result.regressions:
        print(f"REGRESSION: {flag.message}")
    return 0
