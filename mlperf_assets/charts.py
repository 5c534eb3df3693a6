"""Pure figure builders: DataFrames from the results store in, figures out.

Every builder takes DataFrames shaped like the store's `run_summary` view (and, where it needs them, the
`sample_timings` and `progress` tables) and returns a `Chart` holding the same picture twice: a plotly figure for
the interactive dashboard and a matplotlib figure (Agg canvas, no pyplot state) for PNGs in reports and Dagster
metadata. A builder that finds nothing to draw returns a `Chart` with `available=False` and the reason, so a report
can say what is missing and why instead of drawing an empty box.

Conventions: latencies are stored in ns and shown in ms; throughput in tokens/s; one colour per node, the same in
every chart (`node_colors`); runs of baseline and harness-ceiling backends carry that label in every legend.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlperf_assets.harness import benchmarks as registry

# Tableau 10: distinguishable, colour-blind friendly enough, and identical in plotly and matplotlib.
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)
LIMIT_COLOR = "#d62728"
TARGET_COLOR = "#333333"
NS_PER_MS = 1e6

# How each kind of backend is labelled wherever its figures appear (a model's runs carry no label).
BACKEND_KIND_LABELS = {"baseline": "baseline", "harness-ceiling": "harness ceiling", "simulation": "simulation"}
PERCENTILES = ("p50", "p90", "p99")
PERCENTILE_SYMBOLS = {"p50": ("circle-open", "o"), "p90": ("diamond", "D"), "p99": ("square", "s")}
ROUGE_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@dataclass
class Chart:
    """One picture in two renderings; `available=False` (with `reason`) when the data was not there."""

    key: str
    title: str
    available: bool = True
    reason: str | None = None
    needs_harness_data: bool = False
    figure: object | None = None  # plotly.graph_objects.Figure
    mpl: object | None = None  # matplotlib.figure.Figure
    table: pd.DataFrame | None = None  # tabular charts also keep their table (for markdown)
    notes: list[str] = field(default_factory=list)

    def png(self, dpi: int = 100) -> bytes:
        if self.mpl is None:
            raise ValueError(f"chart {self.key!r} has nothing to render: {self.reason}")
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(self.mpl)  # attach an Agg canvas: no pyplot, no global backend switch
        buf = io.BytesIO()
        self.mpl.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()


def _missing(key: str, title: str, reason: str, *, needs_harness_data: bool = False) -> Chart:
    return Chart(key=key, title=title, available=False, reason=reason, needs_harness_data=needs_harness_data)


# ----------------------------------------------------------------------------------------------- naming and colour


def node_colors(nodes: Iterable[str]) -> dict[str, str]:
    """A stable node -> colour mapping.

    Each node hashes to a preferred palette slot (so a node keeps its colour when other nodes come and go); clashes
    move to the next free slot, in sorted node order so the result never depends on row order.
    """
    taken: dict[int, str] = {}
    result: dict[str, str] = {}
    for node in sorted({str(n) for n in nodes}):
        slot = int(hashlib.sha256(node.encode()).hexdigest(), 16) % len(PALETTE)
        if len(taken) < len(PALETTE):
            while slot in taken:
                slot = (slot + 1) % len(PALETTE)
        taken[slot] = node
        result[node] = PALETTE[slot]
    return result


def backend_label(row: Mapping) -> str:
    """A run's `backend` with its `backend_kind` label: `extractive (baseline)`, `replay (harness ceiling)`, `vllm`;
    '' when the backend is unknown."""
    backend, backend_kind = row.get("backend"), row.get("backend_kind")
    name = "" if isnull(backend) else str(backend)
    kind = BACKEND_KIND_LABELS.get("" if isnull(backend_kind) else str(backend_kind))
    if kind:
        return f"{name} ({kind})" if name else f"({kind})"
    return name


def series_label(row: Mapping, *, with_scenario: bool = True, with_benchmark: bool = False) -> str:
    parts = [str(row.get("node") or "?")]
    if with_scenario:
        parts.append(scenario_kind(row))
    if with_benchmark and not isnull(row.get("benchmark")):
        parts.append(str(row["benchmark"]))
    backend = backend_label(row)
    if backend:
        parts.append(backend)
    return " · ".join(parts)


def unique_labels(labels: list[str]) -> list[str]:
    """Runs started in the same minute share a label; number the repeats so category axes keep them apart."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


def run_label(row: Mapping) -> str:
    when = _as_timestamp(row.get("started_at"))
    stamp = when.strftime("%Y-%m-%d %H:%M") if when is not None else str(row.get("run_id", "?"))[:12]
    return f"{series_label(row)} · {stamp}"


def scenario_kind(row: Mapping) -> str:
    """The scenario as MLPerf reports it, except that Interactive (a Server run with tighter limits) is named."""
    label = row.get("scenario_label")
    if not isnull(label) and str(label):
        return str(label)
    scenario = str(row.get("scenario") or "?")
    if scenario == "Server" and is_interactive(row):
        return "Interactive"
    return scenario


def is_interactive(row: Mapping) -> bool:
    # LoadGen logs say "Server" for Interactive runs; only the model name or the folder tells them apart.
    if str(row.get("scenario_label") or "") == "Interactive":
        return True
    for key in ("benchmark", "lg_model_name", "source_path"):
        value = row.get(key)
        if not isnull(value) and "interactive" in str(value).lower():
            return True
    return False


def headline_tokens_per_second(row: Mapping) -> float | None:
    """The tokens/s MLPerf scores: completed tokens/s for Server, tokens/s otherwise (falling back to the other)."""
    first, second = ("completed_tokens_per_second", "tokens_per_second")
    if str(row.get("scenario")) != "Server":
        first, second = second, first
    for key in (first, second):
        value = row.get(key)
        if not isnull(value):
            return float(value)
    return None


def limits_for(row: Mapping) -> dict[str, float]:
    """The p99 TTFT/TPOT limits (ms) a Server run is judged against, as {"ttft": .., "tpot": ..}.

    The run's own limits when its LoadGen log has them (`ttft_latency` / `tpot_latency`), else the benchmark
    registry's for its LoadGen model name or benchmark (an Interactive run gets the interactive limits). A limit
    nobody knows (gpt-j has none on tokens; llama2-70b is not in the registry) is left out: {} when neither is known.
    """
    limits = {name: _ms(row.get(f"{name}_latency_ns")) for name in ("ttft", "tpot")}
    if any(value is None for value in limits.values()):
        known = _registry_limits_ns(row)
        for name, value in limits.items():
            if value is None:
                limits[name] = _ms(known.get(f"{name}_latency_ns"))
    return {name: value for name, value in limits.items() if value is not None}


