"""The results report from a DuckDB store: `report.md`, one PNG per chart beside it, and `dashboard.html`.

The package: `build_report` here; `text` (formatters, markdown tables, caveats), `dashboard` (the offline HTML
page), `regression` (each run against the median of its earlier runs). Figures come from `mlperf_assets.charts`.

`build_report(db_path, out_dir)` works on any store: one filled by our pipeline (per-sample timings and progress
included) or one filled by `mlperf-dagster ingest` from submission logs alone, in which case the charts that need
our harness's data are listed as such. No Dagster here: the `benchmark_report` asset and the `report` command both
call this function.

Every file is written to a temporary name in `out_dir` and renamed into place, PNGs first and `report.md` last, so
a reader never sees a half-written file or a report pointing at a missing picture.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path, PurePath

import pandas as pd

from mlperf_assets import charts as ch
from mlperf_assets.harness.files import write_atomic
from mlperf_assets.reporting.regression import (
    DEFAULT_THRESHOLD_PCT,
    DEFAULT_WINDOW,
    RegressionFlag,
    detect_regressions,
    flags_by_run,
    latest_run_ids,
)
from mlperf_assets.reporting.text import fmt_ms, markdown_table, notes_section
from mlperf_assets.search import drop_probe_runs, search_charts

REPORT_NAME = "report.md"
DASHBOARD_NAME = "dashboard.html"
CHART_KEYS = (
    "throughput_over_time", "server_ttft_tpot", "latency_percentiles", "latency_distribution",
    "throughput_timeline", "rouge_vs_target", "node_comparison", "qps_search",
)
# Columns outside the public run_summary view that make the charts better when the store has them (p90s, and the
# LoadGen model name and logged TTFT/TPOT limits that say which limits a Server run is judged against).
_EXTRA_RUN_COLUMNS = ("ttft_p90_ns", "tpot_p90_ns", "lg_model_name", "ttft_latency_ns", "tpot_latency_ns")
_detail_ms = partial(fmt_ms, digits=1, unit=" ms", missing="–")  # the dashboard's run details


class ReportError(Exception):
    """The report cannot be written (bad output folder, unusable store): one line saying what and where."""


@dataclass
class ReportResult:
    out_dir: Path
    report_path: Path
    dashboard_path: Path
    png_paths: dict[str, Path]
    charts_drawn: list[str]
    charts_missing: dict[str, str]  # chart key -> why it is not drawn
    needs_harness_data: list[str]  # titles of charts that only our harness's data can feed
    regressions: list[RegressionFlag]  # flags of the latest run of each node/scenario/benchmark/backend
    all_regressions: list[RegressionFlag]
    n_runs: int
    summary_table: pd.DataFrame
    markdown: str
    dashboard_bytes: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)

    def markdown_with_inline_images(self, max_image_bytes: int = 400_000) -> str:
        """The report with its PNGs inlined as base64 (for Dagster metadata, which cannot show files)."""

        def inline(match: re.Match) -> str:
            alt, name = match.group(1), match.group(2)
            path = self.out_dir / name
            if not path.is_file() or path.stat().st_size > max_image_bytes:
                return match.group(0)
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            return f"![{alt}](data:image/png;base64,{data})"

        return re.sub(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)", inline, self.markdown)


# ------------------------------------------------------------------------------------------------------ loading


def load_summary(db_path: str | os.PathLike) -> pd.DataFrame:
    """`run_summary`, plus p90 TTFT/TPOT from `runs` when the store has them, with display labels filled in."""
    from mlperf_assets import store

    extra = ", ".join(f"r.{c}" for c in _EXTRA_RUN_COLUMNS)
    try:
        df = store.query(db_path, f"SELECT s.*, {extra} FROM run_summary s LEFT JOIN runs r USING (run_id)")
    except store.StoreError as exc:
        if "no such database" in str(exc):
            raise
        df = store.query(db_path, "SELECT * FROM run_summary")
    return drop_probe_runs(db_path, fill_missing_labels(_plain_dtypes(df)))  # capacity-search probes stay out


def _plain_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Arrow strings and masked ints/bools make every row access slow (~10x): use objects and float64 instead.

    Nanosecond latencies stay exact as float64 up to 2**53 ns (104 days)."""
    out = {}
    for column in df.columns:
        series = df[column]
        kind = str(series.dtype)
        if kind in ("Int64", "Int32", "Int16", "Int8", "UInt64", "UInt32"):
            out[column] = series.astype("float64")
        elif kind in ("string", "str", "boolean") or isinstance(series.dtype, pd.StringDtype):
            out[column] = pd.Series([None if pd.isna(v) else v for v in series], index=df.index, dtype=object)
        else:
            out[column] = series
    return pd.DataFrame(out, index=df.index)


