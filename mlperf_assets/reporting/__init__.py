"""The results report from a DuckDB store: `report.md`, one PNG per chart beside it, and `dashboard.html`.

The package: `build_report` here; `text` (formatters, markdown tables, caveats), `dashboard` (the offline HTML
page), `regression` (each run against the median of its earlier runs), `render` (PNGs: cached by what they show,
drawn in worker processes). Figures come from `mlperf_assets.charts`.

Every run is judged by its own rules: the report's tables say which p99 limits each run was held to (its LoadGen
log's, else its benchmark's) and which accuracy targets its benchmark has; runs of a published results tree with
a systems JSON are set beside yours on the same accelerator ("Your runs vs published results").

`build_report(db_path, out_dir)` works on any store: one filled by our pipeline (per-sample timings and progress
included) or one filled by `mlperf-dagster ingest` from submission logs alone, in which case the charts that need
our harness's data are listed as such. No Dagster here: the `benchmark_report` asset and the `report` command both
call this function.

Every file is written to a temporary name in `out_dir` and renamed into place, PNGs first and `report.md` last, so
a reader never sees a half-written file or a report pointing at a missing picture. PNGs whose data did not change
since the last report into the same folder are reused from `<out_dir>/.png-cache/` (`render`).
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
from mlperf_assets.loadgen_logs import normalize_benchmark
from mlperf_assets.reporting.regression import (
    DEFAULT_THRESHOLD_PCT,
    DEFAULT_WINDOW,
    RegressionFlag,
    detect_regressions,
    flags_by_run,
    latest_run_ids,
)
from mlperf_assets.reporting.endpoints import KEY_PREFIX as ENDPOINTS_KEY_PREFIX
from mlperf_assets.reporting.endpoints import endpoints_section
from mlperf_assets.reporting.text import fmt_ms, markdown_table, notes_section
from mlperf_assets.store import read_endpoint_table, read_qps_search, search_probe_run_ids

REPORT_NAME = "report.md"
DASHBOARD_NAME = "dashboard.html"
CHART_KEYS = (
    "throughput_over_time", "server_ttft_tpot", "latency_percentiles", "latency_distribution",
    "throughput_timeline", "rouge_vs_target", "published_context", "qps_search",
)
# Pictures earlier versions wrote that must not linger beside a new report (the node comparison was the summary
# table again, as a picture: the table is in report.md and the dashboard).
_RETIRED_PNGS = ("node_comparison",)
# Columns outside the public run_summary view that make the charts better when the store has them (p90s; the
# LoadGen model name and logged TTFT/TPOT/target latencies that say which limits a Server run is held to; where
# the run came from).
_EXTRA_RUN_COLUMNS = ("ttft_p90_ns", "tpot_p90_ns", "lg_model_name", "ttft_latency_ns", "tpot_latency_ns",
                      "target_latency_ns", "source_kind")
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
    pngs_reused: list[str] = field(default_factory=list)  # chart keys whose PNG came from the cache (data unchanged)
    telemetry_charts: list[str] = field(default_factory=list)  # keys of the per-run "over the run" pictures
    runs_without_gpu_telemetry: list[str] = field(default_factory=list)  # the report's sentence for each
    endpoint_regressions: list[str] = field(default_factory=list)  # latest Endpoints curve vs the previous one

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

    with store.open_read_only(db_path) as conn:
        return _summary(conn)


def _summary(conn) -> pd.DataFrame:
    from mlperf_assets.store import StoreError

    extra = ", ".join(f"r.{c}" for c in _EXTRA_RUN_COLUMNS)
    try:
        df = _df(conn, f"SELECT s.*, {extra} FROM run_summary s LEFT JOIN runs r USING (run_id)")
    except StoreError:  # a store without some of the extra columns
        df = _df(conn, "SELECT * FROM run_summary")
    df = ch.drop_probe_runs(fill_missing_labels(_plain_dtypes(df)), search_probe_run_ids(conn))  # probes stay out
    if not df.empty:  # computed once: every chart and table groups runs by it
        df[ch.GROUP_KEY_COLUMN] = ch.group_keys(df.drop(columns=[ch.GROUP_KEY_COLUMN], errors="ignore"))
    return df


def _df(conn, sql: str, params: list | None = None) -> pd.DataFrame:
    import duckdb

    from mlperf_assets.store import StoreError

    try:
        return conn.execute(sql, params).df() if params is not None else conn.execute(sql).df()
    except duckdb.Error as exc:
        raise StoreError(f"query failed: {str(exc).splitlines()[0]}") from None


@dataclass
class _StoreData:
    """Everything the report reads, in one read-only connection."""

    summary: pd.DataFrame
    with_samples: set[str]
    with_progress: set[str]
    samples: pd.DataFrame  # sample_timings of the runs whose figures are drawn
    progress: pd.DataFrame
    with_telemetry: set[str] = field(default_factory=set)  # runs with rows in `telemetry`
    telemetry: pd.DataFrame = field(default_factory=pd.DataFrame)  # those rows, of the runs whose figures are drawn
    telemetry_info: dict[str, dict] = field(default_factory=dict)  # run_id -> its run_telemetry row


def _read_store(db_path, view_runs: int, view_figures: int) -> _StoreData:
    """The summary, which runs have per-sample timings / progress, and those rows for the runs the report draws:
    the latest run of each group (charts) and the newest `view_figures` of the `view_runs` newest runs (run view)."""
    from mlperf_assets import store

    with store.open_read_only(db_path) as conn:
        summary = _summary(conn)
        if summary.empty:
            return _StoreData(summary, set(), set(), pd.DataFrame(), pd.DataFrame())
        has = _df(conn, "SELECT 's' AS t, run_id FROM (SELECT DISTINCT run_id FROM sample_timings) UNION ALL "
                        "SELECT 'p', run_id FROM (SELECT DISTINCT run_id FROM progress)")
        with_samples = set(has.loc[has["t"] == "s", "run_id"].astype(str))
        with_progress = set(has.loc[has["t"] == "p", "run_id"].astype(str))
        with_telemetry, telemetry_info = _telemetry_runs(conn)
        perf = ch.performance_runs(summary)
        wanted = set(ch.latest_per_group(perf)["run_id"].astype(str)) if not perf.empty else set()
        newest = ch.sort_by_time(summary).iloc[::-1].head(view_runs)["run_id"].astype(str)
        wanted |= set([r for r in newest if r in with_samples or r in with_progress or r in with_telemetry]
                      [:view_figures])
        samples = _child(conn, "sample_timings", "run_id, issue_ns, first_token_ns, complete_ns, output_tokens",
                         sorted(wanted & with_samples), "run_id, qsl_idx, issue_ns")
        progress = _child(conn, "progress", "run_id, elapsed_s, completed, tokens_per_s",
                          sorted(wanted & with_progress), "run_id, seq")
        telemetry = _child(conn, "telemetry", _TELEMETRY_READ, sorted(wanted & with_telemetry),
                           "run_id, t_s, source, gpu")
    return _StoreData(summary, with_samples, with_progress, samples, progress, with_telemetry, telemetry,
                      telemetry_info)


_TELEMETRY_READ = ("run_id, t_s, t_test_s, source, gpu, gpu_util_pct, power_w, kv_cache_usage_pct, requests_running, "
                   "requests_waiting, generation_tokens_per_s")


def _telemetry_runs(conn) -> tuple[set[str], dict[str, dict]]:
    """Runs with telemetry rows, and every run's run_telemetry row; nothing from a store made before schema 6
    (opened read-only, so not migrated yet)."""
    import duckdb

    try:
        ids = conn.execute("SELECT DISTINCT run_id FROM telemetry").fetchall()
        cur = conn.execute("SELECT * FROM run_telemetry")
    except duckdb.CatalogException:
        return set(), {}
    names = [d[0] for d in cur.description]
    info = {str(row[0]): dict(zip(names, row)) for row in cur.fetchall()}
    return {str(r[0]) for r in ids}, info


def _child(conn, table: str, columns: str, run_ids: list[str], order: str) -> pd.DataFrame:
    """Rows of `run_ids`, in a fixed order: figures (a mean's last digits) and so the PNG cache keys must not
    depend on the order a parallel scan returns them in."""
    if not run_ids:
        return pd.DataFrame(columns=["run_id"])
    return _df(conn, f"SELECT {columns} FROM {table} WHERE run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY {order}",
               [run_ids])


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
            values = series.to_numpy(dtype=object, na_value=None)  # NA -> None, vectorised
            out[column] = pd.Series(values, index=df.index, dtype=object)
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
    known = [isinstance(n, str) and n != "" and isinstance(b, str) and b != ""
             for n, b in zip(df["node"], df["benchmark"])]
    guessed = [(None, None) if ok or not isinstance(p, str) else labels_from_path(p)
               for ok, p in zip(known, df["source_path"])]  # the path only where a label is missing
    system = df["system"] if "system" in df.columns else pd.Series([None] * len(df), index=df.index)
    df["node"] = pd.Series([
        n if isinstance(n, str) and n else (s if isinstance(s, str) and s else (g[0] or "unknown"))
        for n, s, g in zip(df["node"], system, guessed)
    ], index=df.index, dtype=object)
    df["benchmark"] = pd.Series([
        b if isinstance(b, str) and b else (normalize_benchmark(g[1]) if g[1] else "unknown")
        for b, g in zip(df["benchmark"], guessed)
    ], index=df.index, dtype=object)
    return df


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
    render_workers: int | None = None,
) -> ReportResult:
    """Write report.md, the chart PNGs and dashboard.html into `out_dir`; return what was written.

    `intro_lines` (markdown, e.g. which config and dataset) go under the title of report.md and the dashboard.
    `render_workers`: processes drawing PNGs while the dashboard is built (default: the CPUs available, at most 4;
    1 draws in-process).

    Raises `store.StoreError` (missing or unusable database) and `ReportError` (unusable output folder).
    """
    import time

    from mlperf_assets.reporting import dashboard as dash
    from mlperf_assets.reporting import render

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

    data = _read_store(db_path, max_dashboard_runs, max_run_figures)
    summary, with_samples, with_progress = data.summary, data.with_samples, data.with_progress
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
    samples, progress = data.samples, data.progress

    t1 = time.perf_counter()
    built = [
        ch.throughput_over_time(summary, colors),
        ch.server_latency_vs_limits(summary, colors),
        ch.latency_percentiles(summary, colors),
        ch.latency_distribution(samples, sample_runs, colors),
        ch.progress_timeline(progress, progress_runs, colors),
        ch.rouge_vs_target(summary, colors=colors),
        ch.published_context(summary, colors),
        *ch.search_charts(read_qps_search(db_path), colors),  # the capacity search (max_qps_search), if any
    ]
    telemetry_charts, no_telemetry = _telemetry_charts(data, latest)  # per run: the report's pictures only
    ep_lines, ep_charts, ep_flags = endpoints_section(read_endpoint_table(db_path, "endpoint_points"),
                                                      regression_threshold_pct)  # nothing without Endpoints points
    # Each figure encoded once: the dashboard embeds the text and the PNG cache is keyed by it.
    figures_json = {c.key: dash.figure_json(c.figure_dict) for c in [*built, *telemetry_charts]
                    if c.available and c.has_figure}
    timings["charts_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    # while the page is built
    job = render.start([*built, *telemetry_charts, *ep_charts], out, figures_json, workers=render_workers)
    timings["png_start_s"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    table = ch.summary_table(summary, flags_by_run(current_flags))
    subtitle = _subtitle(summary, db_path, now)
    runs_view = _run_views(data, colors, all_flags, max_dashboard_runs, max_run_figures)
    notes = [*(intro_lines or []),
             f"Regression threshold {regression_threshold_pct:g}%: each run against the median of up to "
             f"{regression_window} earlier runs of the same node, scenario, benchmark and backend."]
    page = dash.build_dashboard_html(
        title=title, subtitle=subtitle, summary=table, charts=built, runs=runs_view,
        regressions=[f.message for f in current_flags], notes=notes, figures_json=figures_json,
    )
    page_bytes = page.encode("utf-8")
    dashboard_path = write_atomic(out / DASHBOARD_NAME, page_bytes)
    timings["dashboard_s"] = time.perf_counter() - t3

    t4 = time.perf_counter()
    png_paths = job.finish()
    for key in (*CHART_KEYS, *_RETIRED_PNGS):  # a chart drawn last time but not now must not linger
        stale = out / f"{key}.png"
        if key not in png_paths and stale.exists():
            stale.unlink()
    for stale in [*out.glob(f"{ch.TELEMETRY_KEY_PREFIX}*.png"), *out.glob(f"{ENDPOINTS_KEY_PREFIX}*.png")]:
        if stale.stem not in png_paths:
            stale.unlink()
    timings["png_wait_s"] = time.perf_counter() - t4

    latest_rows = summary[summary["run_id"].isin(latest_ids)].to_dict("records") if not summary.empty else []
    markdown = render_markdown(title, subtitle, table, built, current_flags, all_flags,
                               regression_threshold_pct, regression_window, intro_lines or [],
                               caveats=notes_section(latest_rows), rules=rules_table(latest),
                               telemetry=(telemetry_charts, no_telemetry))
    if ep_lines:
        markdown = markdown.rstrip("\n") + "\n\n" + "\n".join(ep_lines).rstrip() + "\n"
    report_path = write_atomic(out / REPORT_NAME, markdown.encode("utf-8"))
    timings["total_s"] = time.perf_counter() - t0
    missing = {c.key: c.reason or "no data" for c in built if not c.available}
    return ReportResult(
        out_dir=out, report_path=report_path, dashboard_path=dashboard_path, png_paths=png_paths,
        charts_drawn=[c.key for c in built if c.available], charts_missing=missing,
        telemetry_charts=[c.key for c in telemetry_charts], runs_without_gpu_telemetry=no_telemetry,
        needs_harness_data=[c.title for c in built if not c.available and c.needs_harness_data],
        regressions=current_flags, all_regressions=all_flags, n_runs=len(summary), summary_table=table,
        markdown=markdown, dashboard_bytes=len(page_bytes), timings_s=timings,
        pngs_reused=list(job.reused), endpoint_regressions=ep_flags,
    )


MAX_TELEMETRY_CHARTS = 12


def _telemetry_charts(data: _StoreData, latest: pd.DataFrame) -> tuple[list[ch.Chart], list[str]]:
    """The "over the run" picture of each latest performance run with telemetry (at most MAX_TELEMETRY_CHARTS),
    and one sentence for each latest harness run without GPU telemetry (submission logs never have any: no
    sentence for them)."""
    charts: list[ch.Chart] = []
    sentences: list[str] = []
    if latest is None or latest.empty:
        return charts, sentences
    by_run = {k: g for k, g in data.telemetry.groupby("run_id")} if not data.telemetry.empty else {}
    for _, r in ch._iterrows(ch.sort_by_time(latest).iloc[::-1]):
        rid = str(r["run_id"])
        info = data.telemetry_info.get(rid)
        if rid in by_run:
            if len(charts) >= MAX_TELEMETRY_CHARTS:
                continue
            chart = ch.run_telemetry_chart(by_run[rid], r, info)
            if chart.available:
                charts.append(chart)
                continue
        if info is not None or r.get("source_kind") == "harness":
            sentences.append(f"{ch.run_label(r)}: {ch.no_gpu_telemetry_sentence(info)}")
    return charts, sentences


def rules_table(latest: pd.DataFrame) -> pd.DataFrame:
    """The rules the latest runs are held to, one row per benchmark, scenario and set of limits: the p99 latency
    limits (and where they come from) and the benchmark's accuracy targets, from the run's own log and the
    benchmark registry."""
    if latest is None or latest.empty:
        return pd.DataFrame()
    counts: dict[tuple[str, str, str, str], int] = {}
    for _, r in ch._iterrows(latest):
        key = (str(r.get("benchmark")), ch.scenario_kind(r), ch.latency_rules(r).describe(),
               ch.accuracy_rules(r.get("benchmark")))
        counts[key] = counts.get(key, 0) + 1
    return pd.DataFrame([
        {"benchmark": b, "scenario": s, "runs": n, "p99 latency limits": limits, "accuracy targets": targets}
        for (b, s, limits, targets), n in sorted(counts.items())
    ])


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
    rules: pd.DataFrame | None = None,
    telemetry: tuple[list[ch.Chart], list[str]] | None = None,
) -> str:
    lines = [f"# {title}", "", subtitle, "", *[x for line in intro_lines for x in (line, "")],
             f"Interactive version: [{DASHBOARD_NAME}]({DASHBOARD_NAME}) "
             "(one file, works offline).", "", "## Latest run per node and scenario", "",
             "Validity is LoadGen's verdict; accuracy is PASS when every ROUGE/gen_len target of the run's own "
             "benchmark is met (– when not scored, or when no target is known for the benchmark). Latencies in ms; "
             "`held to` names the p99 limits each run was held to and where they come from (the run's own LoadGen "
             "log, else its benchmark's entry in the benchmark table).", "", markdown_table(table), "",
             *([caveats, ""] if caveats else [])]
    if rules is not None and not rules.empty:
        lines += ["## Rules each run is held to", "",
                  "Latency limits apply to Server runs (Interactive is a Server run with tighter limits) and are "
                  "judged at p99; accuracy targets are the benchmark's MLPerf minimums. Each run keeps its own: "
                  "no run is held to another benchmark's limits or targets.", "", markdown_table(rules), ""]
    published = next((c for c in built if c.key == "published_context"), None)
    if published is not None:
        lines += ["## Your runs vs published results", "",
                  "Tokens/s per accelerator of your latest runs beside the published MLPerf results for the same "
                  "benchmark, scenario and accelerator model (accelerators from the results tree's "
                  "`systems/<system>.json`; yours from the GPU list in `run_manifest.json`).", ""]
        if published.available:
            lines += [f"![{published.title}]({published.key}.png)", "", markdown_table(published.table), ""]
        else:
            lines += [f"Not drawn: {published.reason}.", ""]
        lines += [f"- {note}" for note in published.notes]
        if published.notes:
            lines.append("")
    lines += [f"## Regressions (threshold {threshold_pct:g}%)", "",
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
        if not chart.available or chart is published:
            continue
        lines += [f"### {chart.title}", "", f"![{chart.title}]({chart.key}.png)", ""]
        lines += [f"_{note}_" for note in chart.notes]
        if chart.notes:
            lines.append("")
    telemetry_charts, no_telemetry = telemetry or ([], [])
    if telemetry_charts or no_telemetry:
        lines += ["## GPU telemetry over the run", "",
                  "GPU utilisation and power per GPU, KV-cache use, running and waiting requests and generation "
                  "tokens/s of the latest runs, sampled by the harness (`telemetry.jsonl`); LoadGen's timed test is "
                  "shaded. J/token: the GPUs' energy over the timed test / the output tokens generated in it.", ""]
        for chart in telemetry_charts:
            lines += [f"### {chart.title}", "", f"![{chart.title}]({chart.key}.png)", ""]
            lines += [f"_{note}_" for note in chart.notes]
            if chart.notes:
                lines.append("")
        lines += [f"- {sentence}" for sentence in no_telemetry]
        if no_telemetry:
            lines.append("")
    missing = [c for c in built if not c.available and c is not published]
    if missing:
        lines += ["## Charts not drawn", ""]
        for chart in missing:
            need = (" This chart needs our harness's data (`samples.jsonl` / `progress.jsonl` from "
                    "`python -m mlperf_assets.harness run`), which submission logs do not carry."
                    if chart.needs_harness_data else "")
            lines.append(f"- **{chart.title}**: {chart.reason}.{need}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _run_views(data: _StoreData, colors, all_flags: list[RegressionFlag], max_runs: int, max_figures: int) -> list:
    from mlperf_assets.reporting.dashboard import RunView, percentiles_from_row

    summary, with_samples, with_progress = data.summary, data.with_samples, data.with_progress
    if summary.empty:
        return []
    flags = flags_by_run(all_flags)
    runs = ch.sort_by_time(summary).iloc[::-1].head(max_runs)  # newest first
    with_telemetry = data.with_telemetry
    figure_ids = [rid for rid in runs["run_id"].astype(str)
                  if rid in with_samples or rid in with_progress or rid in with_telemetry]
    figure_ids = set(figure_ids[:max_figures])
    samples = data.samples[data.samples["run_id"].isin(figure_ids)]
    progress = data.progress[data.progress["run_id"].isin(figure_ids)]
    samples_by = {k: g for k, g in samples.groupby("run_id")} if not samples.empty else {}
    progress_by = {k: g for k, g in progress.groupby("run_id")} if not progress.empty else {}
    telemetry = data.telemetry[data.telemetry["run_id"].isin(figure_ids)] if not data.telemetry.empty else None
    telemetry_by = {k: g for k, g in telemetry.groupby("run_id")} if telemetry is not None else {}
    views = []
    for _, r in ch._iterrows(runs):
        rid = str(r["run_id"])
        tps = ch.headline_tokens_per_second(r)
        rules = ch.latency_rules(r)
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
            ("held to (p99 limits)", rules.describe()),
            ("accuracy targets", ch.accuracy_rules(r.get("benchmark"))),
            ("accelerator", _accelerator_text(r)),
            ("loadgen", str(r.get("loadgen_version"))), ("Dagster run", str(r.get("dagster_run_id") or "–")),
            ("source", str(r.get("source_path"))),
            ("regressions", "; ".join(flags.get(rid, [])) or "–"),
        ]
        details += _telemetry_details(r)
        figures = {}
        notes = []
        color = colors.get(str(r.get("node")), ch.PALETTE[0])
        if rid in samples_by:
            figures["histogram"] = ch.run_histogram_figure(samples_by[rid], r, color)
        if rid in progress_by:
            figures["progress"] = ch.run_progress_figure(progress_by[rid], r, color)
        info = data.telemetry_info.get(rid)
        if rid in telemetry_by:
            figures["telemetry"] = ch.run_telemetry_figure(telemetry_by[rid], r, info)
        if figures.get("telemetry") is None and rid not in with_telemetry and (
                info is not None or r.get("source_kind") == "harness"):
            notes.append(ch.no_gpu_telemetry_sentence(info))
        if (rid in with_samples or rid in with_progress) and rid not in figure_ids:
            notes.append(f"Per-sample and progress figures are embedded for the newest {max_figures} runs only.")
        elif rid not in with_samples and rid not in with_progress:
            notes.append("No per-sample timings or progress for this run (they come from our harness).")
        views.append(RunView(run_id=rid, label=ch.run_label(r) + f" · {r.get('mode')}",
                             color=colors.get(str(r.get("node")), ch.PALETTE[0]), details=details,
                             percentiles_ms=percentiles_from_row(r), limits_ms=rules.as_dict() or None,
                             limits_source=rules.source, figures=figures, notes=notes))
    return views


def _telemetry_details(row) -> list[tuple[str, str]]:
    """The run view's telemetry lines (none for runs without GPU telemetry)."""
    out = []
    energy, joules = row.get("energy_per_output_token_j"), row.get("energy_j")
    if not ch.isnull(energy):
        out.append(("energy per output token", f"{float(energy):,.4f} J"
                    + ("" if ch.isnull(joules) else f" ({float(joules):,.0f} J over the timed test)")))
    util, power = row.get("mean_gpu_util_pct"), row.get("mean_gpu_power_w")
    if not ch.isnull(util) or not ch.isnull(power):
        out.append(("mean GPU util / power", f"{'–' if ch.isnull(util) else f'{float(util):.1f} %'} / "
                                             f"{'–' if ch.isnull(power) else f'{float(power):,.0f} W'}"))
    kv = row.get("peak_kv_cache_usage_pct")
    if not ch.isnull(kv):
        out.append(("peak KV-cache use", f"{float(kv):.1f} %"))
    return out


def _accelerator_text(row) -> str:
    """`8 × NVIDIA H200 (systems JSON)`, or why the accelerator is unknown."""
    accelerator, count = row.get("accelerator"), ch.accelerator_count(row)
    if ch.isnull(accelerator) or not str(accelerator):
        note = row.get("system_note")
        return f"unknown ({note})" if not ch.isnull(note) and str(note) else "unknown"
    source = row.get("system_source")
    where = f" ({source})" if not ch.isnull(source) and str(source) else ""
    return (f"{count} × {accelerator}" if count else str(accelerator)) + where