def _registry_limits_ns(row: Mapping) -> Mapping[str, int | None]:
    names = [str(row[k]) for k in ("lg_model_name", "benchmark") if not isnull(row.get(k)) and str(row[k])]
    if is_interactive(row):  # "llama3.1-8b" measured under the interactive limits
        names = [f"{canonical}-interactive" for n in names
                 if (canonical := registry.submission_name(n)) and not canonical.endswith("-interactive")] + names
    for name in names:
        limits = registry.latency_limits_ns(name)
        if limits is not None:
            return limits
    return {}


# ---------------------------------------------------------------------------------------------------- data helpers


def _iterrows(df: pd.DataFrame):
    """(index, row as dict) pairs: DataFrame.iterrows builds a Series per row, ~100x slower on wide frames."""
    columns = list(df.columns)
    return zip(df.index, (dict(zip(columns, row)) for row in df.to_numpy(dtype=object)))


def group_keys(df: pd.DataFrame) -> pd.Series:
    """`group_key` of every row, as one string per row (usable with groupby)."""
    return pd.Series(["\x1f".join(group_key(r)) for _, r in _iterrows(df)], index=df.index, dtype=object)


def isnull(value: object) -> bool:
    """None, NaN, pandas NA/NaT: anything a DataFrame uses for 'no value'."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _as_timestamp(value: object) -> pd.Timestamp | None:
    if isnull(value):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    return None if pd.isna(stamp) else stamp


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df.columns else pd.Series([None] * len(df), index=df.index, dtype=object)


def performance_runs(summary: pd.DataFrame) -> pd.DataFrame:
    """Performance-mode rows (LoadGen says PerformanceOnly; the harness says performance), oldest first."""
    if summary.empty:
        return summary
    mode = _col(summary, "mode").astype(str).str.lower()
    rows = summary[mode.str.startswith("perf") | _col(summary, "mode").isna()]
    return sort_by_time(rows)


def sort_by_time(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    order = pd.to_datetime(_col(df, "started_at"), errors="coerce", utc=True)
    return df.assign(_order=order).sort_values(["_order"], kind="stable", na_position="first").drop(columns="_order")


def group_key(row: Mapping) -> tuple:
    """What makes runs comparable: same node, scenario (Interactive apart), benchmark and backend."""
    return (
        str(row.get("node")),
        scenario_kind(row),
        str(row.get("benchmark")),
        str(row.get("backend")),
    )


def latest_per_group(df: pd.DataFrame) -> pd.DataFrame:
    """The newest row of each node/scenario/benchmark/backend group (rows without a start time count as oldest)."""
    if df.empty:
        return df
    ordered = sort_by_time(df)
    return ordered.assign(_key=group_keys(ordered)).drop_duplicates("_key", keep="last").drop(columns="_key")


def _time_axis(df: pd.DataFrame) -> tuple[list, str]:
    stamps = pd.to_datetime(_col(df, "started_at"), errors="coerce", utc=True)
    if stamps.notna().all() and len(df):
        return [s.to_pydatetime() for s in stamps], "run start (UTC)"
    # Submission logs may carry no absolute time: fall back to the order in the store.
    return list(range(1, len(df) + 1)), "run (order in the store)"


def _ms(value: object) -> float | None:
    return None if isnull(value) else float(value) / NS_PER_MS


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _mpl_figure(width: float = 9.0, height: float = 4.8, *, left: float = 0.9, right: float = 0.3,
                bottom: float = 0.7, top: float = 0.6, wspace: float = 0.3):
    """A figure with fixed margins in inches (room for legends and rotated labels).

    Fixed margins rather than a layout engine: constrained layout measures every text several times and made
    PNG rendering ~40% slower on reports of a thousand runs."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=wspace)
    return fig


LEGEND_WIDTH_IN = 2.8


def _side_legend(fig_m, handles=None, labels=None, *, fontsize: float = 6) -> None:
    """A figure legend in the right margin (the space `_mpl_figure(right=LEGEND_WIDTH_IN)` leaves)."""
    width, height = fig_m.get_size_inches()
    kwargs = {"handles": handles} if handles is not None else {}
    if labels is not None:
        kwargs["labels"] = labels
    fig_m.legend(**kwargs, fontsize=fontsize, loc="upper left", borderaxespad=0,
                 bbox_to_anchor=(1 - (LEGEND_WIDTH_IN - 0.15) / width, 1 - 0.6 / height))


def _plotly_layout(fig, title: str, height: int = 460) -> None:
    # Explicit styling rather than template="plotly_white": a named template is deep-copied into every figure.
    fig.update_layout(
        title=dict(text=title, x=0.01),
        paper_bgcolor="white",
        plot_bgcolor="white",
        font=dict(family="system-ui, sans-serif", size=12, color="#2a3f5f"),
        colorway=list(PALETTE),
        height=height,
        margin=dict(l=70, r=30, t=60, b=60),
        legend=dict(font=dict(size=11)),
        hoverlabel=dict(align="left"),
    )
    fig.update_xaxes(gridcolor="#ebf0f8", linecolor="#b0b8c8", zerolinecolor="#ebf0f8", automargin=True)
    fig.update_yaxes(gridcolor="#ebf0f8", linecolor="#b0b8c8", zerolinecolor="#ebf0f8", automargin=True)


def _hover_text(row: Mapping, extra: Mapping[str, str] | None = None) -> str:
    lines = [
        f"run {row.get('run_id')}",
        f"node {row.get('node')} · {scenario_kind(row)} · {row.get('benchmark')}",
        f"backend {backend_label(row) or '?'}",
        f"started {row.get('started_at')}",
        f"validity {row.get('result_validity')}",
    ]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return "<br>".join(lines)


# ------------------------------------------------------------------------------------------------------ the charts