_RUN_FOLDER = re.compile(r"^(performance|accuracy|compliance|TEST\d+)$", re.IGNORECASE)


def labels_from_path(source_path: str) -> tuple[str | None, str | None]:
    """(node, benchmark) guessed from a submission path, for runs ingested without a manifest.

    Submission trees are `.../results/<system>/<benchmark>/<scenario>/performance/run_1`; flattened copies name the
    scenario folder `<source>__<system>__<benchmark>__<scenario>`.
    """
    parts = PurePath(str(source_path)).parts
    for i, part in enumerate(parts):
        if _RUN_FOLDER.match(part) and i >= 1:
            folder = parts[i - 1]
            bits = folder.split("__")
            if len(bits) >= 4:
                return bits[-3], bits[-2]
            if i >= 3:
                return parts[i - 3], parts[i - 2]
            return None, None
    return None, None


def fill_missing_labels(summary: pd.DataFrame) -> pd.DataFrame:
    """Runs without node/benchmark (submission logs without a manifest) get them from system or the path."""
    if summary.empty:
        return summary
    df = summary.copy()
    for column in ("node", "benchmark", "backend", "backend_kind", "scenario_label"):
        if column not in df.columns:
            df[column] = None
    guessed = [labels_from_path(p) if isinstance(p, str) else (None, None) for p in df["source_path"]]
    system = df["system"] if "system" in df.columns else pd.Series([None] * len(df), index=df.index)
    df["node"] = pd.Series([
        n if isinstance(n, str) and n else (s if isinstance(s, str) and s else (g[0] or "unknown"))
        for n, s, g in zip(df["node"], system, guessed)
    ], index=df.index, dtype=object)
    df["benchmark"] = pd.Series([
        b if isinstance(b, str) and b else (g[1] or "unknown") for b, g in zip(df["benchmark"], guessed)
    ], index=df.index, dtype=object)
    return df


def _load_child(db_path, table: str, columns: str, run_ids: list[str]) -> pd.DataFrame:
    from mlperf_assets import store

    if not run_ids:
        return pd.DataFrame()
    placeholders = ", ".join("?" for _ in run_ids)
    return store.query(db_path, f"SELECT {columns} FROM {table} WHERE run_id IN ({placeholders})", list(run_ids))


def _runs_with(db_path, table: str) -> set[str]:
    from mlperf_assets import store

    return set(store.query(db_path, f"SELECT DISTINCT run_id FROM {table}")["run_id"].astype(str))


# ------------------------------------------------------------------------------------------------------ building