def throughput_over_time(summary: pd.DataFrame, colors: Mapping[str, str] | None = None) -> Chart:
    """Tokens/s of every performance run, one line per node/scenario/backend, over run start time."""
    import plotly.graph_objects as go

    key, title = "throughput_over_time", "Throughput per node and scenario over time"
    runs = performance_runs(summary)
    if not runs.empty:
        runs = runs.assign(_tps=[headline_tokens_per_second(r) for _, r in _iterrows(runs)])
        runs = runs[runs["_tps"].notna()]
    if runs.empty:
        return _missing(key, title, "no performance run reports tokens/s")
    colors = dict(colors or node_colors(runs["node"]))
    x_all, x_label = _time_axis(runs)
    runs = runs.assign(_x=x_all)
    multi_benchmark = runs["benchmark"].nunique(dropna=True) > 1 if "benchmark" in runs else False
    values = runs["_tps"].astype(float)
    log_y = values.min() > 0 and values.max() / values.min() > 100
    y_label = "tokens/s (log scale)" if log_y else "tokens/s"

    fig = go.Figure()
    fig_m = _mpl_figure(9.0 + 3.6, 4.8, right=3.8, bottom=1.0)
    ax = fig_m.add_subplot()
    dashes = {"Offline": ("solid", "-"), "Server": ("dash", "--"), "Interactive": ("dot", ":"),
              "SingleStream": ("dashdot", "-.")}
    symbols = {"Offline": ("circle", "o"), "Server": ("square", "s"), "Interactive": ("diamond", "D"),
               "SingleStream": ("triangle-up", "^")}
    for _, group in runs.groupby(group_keys(runs), sort=True):
        first = group.iloc[0].to_dict()
        name = series_label(first, with_benchmark=multi_benchmark)
        color = colors.get(str(first["node"]), PALETTE[0])
        kind = scenario_kind(first)
        hover = [_hover_text(r, {"tokens/s": _fmt(r["_tps"]),
                                 "samples/s": _fmt(_num(r.get("samples_per_second")), 3)})
                 for _, r in _iterrows(group)]
        fig.add_trace(go.Scatter(
            x=list(group["_x"]), y=list(group["_tps"]), name=name, mode="lines+markers",
            line=dict(color=color, dash=dashes.get(kind, ("solid", "-"))[0]),
            marker=dict(symbol=symbols.get(kind, ("circle", "o"))[0], size=8, color=color),
            hovertext=hover, hoverinfo="text",
        ))
        ax.plot(list(group["_x"]), list(group["_tps"]), label=_short(name, 58), color=color,
                linestyle=dashes.get(kind, ("solid", "-"))[1], marker=symbols.get(kind, ("circle", "o"))[1])
    fig.update_xaxes(title_text=x_label)
    fig.update_yaxes(title_text=y_label, type="log" if log_y else "linear")
    _plotly_layout(fig, title)
    ax.set_title(title)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig_m.autofmt_xdate(bottom=1.0 / 4.8)
    return Chart(key=key, title=title, figure=fig, mpl=fig_m)


def _num(value: object) -> float | None:
    return None if isnull(value) else float(value)


def _percentile_dot_chart(
    key: str, title: str, runs: pd.DataFrame, panels: list[tuple[str, str, str]],
    colors: Mapping[str, str], limits: bool,
) -> Chart:
    """Shared shape of the latency charts: one column per run, p50/p90/p99 as symbols, one colour per node.

    `panels` = (panel title, column prefix, limit name) with columns `{prefix}_{p50,p90,p99}_ns`.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = unique_labels([run_label(r) for _, r in _iterrows(runs)])
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.1)
    fig_m = _mpl_figure(5.0 * len(panels) + 1.0 + LEGEND_WIDTH_IN, 5.2, left=1.4, right=LEGEND_WIDTH_IN,
                        bottom=1.7, wspace=0.4)
    axes = fig_m.subplots(1, len(panels), squeeze=False)[0]
    legend_seen: set[str] = set()
    mpl_nodes: dict[str, str] = {}
    for pct in PERCENTILES:  # legend keys for the symbols (colour says the node)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=pct, legendgroup=f"_{pct}",
                                 marker=dict(symbol=PERCENTILE_SYMBOLS[pct][0], size=10, color="#777"),
                                 hoverinfo="skip"), row=1, col=1)
    for col, (panel_title, prefix, limit_name) in enumerate(panels, start=1):
        ax = axes[col - 1]
        values_all: list[float] = []
        position = {label: i for i, label in enumerate(labels)}
        for node, group in runs.groupby("node", sort=True):
            color = colors.get(str(node), PALETTE[0])
            name = str(node)
            rows = list(_iterrows(group))
            xs, ys, symbols, hover = [], [], [], []
            for pct in PERCENTILES:  # one trace per node and panel; the symbol says the percentile
                column = f"{prefix}_{pct}_ns"
                if column not in runs.columns:
                    continue
                pct_x, pct_y = [], []
                for (i, r) in rows:
                    y = _ms(r.get(column))
                    if y is None:
                        continue
                    x = labels[runs.index.get_loc(i)]
                    xs.append(x)
                    ys.append(y)
                    symbols.append(PERCENTILE_SYMBOLS[pct][0])
                    hover.append(_hover_text(r, {f"{panel_title} {pct}": f"{_fmt(y)} ms"}))
                    pct_x.append(position[x])
                    pct_y.append(y)
                if pct_y:
                    ax.scatter(pct_x, pct_y, color=color, marker=PERCENTILE_SYMBOLS[pct][1], s=45,
                               facecolors="none" if pct == "p50" else color)
            if not ys:
                continue
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="markers", name=name, legendgroup=name, showlegend=name not in legend_seen,
                marker=dict(symbol=symbols, size=11, color=color, line=dict(width=2, color=color)),
                hovertext=hover, hoverinfo="text",
            ), row=1, col=col)
            legend_seen.add(name)
            values_all += ys
            mpl_nodes[name] = color
        if limits:  # one line per distinct limit of the runs shown
            drawn = {(scenario_kind(r), limits_for(r).get(limit_name)) for _, r in _iterrows(runs)}
            for kind, limit in sorted((k, v) for k, v in drawn if v is not None):
                text = f"{kind} limit (p99): {limit:g} ms"
                fig.add_hline(y=limit, line=dict(color=LIMIT_COLOR, dash="dash" if kind == "Server" else "dot"),
                              annotation_text=text, annotation_position="top left", row=1, col=col)
                ax.axhline(limit, color=LIMIT_COLOR, linestyle="--" if kind == "Server" else ":", linewidth=1.2)
                ax.annotate(text, xy=(0, limit), xycoords=("axes fraction", "data"), fontsize=7,
                            color=LIMIT_COLOR, va="bottom")
                values_all.append(limit)
        log_y = bool(values_all) and min(values_all) > 0 and max(values_all) / min(values_all) > 100
        y_label = f"{panel_title} (ms{', log scale' if log_y else ''})"
        fig.update_yaxes(title_text=y_label, type="log" if log_y else "linear", rangemode="tozero", row=1, col=col)
        fig.update_xaxes(title_text="run", tickangle=30, type="category", row=1, col=col)
        ax.set_title(panel_title)
        ax.set_ylabel(y_label)
        ax.set_xlabel("run")
        if log_y:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xticks(range(len(labels)), [_short(lbl, 32) for lbl in labels], rotation=30, ha="right", fontsize=7)
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.grid(alpha=0.3)
    _plotly_layout(fig, title, height=520)
    fig_m.suptitle(title)
    if mpl_nodes:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], linestyle="", marker=PERCENTILE_SYMBOLS[p][1], color="#777",
                          markerfacecolor="none" if p == "p50" else "#777", label=p) for p in PERCENTILES]
        handles += [Line2D([], [], linestyle="", marker="s", color=c, label=n) for n, c in mpl_nodes.items()]
        _side_legend(fig_m, handles)
    return Chart(key=key, title=title, figure=fig, mpl=fig_m)


def _short(label: str, limit: int = 38) -> str:
    """Shorten in the middle, so both the node and the date stay readable."""
    if len(label) <= limit:
        return label
    head = (limit - 1) // 2
    return label[:head] + "…" + label[len(label) - (limit - 1 - head):]


def server_latency_vs_limits(summary: pd.DataFrame, colors: Mapping[str, str] | None = None) -> Chart:
    """TTFT and TPOT p50/p90/p99 (ms) of the latest Server/Interactive run per group, against the MLPerf limits."""
    key, title = "server_ttft_tpot", "Server TTFT and TPOT against the MLPerf limits"
    runs = performance_runs(summary)
    if not runs.empty:
        runs = runs[(_col(runs, "scenario") == "Server")]
        has = _col(runs, "ttft_p99_ns").notna() | _col(runs, "tpot_p99_ns").notna()
        runs = latest_per_group(runs[has])
    if runs.empty:
        return _missing(key, title, "no Server run with token latencies (TTFT/TPOT)")
    colors = dict(colors or node_colors(runs["node"]))
    return _percentile_dot_chart(
        key, title, runs, [("TTFT", "ttft", "ttft"), ("TPOT", "tpot", "tpot")], colors, limits=True)


def latency_percentiles(summary: pd.DataFrame, colors: Mapping[str, str] | None = None) -> Chart:
    """End-to-end sample latency p50/p90/p99 (ms) of the latest run per group, from the LoadGen summaries."""
    key, title = "latency_percentiles", "Sample latency percentiles (latest run per node and scenario)"
    runs = performance_runs(summary)
    if not runs.empty:
        runs = latest_per_group(runs[_col(runs, "latency_p99_ns").notna()])
    if runs.empty:
        return _missing(key, title, "no performance run reports latency percentiles")
    colors = dict(colors or node_colors(runs["node"]))
    return _percentile_dot_chart(key, title, runs, [("latency", "latency", "")], colors, limits=False)


def rouge_vs_target(summary: pd.DataFrame, colors: Mapping[str, str] | None = None) -> Chart:
    """ROUGE-1/2/L/Lsum of every accuracy result, one panel per metric, with the 99% targets of its benchmark
    (`rouge_minimums`)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    key, title = "rouge_vs_target", "ROUGE per run against the 99% targets"
    runs = summary[_col(summary, "rouge1").notna()] if not summary.empty else summary
    # The store shows a scenario's accuracy on all its runs: draw it once, on the accuracy run.
    accuracy_mode = _col(runs, "mode").astype(str).str.lower() == "accuracy"
    if accuracy_mode.any():
        runs = runs[accuracy_mode]
    if runs.empty:
        return _missing(key, title, "no run has accuracy (ROUGE) results")
    runs = sort_by_time(runs)
    colors = dict(colors or node_colors(runs["node"]))
    x_all, x_label = _time_axis(runs)  # a time axis scales to hundreds of nightly runs
    labels = list(x_all)
    metrics = [m for m in ROUGE_METRICS if m in runs.columns and runs[m].notna().any()]
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics, horizontal_spacing=0.06)
    fig_m = _mpl_figure(3.4 * len(metrics) + 0.6 + LEGEND_WIDTH_IN, 5.0, right=LEGEND_WIDTH_IN, bottom=1.2,
                        wspace=0.45)
    axes = fig_m.subplots(1, len(metrics), squeeze=False)[0]
    seen: set[str] = set()
    missing_targets: set[str] = set()
    for col, metric in enumerate(metrics, start=1):
        ax = axes[col - 1]
        for node, group in runs.groupby("node", sort=True):
            color = colors.get(str(node), PALETTE[0])
            xs = [labels[runs.index.get_loc(i)] for i in group.index]
            ys = [_num(v) for v in group[metric]]
            passed = [accuracy_verdict(r) for _, r in _iterrows(group)]
            hover = [_hover_text(r, {metric: _fmt(y, 4), "accuracy passed": str(p)})
                     for (_, r), y, p in zip(_iterrows(group), ys, passed)]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=str(node), legendgroup=str(node),
                                     showlegend=str(node) not in seen, marker=dict(color=color, size=10),
                                     hovertext=hover, hoverinfo="text"), row=1, col=col)
            seen.add(str(node))
            ax.scatter(xs, ys, color=color, s=40, label=str(node) if col == 1 else None)
        tx, ty = [], []
        for i, (_, r) in enumerate(_iterrows(runs)):
            bench_targets = rouge_minimums(r.get("benchmark"))
            if not bench_targets:
                missing_targets.add(str(r.get("benchmark")))
                continue
            if metric not in bench_targets:  # gpt-j has no rougeLsum target
                continue
            tx.append(labels[i])
            ty.append(float(bench_targets[metric]))
        if tx:
            fig.add_trace(go.Scatter(x=tx, y=ty, mode="markers", name="99% target", legendgroup="target",
                                     showlegend=col == 1, marker=dict(symbol="line-ew-open", size=26,
                                                                      color=TARGET_COLOR, line=dict(width=2)),
                                     hovertemplate="99%% target: %{y:.4f}<extra></extra>"), row=1, col=col)
            ax.scatter(tx, ty, marker="_", s=300, color=TARGET_COLOR, linewidths=2,
                       label="99% target" if col == 1 else None)
        fig.update_yaxes(title_text=f"{metric} (F1 × 100)", row=1, col=col)
        fig.update_xaxes(title_text=x_label, tickangle=30, row=1, col=col)
        ax.set_title(metric)
        ax.set_ylabel(f"{metric} (F1 × 100)")
        ax.set_xlabel(x_label, fontsize=8)
        ax.tick_params(axis="x", labelrotation=35, labelsize=6)
        ax.grid(alpha=0.3)
    _plotly_layout(fig, title, height=500)
    fig_m.suptitle(title)
    _side_legend(fig_m)
    notes = [f"no 99% target known for: {', '.join(sorted(missing_targets))}"] if missing_targets else []
    return Chart(key=key, title=title, figure=fig, mpl=fig_m, notes=notes)