def build_report(
    db_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    regression_threshold_pct: float = DEFAULT_THRESHOLD_PCT,
    regression_window: int = DEFAULT_WINDOW,
    title: str = "MLPerf Inference LLM results",
    intro_lines: list[str] | None = None,
    max_dashboard_runs: int = 300,
    max_run_figures: int = 40,
    now: datetime | None = None,
) -> ReportResult:
    """Write report.md, the chart PNGs and dashboard.html into `out_dir`; return what was written.

    `intro_lines` (markdown, e.g. which config and dataset) go under the title of report.md and the dashboard.

    Raises `store.StoreError` (missing or unusable database) and `ReportError` (unusable output folder).
    """
    import time

    from mlperf_assets.reporting import dashboard as dash

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: exists and is not a folder (the report goes into a folder)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"{out}: cannot create the report folder: {exc.strerror or exc}") from None
    now = now or datetime.now(timezone.utc)

    summary = load_summary(db_path)
    with_samples = _runs_with(db_path, "sample_timings") if not summary.empty else set()
    with_progress = _runs_with(db_path, "progress") if not summary.empty else set()
    timings["query_s"] = time.perf_counter() - t0

    all_flags = detect_regressions(summary, regression_threshold_pct, window=regression_window)
    latest_ids = latest_run_ids(summary)
    current_flags = [f for f in all_flags if f.run_id in latest_ids]
    colors = ch.node_colors(summary["node"]) if not summary.empty else {}

    # Per-sample and progress charts: the latest run of each group that has such data.
    perf = ch.performance_runs(summary)
    latest = ch.latest_per_group(perf) if not perf.empty else perf
    sample_runs = latest[latest["run_id"].astype(str).isin(with_samples)] if not latest.empty else latest
    progress_runs = latest[latest["run_id"].astype(str).isin(with_progress)] if not latest.empty else latest
    samples = _load_child(db_path, "sample_timings", "run_id, issue_ns, first_token_ns, complete_ns, output_tokens",
                          list(sample_runs["run_id"].astype(str)) if not sample_runs.empty else [])
    progress = _load_child(db_path, "progress", "run_id, elapsed_s, completed, tokens_per_s",
                           list(progress_runs["run_id"].astype(str)) if not progress_runs.empty else [])
    timings["child_query_s"] = time.perf_counter() - t0 - timings["query_s"]

    t1 = time.perf_counter()
    built = [
        ch.throughput_over_time(summary, colors),
        ch.server_latency_vs_limits(summary, colors),
        ch.latency_percentiles(summary, colors),
        ch.latency_distribution(samples, sample_runs, colors),
        ch.progress_timeline(progress, progress_runs, colors),
        ch.rouge_vs_target(summary, colors=colors),
        ch.node_comparison_table(summary, flags_by_run(current_flags)),
        *search_charts(db_path, colors),  # the capacity search (max_qps_search), when the store has one
    ]
    timings["charts_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    png_paths: dict[str, Path] = {}
    for chart in built:
        if chart.available:
            png_paths[chart.key] = write_atomic(out / f"{chart.key}.png", chart.png())
    for key in CHART_KEYS:  # a chart drawn last time but not now must not linger beside the new report
        stale = out / f"{key}.png"
        if key not in png_paths and stale.exists():
            stale.unlink()
    timings["png_s"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    table = ch.summary_table(summary, flags_by_run(current_flags))
    subtitle = _subtitle(summary, db_path, now)
    runs_view = _run_views(db_path, summary, colors, with_samples, with_progress, all_flags,
                           max_dashboard_runs, max_run_figures)
    notes = [*(intro_lines or []),
             f"Regression threshold {regression_threshold_pct:g}%: each run against the median of up to "
             f"{regression_window} earlier runs of the same node, scenario, benchmark and backend."]
    page = dash.build_dashboard_html(
        title=title, subtitle=subtitle, summary=table, charts=built, runs=runs_view,
        regressions=[f.message for f in current_flags], notes=notes,
    )
    dashboard_path = write_atomic(out / DASHBOARD_NAME, page.encode("utf-8"))
    timings["dashboard_s"] = time.perf_counter() - t3

    latest_rows = summary[summary["run_id"].isin(latest_ids)].to_dict("records") if not summary.empty else []
    markdown = render_markdown(title, subtitle, table, built, current_flags, all_flags,
                               regression_threshold_pct, regression_window, intro_lines or [],
                               caveats=notes_section(latest_rows))
    report_path = write_atomic(out / REPORT_NAME, markdown.encode("utf-8"))
    timings["total_s"] = time.perf_counter() - t0
    missing = {c.key: c.reason or "no data" for c in built if not c.available}
    return ReportResult(
        out_dir=out, report_path=report_path, dashboard_path=dashboard_path, png_paths=png_paths,
        charts_drawn=[c.key for c in built if c.available], charts_missing=missing,
        needs_harness_data=[c.title for c in built if not c.available and c.needs_harness_data],
        regressions=current_flags, all_regressions=all_flags, n_runs=len(summary), summary_table=table,
        markdown=markdown, dashboard_bytes=len(page.encode("utf-8")), timings_s=timings,
    )


def _subtitle(summary: pd.DataFrame, db_path, now: datetime) -> str:
    if summary.empty:
        return f"Generated {now:%Y-%m-%d %H:%M} UTC from {os.path.abspath(db_path)}: the store holds no runs yet."
    modes = summary["mode"].astype(str).str.lower().value_counts() if "mode" in summary else pd.Series(dtype=int)
    counts = ", ".join(f"{n} {m}" for m, n in modes.items())
    nodes = ", ".join(sorted(summary["node"].astype(str).unique()))
    return (f"Generated {now:%Y-%m-%d %H:%M} UTC from {os.path.abspath(db_path)}: {len(summary)} runs ({counts}) "
            f"on {summary['node'].nunique()} node(s): {nodes}.")


def render_markdown(
    title: str, subtitle: str, table: pd.DataFrame, built: list[ch.Chart],
    current_flags: list[RegressionFlag], all_flags: list[RegressionFlag], threshold_pct: float, window: int,
    intro_lines: list[str] = (),
    caveats: str = "",
) -> str:
    lines = [f"# {title}", "", subtitle, "", *[x for line in intro_lines for x in (line, "")],
             f"Interactive version: [{DASHBOARD_NAME}]({DASHBOARD_NAME}) "
             "(one file, works offline).", "", "## Latest run per node and scenario", "",
             "Validity is LoadGen's verdict; accuracy is PASS when every ROUGE/gen_len target of the benchmark is "
             "met (– when not scored). Latencies in ms.", "", markdown_table(table), "",
             *([caveats, ""] if caveats else []),
             f"## Regressions (threshold {threshold_pct:g}%)", "",
             f"Each run is compared with the median of up to {window} earlier valid runs of the same node, "
             "scenario, benchmark and backend: tokens/s lower, or p99 TTFT/TPOT higher, by more than the "
             "threshold is flagged.", ""]
    if current_flags:
        lines += [f"- **{f.message}**" for f in current_flags]
    else:
        lines.append("No regression in the latest runs.")
    older = len(all_flags) - len(current_flags)
    if older > 0:
        lines += ["", f"{older} earlier run(s) were flagged in their time (see the dashboard's run view)."]
    lines += ["", "## Charts", ""]
    for chart in built:
        if not chart.available:
            continue
        lines += [f"### {chart.title}", "", f"![{chart.title}]({chart.key}.png)", ""]
        lines += [f"_{note}_" for note in chart.notes]
        if chart.notes:
            lines.append("")
    missing = [c for c in built if not c.available]
    if missing:
        lines += ["## Charts not drawn", ""]
        for chart in missing:
            need = (" This chart needs our harness's data (`samples.jsonl` / `progress.jsonl` from "
                    "`python -m mlperf_assets.harness run`), which submission logs do not carry."
                    if chart.needs_harness_data else "")
            lines.append(f"- **{chart.title}**: {chart.reason}.{need}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _run_views(db_path, summary: pd.DataFrame, colors, with_samples: set[str], with_progress: set[str],
               all_flags: list[RegressionFlag], max_runs: int, max_figures: int) -> list:
    from mlperf_assets.reporting.dashboard import RunView, percentiles_from_row

    if summary.empty:
        return []
    flags = flags_by_run(all_flags)
    runs = ch.sort_by_time(summary).iloc[::-1].head(max_runs)  # newest first
    figure_ids = [rid for rid in runs["run_id"].astype(str) if rid in with_samples or rid in with_progress]
    figure_ids = figure_ids[:max_figures]
    samples = _load_child(db_path, "sample_timings", "run_id, issue_ns, first_token_ns, complete_ns, output_tokens",
                          [r for r in figure_ids if r in with_samples])
    progress = _load_child(db_path, "progress", "run_id, elapsed_s, completed, tokens_per_s",
                           [r for r in figure_ids if r in with_progress])
    samples_by = {k: g for k, g in samples.groupby("run_id")} if not samples.empty else {}
    progress_by = {k: g for k, g in progress.groupby("run_id")} if not progress.empty else {}
    views = []
    for _, r in ch._iterrows(runs):
        rid = str(r["run_id"])
        tps = ch.headline_tokens_per_second(r)
        details = [
            ("run id", rid), ("node", str(r.get("node"))), ("scenario", ch.scenario_kind(r)),
            ("benchmark", str(r.get("benchmark"))), ("mode", str(r.get("mode"))),
            ("backend", ch.backend_label(r) or "–"),
            ("validity", "–" if pd.isna(r.get("result_validity")) else str(r.get("result_validity"))),
            ("started (UTC)", str(r.get("started_at"))), ("finished (UTC)", str(r.get("finished_at"))),
            ("tokens/s", "–" if tps is None else f"{tps:,.2f}"),
            ("latency p50 / p99", f"{_detail_ms(r.get('latency_p50_ns'))} / {_detail_ms(r.get('latency_p99_ns'))}"),
            ("TTFT p50 / p99", f"{_detail_ms(r.get('ttft_p50_ns'))} / {_detail_ms(r.get('ttft_p99_ns'))}"),
            ("TPOT p50 / p99",
             f"{_detail_ms(r.get('tpot_p50_ns'), digits=2)} / {_detail_ms(r.get('tpot_p99_ns'), digits=2)}"),
            ("ROUGE-1/2/L/Lsum", "–" if pd.isna(r.get("rouge1")) else " / ".join(
                "–" if pd.isna(r.get(m)) else f"{float(r.get(m)):.4f}" for m in ch.ROUGE_METRICS)),
            ("accuracy", {None: "–", True: "PASS", False: "FAIL"}[ch.accuracy_verdict(r)]),
            ("loadgen", str(r.get("loadgen_version"))), ("Dagster run", str(r.get("dagster_run_id") or "–")),
            ("source", str(r.get("source_path"))),
            ("regressions", "; ".join(flags.get(rid, [])) or "–"),
        ]
        figures = {}
        notes = []
        color = colors.get(str(r.get("node")), ch.PALETTE[0])
        if rid in samples_by:
            figures["histogram"] = ch.run_histogram_figure(samples_by[rid], r, color)
        if rid in progress_by:
            figures["progress"] = ch.run_progress_figure(progress_by[rid], r, color)
        if (rid in with_samples or rid in with_progress) and rid not in figure_ids:
            notes.append(f"Per-sample and progress figures are embedded for the newest {max_figures} runs only.")
        elif rid not in with_samples and rid not in with_progress:
            notes.append("No per-sample timings or progress for this run (they come from our harness).")
        limits = (ch.limits_for(r) or None) if str(r.get("scenario")) == "Server" else None
        views.append(RunView(run_id=rid, label=ch.run_label(r) + f" · {r.get('mode')}",
                             color=colors.get(str(r.get("node")), ch.PALETTE[0]), details=details,
                             percentiles_ms=percentiles_from_row(r), limits_ms=limits, figures=figures,
                             notes=notes))
    return views