def rouge_minimums(benchmark: object) -> dict[str, float]:
    """The ROUGE minimums (99% or 99.9% of the reference) of any spelling of a benchmark, from the benchmark
    registry; {} for a benchmark it does not know (llama2-70b, mixtral...), which is then drawn without a target."""
    target = registry.accuracy_target(benchmark)
    if target is None:
        return {}
    return {m: float(low) for m, (low, _high) in target.thresholds().items() if m in ROUGE_METRICS}


def accuracy_verdict(row: Mapping) -> bool | None:
    """`accuracy_passed` from the store; when it is absent (logs ingested without scoring, or the benchmark only
    known from the path), the run's figures against the benchmark's MLPerf thresholds (ROUGE minimums and gen_len
    bounds, from the benchmark registry); None when neither is known."""
    stored = row.get("accuracy_passed")
    if not isnull(stored):
        return bool(stored)
    if isnull(row.get("rouge1")) or isnull(row.get("benchmark")):
        return None
    target = registry.accuracy_target(row.get("benchmark"))
    if target is None:  # unknown benchmark (llama2-70b, mixtral...)
        return None
    thresholds = target.thresholds()
    checked = [(float(row.get(m)), low, high) for m, (low, high) in thresholds.items() if not isnull(row.get(m))]
    if not checked:
        return None
    return all(value >= low and (high is None or value <= high) for value, low, high in checked)


def node_comparison_table(summary: pd.DataFrame, regressions: Mapping[str, list[str]] | None = None) -> Chart:
    """The latest performance run of each node/scenario/benchmark/backend side by side, with units in the headers.

    `regressions` maps run_id to regression descriptions, shown in their own column when given.
    """
    import plotly.graph_objects as go

    key, title = "node_comparison", "Node comparison (latest run per node and scenario)"
    table = summary_table(summary, regressions)
    if table.empty:
        return _missing(key, title, "no performance runs")
    fig = go.Figure(go.Table(
        header=dict(values=[f"<b>{c}</b>" for c in table.columns], fill_color="#e8eef6", align="left"),
        cells=dict(values=[table[c].tolist() for c in table.columns], align="left", height=24),
        columnwidth=[1.2 if c in ("node", "backend") else 1 for c in table.columns],
    ))
    _plotly_layout(fig, title, height=max(240, 110 + 46 * len(table)))
    text = table.astype(str).values.tolist()
    widths = [max([len(str(c))] + [len(row[i]) for row in text]) for i, c in enumerate(table.columns)]

    def line(cells) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))

    # One monospace text per row instead of matplotlib's table (an artist per cell): ~10x faster to render.
    rows = len(text) + 1
    chars = len(line(table.columns))
    fig_m = _mpl_figure(min(30.0, 0.063 * chars + 0.4), 0.65 + 0.2 * rows, left=0.2, right=0.2, bottom=0.15,
                        top=0.5)
    ax = fig_m.add_subplot()
    ax.axis("off")
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_ylim(rows, 0)
    ax.axhspan(0, 1, color="#e8eef6", zorder=0)
    ax.hlines(range(1, rows), 0, 1, color="#d0d6e0", linewidth=0.5)
    ax.text(0.0, 0.5, line(table.columns), family="monospace", fontsize=7, fontweight="bold", va="center")
    for i, row in enumerate(text, start=1):
        ax.text(0.0, i + 0.5, line(row), family="monospace", fontsize=7, va="center")
    return Chart(key=key, title=title, figure=fig, mpl=fig_m, table=table)


def summary_table(summary: pd.DataFrame, regressions: Mapping[str, list[str]] | None = None) -> pd.DataFrame:
    """Latest performance run per node/scenario/benchmark/backend, formatted for people (units in the headers).

    Accuracy is taken from the newest accuracy result of the same group when the performance row has none.
    """
    runs = performance_runs(summary)
    if runs.empty:
        return pd.DataFrame()
    latest = latest_per_group(runs)
    accuracy_rows = summary[_col(summary, "rouge1").notna() | _col(summary, "accuracy_passed").notna()]
    latest_accuracy: dict[tuple, object] = {}
    for _, r in _iterrows(sort_by_time(accuracy_rows)):
        latest_accuracy[group_key(r)] = accuracy_verdict(r)
    rows = []
    for _, r in _iterrows(latest):
        passed = accuracy_verdict(r)
        if passed is None:
            passed = latest_accuracy.get(group_key(r))
        row = {
            "node": r.get("node"),
            "scenario": scenario_kind(r),
            "benchmark": r.get("benchmark"),
            "backend": backend_label(r) or "–",
            "started (UTC)": _stamp(r.get("started_at")),
            "validity": r.get("result_validity") if not isnull(r.get("result_validity")) else "–",
            "accuracy": "–" if isnull(passed) else ("PASS" if bool(passed) else "FAIL"),
            "tokens/s": _fmt(headline_tokens_per_second(r)),
            "samples/s": _fmt(_num(r.get("samples_per_second")) if str(r.get("scenario")) != "Server"
                              else _num(r.get("completed_samples_per_second")) or _num(r.get("samples_per_second")),
                              3),
            "p99 latency (ms)": _fmt(_ms(r.get("latency_p99_ns"))),
            "p99 TTFT (ms)": _fmt(_ms(r.get("ttft_p99_ns"))),
            "p99 TPOT (ms)": _fmt(_ms(r.get("tpot_p99_ns")), 2),
        }
        if regressions is not None:
            row["regression"] = "; ".join(regressions.get(str(r.get("run_id")), [])) or "–"
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["node", "scenario", "benchmark", "backend"], kind="stable").reset_index(
        drop=True)


def _stamp(value: object) -> str:
    when = _as_timestamp(value)
    return when.strftime("%Y-%m-%d %H:%M") if when is not None else "–"


# ------------------------------------------------------------------------------------ charts from the harness's data


def per_sample_latencies(samples: pd.DataFrame) -> pd.DataFrame:
    """Per-sample latency, TTFT and TPOT in ms (LoadGen's definitions) from `sample_timings` rows."""
    issue = samples["issue_ns"].astype("float64")
    complete = samples["complete_ns"].astype("float64")
    first = pd.to_numeric(_col(samples, "first_token_ns"), errors="coerce").astype("float64")
    tokens = pd.to_numeric(_col(samples, "output_tokens"), errors="coerce").astype("float64")
    ttft = first - issue
    tpot = (complete - first) / (tokens - 1)
    tpot = tpot.where(tokens > 1)
    return pd.DataFrame({
        "run_id": samples["run_id"].values,
        "latency_ms": (complete - issue).values / NS_PER_MS,
        "ttft_ms": ttft.values / NS_PER_MS,
        "tpot_ms": tpot.values / NS_PER_MS,
    })


def _box_stats(values: np.ndarray) -> dict[str, float] | None:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    p1, q1, med, q3, p99 = np.percentile(values, [1, 25, 50, 75, 99])
    return {"whislo": p1, "q1": q1, "med": med, "q3": q3, "whishi": p99, "mean": float(values.mean()),
            "n": int(values.size)}


def latency_distribution(
    samples: pd.DataFrame, runs: pd.DataFrame, colors: Mapping[str, str] | None = None
) -> Chart:
    """Per-sample latency, TTFT and TPOT (ms) per run as boxes (p25-p75, whiskers p1-p99) from `sample_timings`.

    `runs` holds the run_summary rows of the runs to draw (for labels and colours).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    key, title = "latency_distribution", "Per-sample latency distributions (box p25–p75, whiskers p1–p99)"
    if samples is None or samples.empty or runs.empty:
        return _missing(key, title, "no per-sample timings (samples.jsonl from our harness)", needs_harness_data=True)
    per_sample = per_sample_latencies(samples[samples["run_id"].isin(runs["run_id"])])
    runs = sort_by_time(runs[runs["run_id"].isin(per_sample["run_id"].unique())])
    if runs.empty:
        return _missing(key, title, "no per-sample timings (samples.jsonl from our harness)", needs_harness_data=True)
    colors = dict(colors or node_colors(runs["node"]))
    panels = [("latency", "latency_ms"), ("TTFT", "ttft_ms"), ("TPOT", "tpot_ms")]
    panels = [p for p in panels if per_sample[p[1]].notna().any()]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.08)
    fig_m = _mpl_figure(4.6 * len(panels) + 1.5, 5.2, left=1.4, bottom=1.6, wspace=0.4)
    axes = fig_m.subplots(1, len(panels), squeeze=False)[0]
    by_run = {rid: g for rid, g in per_sample.groupby("run_id")}
    labels = unique_labels([run_label(r) for _, r in _iterrows(runs)])
    seen: set[str] = set()
    for col, (panel, column) in enumerate(panels, start=1):
        ax = axes[col - 1]
        stats_list, positions, box_colors = [], [], []
        boxes: dict[str, dict] = {}
        all_values: list[float] = []
        for i, (_, r) in enumerate(_iterrows(runs)):
            stats = _box_stats(by_run[r["run_id"]][column].to_numpy(dtype="float64"))
            if stats is None:
                continue
            color = colors.get(str(r["node"]), PALETTE[0])
            box = boxes.setdefault(str(r["node"]), {"color": color, "x": [], "stats": [], "custom": []})
            box["x"].append(labels[i])
            box["stats"].append(stats)
            box["custom"].append([str(r["run_id"]), stats["n"]])
            stats_list.append({**stats, "label": _short(labels[i], 30)})
            positions.append(i)
            box_colors.append(color)
            all_values += [stats["whislo"], stats["whishi"]]
        for name, box in boxes.items():  # one box trace per node and panel (runs along x)
            st = box["stats"]
            fig.add_trace(go.Box(
                x=box["x"], q1=[b["q1"] for b in st], median=[b["med"] for b in st], q3=[b["q3"] for b in st],
                lowerfence=[b["whislo"] for b in st], upperfence=[b["whishi"] for b in st],
                mean=[b["mean"] for b in st], customdata=box["custom"],
                name=name, legendgroup=name, showlegend=name not in seen, marker_color=box["color"],
                line_color=box["color"],
                hovertemplate=("%{x}<br>run %{customdata[0]}<br>n=%{customdata[1]}<br>"
                               "p1 %{lowerfence:.2f} · p25 %{q1:.2f} · p50 %{median:.2f}<br>"
                               "p75 %{q3:.2f} · p99 %{upperfence:.2f} · mean %{mean:.2f} ms<extra></extra>"),
            ), row=1, col=col)
            seen.add(name)
        log_y = bool(all_values) and min(all_values) > 0 and max(all_values) / min(all_values) > 100
        y_label = f"{panel} (ms{', log scale' if log_y else ''})"
        fig.update_yaxes(title_text=y_label, type="log" if log_y else "linear", row=1, col=col)
        fig.update_xaxes(tickangle=30, type="category", row=1, col=col)
        if stats_list:
            artists = ax.bxp(stats_list, positions=positions, showfliers=False, patch_artist=True, showmeans=True)
            for patch, color in zip(artists["boxes"], box_colors):
                patch.set_facecolor(color)
                patch.set_alpha(0.55)
        ax.set_title(panel)
        ax.set_ylabel(y_label)
        if log_y:
            ax.set_yscale("log")
        ax.set_xticks(range(len(labels)), [_short(lbl, 30) for lbl in labels], rotation=30, ha="right", fontsize=7)
        ax.grid(alpha=0.3)
    _plotly_layout(fig, title, height=520)
    fig_m.suptitle(title)
    return Chart(key=key, title=title, figure=fig, mpl=fig_m, needs_harness_data=True)


# Per-run figures for the dashboard's run view: plain plotly figure dicts (hundreds of runs; plotly's objects
# validate every property and cost ~0.1 s per figure).


def _dict_axes(title: str, height: int) -> dict:
    return {"title": {"text": title, "x": 0.01, "font": {"size": 14}}, "height": height, "showlegend": False,
            "paper_bgcolor": "white", "plot_bgcolor": "white", "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
            "font": {"family": "system-ui, sans-serif", "size": 12, "color": "#2a3f5f"}}


def run_histogram_figure(samples: pd.DataFrame, run: Mapping, color: str, bins: int = 40) -> dict | None:
    """Histograms of one run's per-sample latency, TTFT and TPOT (ms), pre-binned so the page stays small."""
    if samples is None or samples.empty:
        return None
    per_sample = per_sample_latencies(samples)
    panels = [(p, c) for p, c in (("latency", "latency_ms"), ("TTFT", "ttft_ms"), ("TPOT", "tpot_ms"))
              if per_sample[c].notna().any()]
    layout = _dict_axes(f"Per-sample latencies of {run_label(run)}", 380)
    layout["grid"] = {"rows": 1, "columns": len(panels), "pattern": "independent"}
    data = []
    for i, (panel, column) in enumerate(panels):
        suffix = "" if i == 0 else str(i + 1)
        counts, edges = np.histogram(per_sample[column].dropna().to_numpy(dtype="float64"), bins=bins)
        centers = (edges[:-1] + edges[1:]) / 2
        data.append({"type": "bar", "x": centers.round(4).tolist(), "y": counts.tolist(),
                     "width": float(edges[1] - edges[0]) or None, "marker": {"color": color}, "name": panel,
                     "xaxis": f"x{suffix}", "yaxis": f"y{suffix}",
                     "hovertemplate": f"{panel} %{{x:.2f}} ms<br>%{{y}} samples<extra></extra>"})
        layout[f"xaxis{suffix}"] = {"title": {"text": f"{panel} (ms)"}, "gridcolor": "#ebf0f8"}
        layout[f"yaxis{suffix}"] = {"title": {"text": "samples"}, "gridcolor": "#ebf0f8"}
    return {"data": data, "layout": layout}


def run_progress_figure(progress: pd.DataFrame, run: Mapping, color: str, max_points: int = 400) -> dict | None:
    """Tokens/s over elapsed time within one run, from its progress lines."""
    if progress is None or progress.empty:
        return None
    points = progress.sort_values("elapsed_s")
    if len(points) > max_points:
        points = points.iloc[np.unique(np.linspace(0, len(points) - 1, max_points).round().astype(int))]
    layout = _dict_axes(f"Throughput within {run_label(run)}", 340)
    layout["xaxis"] = {"title": {"text": "elapsed (s)"}, "gridcolor": "#ebf0f8"}
    layout["yaxis"] = {"title": {"text": "tokens/s"}, "rangemode": "tozero", "gridcolor": "#ebf0f8"}
    trace = {"type": "scatter", "mode": "lines", "x": points["elapsed_s"].astype(float).tolist(),
             "y": points["tokens_per_s"].astype(float).tolist(), "line": {"color": color},
             "hovertemplate": "%{x:.1f} s: %{y:,.1f} tokens/s<extra></extra>"}
    return {"data": [trace], "layout": layout}


def progress_timeline(progress: pd.DataFrame, runs: pd.DataFrame, colors: Mapping[str, str] | None = None,
                      max_points: int = 400) -> Chart:
    """Tokens/s within each run over elapsed time, from the harness's progress lines."""
    import plotly.graph_objects as go

    key, title = "throughput_timeline", "Throughput within a run (from progress)"
    if progress is None or progress.empty or runs.empty:
        return _missing(key, title, "no progress data (progress.jsonl from our harness)", needs_harness_data=True)
    runs = sort_by_time(runs[runs["run_id"].isin(progress["run_id"].unique())])
    if runs.empty:
        return _missing(key, title, "no progress data (progress.jsonl from our harness)", needs_harness_data=True)
    colors = dict(colors or node_colors(runs["node"]))
    dashes = {"Offline": ("solid", "-"), "Server": ("dash", "--"), "Interactive": ("dot", ":"),
              "SingleStream": ("dashdot", "-.")}
    fig = go.Figure()
    fig_m = _mpl_figure(9.0 + 3.4, 4.8, right=3.6)
    ax = fig_m.add_subplot()
    by_run = {rid: g.sort_values("elapsed_s") for rid, g in progress.groupby("run_id")}
    for _, r in _iterrows(runs):
        points = by_run[r["run_id"]]
        if len(points) > max_points:  # keep the figure small: even thinning, last point kept
            idx = np.unique(np.linspace(0, len(points) - 1, max_points).round().astype(int))
            points = points.iloc[idx]
        name = run_label(r)
        color = colors.get(str(r["node"]), PALETTE[0])
        dash = dashes.get(scenario_kind(r), ("solid", "-"))
        completed = _col(points, "completed").tolist()
        fig.add_trace(go.Scatter(
            x=points["elapsed_s"].tolist(), y=points["tokens_per_s"].tolist(), name=name, mode="lines",
            line=dict(color=color, dash=dash[0]), customdata=completed,
            hovertemplate=f"{name}<br>%{{x:.1f}} s: %{{y:,.1f}} tokens/s<br>%{{customdata}} samples done"
                          "<extra></extra>",
        ))
        ax.plot(points["elapsed_s"], points["tokens_per_s"], color=color, linestyle=dash[1], label=_short(name, 60))
    fig.update_xaxes(title_text="elapsed (s)")
    fig.update_yaxes(title_text="tokens/s", rangemode="tozero")
    _plotly_layout(fig, title)
    ax.set_title(title)
    ax.set_xlabel("elapsed (s)")
    ax.set_ylabel("tokens/s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return Chart(key=key, title=title, figure=fig, mpl=fig_m, needs_harness_data=True)


# ---------------------------------------------------------------------------------------------- capacity search

QPS_SEARCH_KEY = "qps_search"
QPS_SEARCH_TITLE = "Capacity search: target QPS against p99 TTFT / TPOT"
_SEARCH_PANELS = (("TTFT p99", "ttft"), ("TPOT p99", "tpot"), ("latency p99", "latency"))


def latest_searches(steps: pd.DataFrame) -> pd.DataFrame:
    """The `qps_search` rows of the latest search (by its newest step) of each node and scenario."""
    if steps.empty:
        return steps
    last = steps.groupby("search_id")["recorded_at"].max()
    heads = steps.drop_duplicates("search_id").set_index("search_id")[["node", "scenario"]].assign(last=last)
    keep = heads.sort_values("last").groupby(["node", "scenario"], dropna=False).tail(1).index
    return steps[steps["search_id"].isin(keep)].sort_values(["node", "scenario", "step"], kind="stable")


def _search_label(rows: pd.DataFrame) -> str:
    first = rows.iloc[0]
    backend = "" if isnull(first.get("backend")) else str(first.get("backend"))
    kind = None
    if backend:
        try:
            from mlperf_assets.harness.backends import backend_class

            kind = BACKEND_KIND_LABELS.get(backend_class(backend).kind)
        except Exception:  # noqa: BLE001 - an unknown or unimportable backend is shown by its name only
            kind = None
    shown = f"{backend} ({kind})" if kind else backend
    return f"{first.get('node')} · {first.get('scenario')}" + (f" · {shown}" if shown else "")


def qps_search_chart(steps: pd.DataFrame, colors: Mapping[str, str] | None = None) -> Chart:
    """Every probe and confirmation run of the latest capacity search per node and scenario (`qps_search` rows):
    target QPS against its p99 TTFT and TPOT (ms). Filled markers passed, crosses failed, diamonds are the
    full-length confirmation runs, the star is the chosen rate; dashed lines are the limits and dotted ones the
    limits less the search's safety margin (what a probe must stay under)."""
    import plotly.graph_objects as go
    from matplotlib.figure import Figure
    from plotly.subplots import make_subplots

    key, title = QPS_SEARCH_KEY, QPS_SEARCH_TITLE
    if steps is None or steps.empty:
        return _missing(key, title, "no capacity search in the store (run `mlperf-dagster search-qps`)")
    steps = latest_searches(steps)
    measured = steps[steps["kind"].isin(["probe", "confirm"])]
    def has(column: str) -> bool:
        return column in measured.columns and bool(measured[column].notna().any())

    # the p99s the searches were judged by (those with a limit), else whatever was measured
    panels = [(name, prefix) for name, prefix in _SEARCH_PANELS if has(f"{prefix}_limit_ns") and has(f"{prefix}_p99_ns")]
    panels = panels or [(name, prefix) for name, prefix in _SEARCH_PANELS if has(f"{prefix}_p99_ns")]
    if measured.empty or not panels:
        return _missing(key, title, "the stored searches have no measured probe yet")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.1)
    fig_m = Figure(figsize=(5.2 * len(panels) + 2.8, 4.8))
    fig_m.subplots_adjust(left=0.9 / fig_m.get_figwidth(), right=1 - 2.9 / fig_m.get_figwidth(), bottom=0.16,
                          top=0.86, wspace=0.3)
    axes = fig_m.subplots(1, len(panels), squeeze=False)[0]
    notes: list[str] = []
    for n, (search_id, rows) in enumerate(steps.groupby("search_id", sort=False)):
        label = _search_label(rows)
        color = (colors or {}).get(str(rows.iloc[0].get("node"))) if n == 0 else None
        color = color or PALETTE[n % len(PALETTE)]
        result = rows[rows["kind"] == "result"]
        chosen = None if result.empty or isnull(result.iloc[-1]["target_qps"]) else float(result.iloc[-1]["target_qps"])
        if not result.empty:
            notes.append(f"{label}: {result.iloc[-1]['reason']}")
        pts = rows[rows["kind"].isin(["probe", "confirm"])]
        for col, (panel, prefix) in enumerate(panels, start=1):
            ax = axes[col - 1]
            for kind, verdict, symbol, marker in (("probe", "pass", "circle", "o"), ("probe", "fail", "x", "x"),
                                                  ("confirm", "pass", "diamond", "D"),
                                                  ("confirm", "fail", "diamond-open", "d")):
                sel = pts[(pts["kind"] == kind) & (pts["verdict"] == verdict) & pts[f"{prefix}_p99_ns"].notna()]
                if sel.empty:
                    continue
                xs = [float(v) for v in sel["target_qps"]]
                ys = [float(v) / NS_PER_MS for v in sel[f"{prefix}_p99_ns"]]
                hover = [f"{label}<br>step {int(s)} {kind}: {verdict}<br>{q:,.2f} QPS<br>{panel} {y:,.2f} ms"
                         f"<br>{r}" for s, q, y, r in zip(sel["step"], xs, ys, sel["reason"])]
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=f"{label}: {kind} {verdict}",
                                         legendgroup=search_id, showlegend=col == 1, hovertext=hover,
                                         hoverinfo="text", marker=dict(symbol=symbol, size=10, color=color)),
                              row=1, col=col)
                style = ({"color": color} if marker in ("o", "D", "x") else {"facecolors": "none", "edgecolors": color})
                ax.scatter(xs, ys, marker=marker, s=40, label=f"{label}: {kind} {verdict}" if col == 1 else None,
                           **style)
            if chosen is not None:
                at = pts[(pts["kind"] == "confirm") & (pts["verdict"] == "pass")]
                at = at[(at["target_qps"] - chosen).abs() <= 1e-9 * max(chosen, 1.0)]
                if not at.empty and not isnull(at.iloc[-1][f"{prefix}_p99_ns"]):
                    y = float(at.iloc[-1][f"{prefix}_p99_ns"]) / NS_PER_MS
                    fig.add_trace(go.Scatter(x=[chosen], y=[y], mode="markers", name=f"{label}: chosen {chosen:,.2f} QPS",
                                             legendgroup=search_id, showlegend=col == 1,
                                             marker=dict(symbol="star", size=18, color=color,
                                                         line=dict(width=1, color="#333"))), row=1, col=col)
                    ax.scatter([chosen], [y], marker="*", s=220, color=color, edgecolors="#333", zorder=5,
                               label=f"{label}: chosen {chosen:,.2f} QPS" if col == 1 else None)
    for col, (panel, prefix) in enumerate(panels, start=1):
        ax = axes[col - 1]
        limits = measured[[f"{prefix}_limit_ns", "margin"]].dropna(subset=[f"{prefix}_limit_ns"]).drop_duplicates()
        for limit_ns, margin in limits.itertuples(index=False):
            limit = float(limit_ns) / NS_PER_MS
            fig.add_hline(y=limit, line=dict(color=LIMIT_COLOR, dash="dash"), annotation_text=f"limit {limit:g} ms",
                          annotation_position="top left", row=1, col=col)
            ax.axhline(limit, color=LIMIT_COLOR, linestyle="--", linewidth=1.2)
            ax.annotate(f"limit {limit:g} ms", xy=(0, limit), xycoords=("axes fraction", "data"), fontsize=7,
                        color=LIMIT_COLOR, va="bottom")
            if not isnull(margin) and float(margin) > 0:
                inner = limit * (1 - float(margin))
                fig.add_hline(y=inner, line=dict(color=LIMIT_COLOR, dash="dot"),
                              annotation_text=f"with {float(margin):.0%} margin", annotation_position="bottom left",
                              row=1, col=col)
                ax.axhline(inner, color=LIMIT_COLOR, linestyle=":", linewidth=1.0)
        fig.update_xaxes(title_text="target QPS", row=1, col=col)
        fig.update_yaxes(title_text=f"{panel} (ms)", rangemode="tozero", row=1, col=col)
        ax.set_title(panel)
        ax.set_xlabel("target QPS")
        ax.set_ylabel(f"{panel} (ms)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.update_layout(title=dict(text=title, x=0.01), paper_bgcolor="white", plot_bgcolor="white", height=480,
                      legend=dict(font=dict(size=10)))
    fig_m.suptitle(title)
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        fig_m.legend(handles, names, fontsize=6, loc="upper left", bbox_to_anchor=(1 - 2.75 / fig_m.get_figwidth(), 0.86))
    return Chart(key=key, title=title, figure=fig, mpl=fig_m, notes=notes)
