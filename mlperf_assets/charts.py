"""Pure figure builders: DataFrames from the results store in, figures out.

Every builder takes DataFrames shaped like the store's `run_summary` view (and, where it needs them, the
`sample_timings` and `progress` tables) and returns a `Chart` holding the same picture twice: a plotly figure for
the interactive dashboard and a matplotlib figure (Agg canvas, no pyplot state) for PNGs in reports and Dagster
metadata. A builder that finds nothing to draw returns a `Chart` with `available=False` and the reason, so a report
can say what is missing and why instead of drawing an empty box.

Both renderings are cheap to ask for and paid only when used: the plotly figure is a plain dict
(`Chart.figure_dict`; `Chart.figure` wraps it in a validated `plotly.graph_objects.Figure` on first use), and the
matplotlib figure is drawn by `Chart.render` when a PNG is wanted, so a report can skip a picture whose data did
not change and draw the others in worker processes.

Each run is judged by its own rules: the latency limits a Server run is held to come from its own LoadGen log,
else from its benchmark's entry in `harness/benchmarks.py` (`latency_rules`), and accuracy targets from its
benchmark's entry (`rouge_minimums`), drawn per run, never one benchmark's constants for everyone.

Conventions: latencies are stored in ns and shown in ms; throughput in tokens/s; one colour per node, the same in
every chart (`node_colors`); runs of baseline and harness-ceiling backends carry that label in every legend.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

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
PUBLISHED_COLOR = "#8c8c8c"
NS_PER_MS = 1e6

# How each kind of backend is labelled wherever its figures appear (a model's runs carry no label).
BACKEND_KIND_LABELS = {"baseline": "baseline", "harness-ceiling": "harness ceiling", "simulation": "simulation"}
PERCENTILES = ("p50", "p90", "p99")
PERCENTILE_SYMBOLS = {"p50": ("circle-open", "o"), "p90": ("diamond", "D"), "p99": ("square", "s")}
ROUGE_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
SCENARIO_DASHES = {"Offline": ("solid", "-"), "Server": ("dash", "--"), "Interactive": ("dot", ":"),
                   "SingleStream": ("dashdot", "-.")}
SCENARIO_SYMBOLS = {"Offline": ("circle", "o"), "Server": ("square", "s"), "Interactive": ("diamond", "D"),
                    "SingleStream": ("triangle-up", "^")}


class Chart:
    """One picture in two renderings; `available=False` (with `reason`) when the data was not there.

    Builders give the plotly side as `figure_dict` (a plain figure dict) or `figure` (a plotly Figure), and the
    matplotlib side as `render` (a function drawing it) or `mpl` (a drawn Figure). Whichever side is asked for and
    was not given is made on first use: `figure` from `figure_dict`, `mpl` by calling `render`.
    """

    def __init__(self, key: str, title: str, available: bool = True, reason: str | None = None,
                 needs_harness_data: bool = False, figure: object | None = None, mpl: object | None = None,
                 table: pd.DataFrame | None = None, notes: list[str] | None = None, *,
                 figure_dict: dict | None = None, render: Callable[[], object] | None = None) -> None:
        self.key = key
        self.title = title
        self.available = available
        self.reason = reason
        self.needs_harness_data = needs_harness_data
        self.table = table  # tabular charts also keep their table (for markdown)
        self.notes = list(notes or [])
        self._figure = figure
        self._figure_dict = figure_dict
        self._mpl = mpl
        self.render = render

    def __repr__(self) -> str:
        state = "available" if self.available else f"missing: {self.reason}"
        return f"Chart({self.key!r}, {state})"

    @property
    def has_figure(self) -> bool:
        return self._figure is not None or self._figure_dict is not None

    @property
    def figure(self):
        """The plotly Figure (validated; made from `figure_dict` on first use), or None."""
        if self._figure is None and self._figure_dict is not None:
            import plotly.graph_objects as go

            self._figure = go.Figure(self._figure_dict)
        return self._figure

    @figure.setter
    def figure(self, value) -> None:
        self._figure, self._figure_dict = value, None

    @property
    def figure_dict(self) -> dict | None:
        """The plotly figure as a plain dict (what the dashboard embeds), or None."""
        if self._figure_dict is None and self._figure is not None:
            data = self._figure.to_plotly_json()
            for trace in data.get("data", []):
                trace.pop("uid", None)
            self._figure_dict = data
        return self._figure_dict

    @property
    def mpl(self):
        """The matplotlib Figure (drawn by `render` on first use), or None."""
        if self._mpl is None and self.render is not None:
            self._mpl = self.render()
        return self._mpl

    @mpl.setter
    def mpl(self, value) -> None:
        self._mpl = value

    @property
    def can_render(self) -> bool:
        return self._mpl is not None or self.render is not None

    def png(self, dpi: int = 100) -> bytes:
        if not self.can_render:
            raise ValueError(f"chart {self.key!r} has nothing to render: {self.reason}")
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        figure = self.mpl
        FigureCanvasAgg(figure)  # attach an Agg canvas: no pyplot, no global backend switch
        buf = io.BytesIO()
        # Unhinted glyphs: text is most of a chart's drawing time, and hinting adds a third to it.
        with matplotlib.rc_context({"text.hinting": "none"}):
            figure.savefig(buf, format="png", dpi=dpi)
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
    if not isnull(label) and str(label) and not (str(label) == "Server" and is_interactive(row)):
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


@dataclass(frozen=True)
class LatencyRules:
    """The p99 latency limits (ms) one run is held to, and where they come from.

    MLPerf judges latency limits in the Server scenario only (Interactive is a Server run with tighter limits):
    TTFT and TPOT for benchmarks with token latencies, the end-to-end target latency otherwise (gpt-j)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    latency_ms: float | None = None
    source: str | None = None  # "LoadGen log", or "benchmark table (<LoadGen model name>)"
    why_none: str | None = None  # why a run has no limit (Offline, a benchmark nobody knows...)

    def as_dict(self) -> dict[str, float]:
        values = {"ttft": self.ttft_ms, "tpot": self.tpot_ms, "latency": self.latency_ms}
        return {name: value for name, value in values.items() if value is not None}

    def describe(self) -> str:
        """`TTFT 2,000 ms · TPOT 200 ms (LoadGen log)`, or why there is none."""
        parts = [f"{label} {fmt_limit(value)} ms" for label, value in
                 (("TTFT", self.ttft_ms), ("TPOT", self.tpot_ms), ("latency", self.latency_ms)) if value is not None]
        if not parts:
            return self.why_none or "–"
        return " · ".join(parts) + (f" ({self.source})" if self.source else "")


def fmt_limit(ms: float) -> str:
    """A limit in ms as people write it: `2,000`, `30`, `20,000`, `0.5`."""
    return f"{ms:,.0f}" if float(ms).is_integer() else f"{ms:,.4g}"


def latency_rules(row: Mapping) -> LatencyRules:
    """The p99 limits a run is held to: those its own LoadGen log states (`ttft_latency_ns`, `tpot_latency_ns`, or
    `target_latency_ns` when the run has no token latencies), else its benchmark's in the benchmark registry for its
    LoadGen model name or benchmark (an Interactive run gets the interactive limits). Only Server runs have limits;
    a limit nobody knows (llama2-70b without its log's figures) is left out, never borrowed from another benchmark."""
    scenario = row.get("scenario")
    if isnull(scenario) or str(scenario) != "Server":
        return LatencyRules(why_none="–" if isnull(scenario) else f"none ({scenario_kind(row)})")
    logged = {name: _ms(row.get(f"{name}_latency_ns")) for name in ("ttft", "tpot")}
    logged = {name: value for name, value in logged.items() if value is not None and value > 0}
    target = _ms(row.get("target_latency_ns"))
    name, known = _registry_limits_ns(row)
    table_source = f"benchmark table ({name})" if name else None
    if logged:
        source = "LoadGen log"
        for limit in ("ttft", "tpot"):
            if limit not in logged and _ms(known.get(f"{limit}_latency_ns")) is not None:
                logged[limit] = _ms(known.get(f"{limit}_latency_ns"))
                source = f"LoadGen log; {limit.upper()} from the {table_source}"
        return LatencyRules(ttft_ms=logged.get("ttft"), tpot_ms=logged.get("tpot"), source=source)
    if target is not None and target > 0:
        return LatencyRules(latency_ms=target, source="LoadGen log")
    ttft, tpot = _ms(known.get("ttft_latency_ns")), _ms(known.get("tpot_latency_ns"))
    latency = _ms(known.get("target_latency_ns"))
    if ttft is not None or tpot is not None:
        return LatencyRules(ttft_ms=ttft, tpot_ms=tpot, source=table_source)
    if latency is not None:
        return LatencyRules(latency_ms=latency, source=table_source)
    return LatencyRules(why_none=f"unknown ({row.get('benchmark') or 'benchmark'} not in the benchmark table, "
                                 "no limit in its log)")


def limits_for(row: Mapping) -> dict[str, float]:
    """The p99 limits (ms) a Server run is held to, as {"ttft": .., "tpot": ..} or {"latency": ..} (gpt-j's
    end-to-end target); {} when none applies or none is known. See `latency_rules`."""
    return latency_rules(row).as_dict()


def _registry_limits_ns(row: Mapping) -> tuple[str | None, Mapping[str, int | None]]:
    """(LoadGen model name, its Server limits in ns) from the registry, for the run's model or benchmark."""
    names = [str(row[k]) for k in ("lg_model_name", "benchmark") if not isnull(row.get(k)) and str(row[k])]
    if is_interactive(row):  # "llama3.1-8b" measured under the interactive limits
        names = [f"{canonical}-interactive" for n in names
                 if (canonical := registry.submission_name(n)) and not canonical.endswith("-interactive")] + names
    for name in names:
        limits = registry.latency_limits_ns(name)
        if limits is not None:
            return _lg_model_of(name), limits
    return None, {}


def _lg_model_of(name: str) -> str:
    if name in registry.LOADGEN_MODELS:
        return name
    canonical = registry.submission_name(name)
    for model in registry.LOADGEN_MODELS.values():
        if model.submission_name == canonical:
            return model.name
    target = registry.accuracy_target(name)
    return registry.BENCHMARKS[target.family].default_lg_model_name if target else name


def accuracy_rules(benchmark: object) -> str:
    """The accuracy targets a run of `benchmark` is held to, from the benchmark registry, as one line (`–` when
    the registry does not know the benchmark: such runs get no verdict)."""
    target = registry.accuracy_target(benchmark)
    if target is None:
        return f"none known for {benchmark}" if not isnull(benchmark) else "–"
    parts = []
    for metric, (low, high) in target.thresholds().items():
        if metric == "gen_len":
            parts.append(f"gen_len {low:,.0f}–{high:,.0f}" if high else f"gen_len ≥ {low:,.0f}")
        else:
            parts.append(f"{metric} ≥ {low:.4f}")
    return f"{target.benchmark} ({target.fraction:.1%} of the reference): " + ", ".join(parts)


# ---------------------------------------------------------------------------------------------------- data helpers


def _iterrows(df: pd.DataFrame):
    """(index, row as dict) pairs: DataFrame.iterrows builds a Series per row, ~100x slower on wide frames."""
    columns = list(df.columns)
    return zip(df.index, (dict(zip(columns, row)) for row in df.to_numpy(dtype=object)))


GROUP_KEY_COLUMN = "_group_key"


def group_keys(df: pd.DataFrame) -> pd.Series:
    """`group_key` of every row, as one string per row (usable with groupby); vectorised. A frame that carries
    them already (a `GROUP_KEY_COLUMN` column, as the report's loaded summary does) is not computed again."""
    if df.empty:
        return pd.Series([], index=df.index, dtype=object)
    if GROUP_KEY_COLUMN in df.columns:
        return df[GROUP_KEY_COLUMN]
    parts = [_text_column(df, "node"), scenario_kinds(df), _text_column(df, "benchmark"), _text_column(df, "backend")]
    keys = parts[0]
    for part in parts[1:]:
        keys = keys + "\x1f" + part
    return pd.Series(keys.to_numpy(dtype=object), index=df.index, dtype=object)


def _text_column(df: pd.DataFrame, name: str) -> pd.Series:
    """str() of every value, as `group_key` writes it (None -> 'None', NaN -> 'nan')."""
    return pd.Series([str(v) for v in _col(df, name)], index=df.index, dtype=object)


def scenario_kinds(df: pd.DataFrame) -> pd.Series:
    """`scenario_kind` of every row at once."""
    label = pd.Series(["" if isnull(v) else str(v) for v in _col(df, "scenario_label")], index=df.index, dtype=object)
    scenario = pd.Series([str(v) if not isnull(v) and str(v) else "?" for v in _col(df, "scenario")],
                         index=df.index, dtype=object)
    interactive = (label == "Interactive").to_numpy().copy()
    for column in ("benchmark", "lg_model_name", "source_path"):
        values = _col(df, column)
        interactive |= np.array([not isnull(v) and "interactive" in str(v).lower() for v in values], dtype=bool)
    use_label = (label != "").to_numpy() & ~((label == "Server").to_numpy() & interactive)
    server = (scenario == "Server").to_numpy()
    kind = np.where(use_label, label.to_numpy(), np.where(server & interactive, "Interactive", scenario.to_numpy()))
    return pd.Series(kind, index=df.index, dtype=object)


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
    """The shared styling, on a plotly Figure (builders that make plain dicts use `_layout_dict`)."""
    # Explicit styling rather than template="plotly_white": a named template is deep-copied into every figure.
    layout = _layout_dict(title, height)
    axis = layout.pop("xaxis")
    layout.pop("yaxis")
    fig.update_layout(**layout)
    fig.update_xaxes(**axis)
    fig.update_yaxes(**axis)


_AXIS_STYLE = {"gridcolor": "#ebf0f8", "linecolor": "#b0b8c8", "zerolinecolor": "#ebf0f8", "automargin": True}


def _layout_dict(title: str, height: int = 460) -> dict:
    return {
        "title": {"text": title, "x": 0.01}, "paper_bgcolor": "white", "plot_bgcolor": "white",
        "font": {"family": "system-ui, sans-serif", "size": 12, "color": "#2a3f5f"}, "colorway": list(PALETTE),
        "height": height, "margin": {"l": 70, "r": 30, "t": 60, "b": 60}, "legend": {"font": {"size": 11}},
        "hoverlabel": {"align": "left"}, "xaxis": dict(_AXIS_STYLE), "yaxis": dict(_AXIS_STYLE),
    }


def _subplots_dict(title: str, titles: list[str], height: int, spacing: float) -> dict:
    """A layout of one row of subplots (what `make_subplots(rows=1, cols=n)` builds), as a plain dict: axes
    `x`/`y`, `x2`/`y2`, ... side by side, and the subplot titles as annotations."""
    layout = _layout_dict(title, height)
    n = max(len(titles), 1)
    width = (1 - spacing * (n - 1)) / n
    layout["annotations"] = []
    for i, text in enumerate(titles):
        suffix = _axis_suffix(i)
        x0 = i * (width + spacing)
        layout[f"xaxis{suffix}"] = {**_AXIS_STYLE, "domain": [x0, x0 + width], "anchor": f"y{suffix}"}
        layout[f"yaxis{suffix}"] = {**_AXIS_STYLE, "domain": [0.0, 1.0], "anchor": f"x{suffix}"}
        layout["annotations"].append({"text": text, "x": x0 + width / 2, "xref": "paper", "y": 1.0, "yref": "paper",
                                      "xanchor": "center", "yanchor": "bottom", "showarrow": False,
                                      "font": {"size": 16}})
    return layout


def _axis_suffix(i: int) -> str:
    return "" if i == 0 else str(i + 1)


def _x_values(df: pd.DataFrame) -> tuple[list, list, str]:
    """(x for plotly, x for matplotlib, axis title): run start times (ISO text / datetimes) when every run has
    one, else the order in the store."""
    stamps = pd.to_datetime(_col(df, "started_at"), errors="coerce", utc=True)
    if len(df) and stamps.notna().all():
        naive = stamps.dt.tz_localize(None)
        return list(naive.dt.strftime("%Y-%m-%d %H:%M:%S")), list(naive.dt.to_pydatetime()), "run start (UTC)"
    order = list(range(1, len(df) + 1))
    return order, order, "run (order in the store)"


def _clean(values: Iterable) -> list:
    """Plain floats with None for missing values (NaN is not JSON)."""
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]


def _log_scale(values: Iterable[float | None]) -> bool:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 100


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


def headline_series(df: pd.DataFrame) -> pd.Series:
    """`headline_tokens_per_second` of every row at once."""
    tps = pd.to_numeric(_col(df, "tokens_per_second"), errors="coerce").astype("float64")
    completed = pd.to_numeric(_col(df, "completed_tokens_per_second"), errors="coerce").astype("float64")
    server = _col(df, "scenario").astype(str) == "Server"
    return pd.Series(np.where(server, completed.fillna(tps), tps.fillna(completed)), index=df.index)


# ------------------------------------------------------------------------------------------------------ the charts


def throughput_over_time(summary: pd.DataFrame, colors: Mapping[str, str] | None = None) -> Chart:
    """Tokens/s of every performance run, one line per node/scenario/backend, over run start time."""
    key, title = "throughput_over_time", "Throughput per node and scenario over time"
    runs = performance_runs(summary)
    if not runs.empty:
        runs = runs.assign(_tps=headline_series(runs))
        runs = runs[runs["_tps"].notna()]
    if runs.empty:
        return _missing(key, title, "no performance run reports tokens/s")
    colors = dict(colors or node_colors(runs["node"]))
    x_plotly, x_mpl, x_label = _x_values(runs)
    multi_benchmark = runs["benchmark"].nunique(dropna=True) > 1 if "benchmark" in runs else False
    log_y = _log_scale(runs["_tps"].astype(float))
    y_label = "tokens/s (log scale)" if log_y else "tokens/s"
    samples_per_s = [_fmt(v, 3) for v in _clean(pd.to_numeric(_col(runs, "samples_per_second"), errors="coerce"))]
    custom = list(zip(runs["run_id"].astype(str), [str(v) for v in _col(runs, "result_validity")], samples_per_s))
    tps = _clean(runs["_tps"])
    traces, series = [], []
    for _, positions in sorted(runs.reset_index(drop=True).groupby(group_keys(runs).to_numpy()).indices.items()):
        first = runs.iloc[positions[0]].to_dict()
        name = series_label(first, with_benchmark=multi_benchmark)
        color = colors.get(str(first["node"]), PALETTE[0])
        kind = scenario_kind(first)
        dash, symbol = SCENARIO_DASHES.get(kind, ("solid", "-")), SCENARIO_SYMBOLS.get(kind, ("circle", "o"))
        ys = [tps[i] for i in positions]
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": name, "x": [x_plotly[i] for i in positions], "y": ys,
            "line": {"color": color, "dash": dash[0]}, "marker": {"symbol": symbol[0], "size": 8, "color": color},
            "customdata": [custom[i] for i in positions],
            "hovertemplate": (f"run %{{customdata[0]}}<br>{_escape_template(name)}<br>{x_label} %{{x}}"
                              "<br>validity %{customdata[1]}<br>tokens/s %{y:,.1f}<br>samples/s %{customdata[2]}"
                              "<extra></extra>"),
        })
        series.append((_short(name, 58), color, dash[1], symbol[1], [x_mpl[i] for i in positions], ys))
    layout = _layout_dict(title)
    layout["xaxis"]["title"] = {"text": x_label}
    layout["yaxis"].update(title={"text": y_label}, type="log" if log_y else "linear")

    def render():
        fig_m = _mpl_figure(9.0 + 3.6, 4.8, right=3.8, bottom=1.0)
        ax = fig_m.add_subplot()
        for label, color, dash, marker, xs, ys in series:
            ax.plot(xs, [np.nan if y is None else y for y in ys], label=label, color=color, linestyle=dash,
                    marker=marker)
        ax.set_title(title)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig_m.autofmt_xdate(bottom=1.0 / 4.8)
        return fig_m

    return Chart(key=key, title=title, figure_dict={"data": traces, "layout": layout}, render=render)


def _escape_template(text: str) -> str:
    """Literal text inside a plotly hovertemplate (`%{` would start a placeholder)."""
    return str(text).replace("%{", "%\u200b{")


def _num(value: object) -> float | None:
    return None if isnull(value) else float(value)


_LIMIT_LABELS = {"ttft": "TTFT", "tpot": "TPOT", "latency": "latency"}


def _percentile_dot_chart(
    key: str, title: str, runs: pd.DataFrame, panels: list[tuple[str, str, str]],
    colors: Mapping[str, str], limits: bool,
) -> Chart:
    """Shared shape of the latency charts: one column per run, p50/p90/p99 as symbols, one colour per node, and
    (with `limits`) a red bar at each run's own p99 limit (`latency_rules`), so runs held to different limits are
    drawn side by side, each against its own.

    `panels` = (panel title, column prefix, limit name) with columns `{prefix}_{p50,p90,p99}_ns`.
    """
    rows = [r for _, r in _iterrows(runs)]
    labels = unique_labels([run_label(r) for r in rows])
    rules = [latency_rules(r) if limits else LatencyRules() for r in rows]
    nodes = [str(r.get("node")) for r in rows]
    layout = _subplots_dict(title, [p[0] for p in panels], 520, 0.1)
    traces: list[dict] = []
    for pct in PERCENTILES:  # legend keys for the symbols (colour says the node)
        traces.append({"type": "scatter", "x": [None], "y": [None], "mode": "markers", "name": pct,
                       "legendgroup": f"_{pct}", "hoverinfo": "skip", "xaxis": "x", "yaxis": "y",
                       "marker": {"symbol": PERCENTILE_SYMBOLS[pct][0], "size": 10, "color": "#777"}})
    legend_seen: set[str] = set()
    mpl_panels = []
    for col, (panel_title, prefix, limit_name) in enumerate(panels):
        suffix = _axis_suffix(col)
        values_all: list[float] = []
        points = []  # (pct, run position, y) for matplotlib
        by_node: dict[str, dict[str, list]] = {}
        for pct in PERCENTILES:
            column = f"{prefix}_{pct}_ns"
            if column not in runs.columns:
                continue
            for i, r in enumerate(rows):
                y = _ms(r.get(column))
                if y is None:
                    continue
                limit = rules[i].as_dict().get(limit_name)
                verdict = ""
                if limit is not None and pct == "p99":
                    verdict = (f"<br>{'within' if y <= limit else 'OVER'} its p99 limit {fmt_limit(limit)} ms "
                               f"({rules[i].source})")
                node = by_node.setdefault(nodes[i], {"x": [], "y": [], "symbol": [], "text": []})
                node["x"].append(labels[i])
                node["y"].append(y)
                node["symbol"].append(PERCENTILE_SYMBOLS[pct][0])
                node["text"].append(_hover_text(r, {f"{panel_title} {pct}": f"{_fmt(y)} ms"}) + verdict)
                points.append((pct, i, y))
                values_all.append(y)
        for node, data in sorted(by_node.items()):
            color = colors.get(node, PALETTE[0])
            traces.append({"type": "scatter", "mode": "markers", "name": node, "legendgroup": node,
                           "showlegend": node not in legend_seen, "x": data["x"], "y": data["y"],
                           "marker": {"symbol": data["symbol"], "size": 11, "color": color,
                                      "line": {"width": 2, "color": color}},
                           "hovertext": data["text"], "hoverinfo": "text", "xaxis": f"x{suffix}",
                           "yaxis": f"y{suffix}"})
            legend_seen.add(node)
        limit_points = [(i, rules[i].as_dict()[limit_name]) for i in range(len(rows))
                        if limit_name and limit_name in rules[i].as_dict()]
        if limit_points:
            traces.append({
                "type": "scatter", "mode": "markers", "name": "p99 limit (each run's own)", "legendgroup": "_limit",
                "showlegend": "_limit" not in legend_seen, "x": [labels[i] for i, _ in limit_points],
                "y": [v for _, v in limit_points], "xaxis": f"x{suffix}", "yaxis": f"y{suffix}",
                "marker": {"symbol": "line-ew-open", "size": 30, "color": LIMIT_COLOR, "line": {"width": 3,
                                                                                               "color": LIMIT_COLOR}},
                "hovertext": [f"{labels[i]}<br>p99 {_LIMIT_LABELS[limit_name]} limit {fmt_limit(v)} ms<br>from the "
                              f"{rules[i].source}" for i, v in limit_points], "hoverinfo": "text"})
            legend_seen.add("_limit")
            values_all += [v for _, v in limit_points]
        log_y = _log_scale(values_all)
        y_label = f"{panel_title} (ms{', log scale' if log_y else ''})"
        layout[f"yaxis{suffix}"].update(title={"text": y_label}, type="log" if log_y else "linear",
                                        rangemode="tozero")
        layout[f"xaxis{suffix}"].update(title={"text": "run"}, tickangle=30, type="category",
                                        categoryorder="array", categoryarray=labels)
        mpl_panels.append((panel_title, y_label, log_y, points, limit_points))
    colors_by_run = [colors.get(n, PALETTE[0]) for n in nodes]
    node_handles = {n: colors.get(n, PALETTE[0]) for n in sorted(set(nodes))}

    def render():
        from matplotlib.lines import Line2D

        # Panels stacked over one shared run axis: the run labels are drawn once (text is most of the cost).
        width = max(7.0, 0.3 * len(labels) + 2.0)
        fig_m = _mpl_figure(width + LEGEND_WIDTH_IN, 2.6 * len(panels) + 2.3, left=1.5, right=LEGEND_WIDTH_IN,
                            bottom=1.8, top=0.6)
        fig_m.subplots_adjust(hspace=0.25)
        axes = fig_m.subplots(len(panels), 1, squeeze=False, sharex=True)[:, 0]
        short = [_short(lbl, 32) for lbl in labels]
        for ax, (panel_title, y_label, log_y, points, limit_points) in zip(axes, mpl_panels):
            for pct in PERCENTILES:  # one scatter per percentile: the colour of each point says its node
                mine = [(i, y) for p, i, y in points if p == pct]
                if not mine:
                    continue
                point_colors = [colors_by_run[i] for i, _ in mine]
                ax.scatter([i for i, _ in mine], [y for _, y in mine], marker=PERCENTILE_SYMBOLS[pct][1], s=45,
                           facecolors="none" if pct == "p50" else point_colors, edgecolors=point_colors)
            if limit_points:
                ax.scatter([i for i, _ in limit_points], [v for _, v in limit_points], marker="_", s=500,
                           color=LIMIT_COLOR, linewidths=2.5, zorder=3)
            ax.set_ylabel(y_label)
            if log_y:
                ax.set_yscale("log")
            else:
                ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        axes[-1].set_xticks(range(len(labels)), short, rotation=30, ha="right", fontsize=7)
        axes[-1].set_xlim(-0.5, len(labels) - 0.5)
        axes[-1].set_xlabel("run")
        fig_m.suptitle(title)
        handles = [Line2D([], [], linestyle="", marker=PERCENTILE_SYMBOLS[p][1], color="#777",
                          markerfacecolor="none" if p == "p50" else "#777", label=p) for p in PERCENTILES]
        handles += [Line2D([], [], linestyle="", marker="s", color=c, label=_short(n, 44))
                    for n, c in node_handles.items()]
        if any(limit_points for *_, limit_points in mpl_panels):
            handles.append(Line2D([], [], linestyle="", marker="_", markersize=14, markeredgewidth=2.5,
                                  color=LIMIT_COLOR, label="p99 limit (each run's own)"))
        _side_legend(fig_m, handles)
        return fig_m

    notes = []
    if limits:
        held = sorted({(scenario_kind(r), rule.describe()) for r, rule in zip(rows, rules) if rule.as_dict()})
        if held:
            notes.append("Each run is drawn against its own p99 limits (red bars): "
                         + "; ".join(f"{kind}: {text}" for kind, text in held) + ".")
    return Chart(key=key, title=title, figure_dict={"data": traces, "layout": layout}, render=render, notes=notes)


def _short(label: str, limit: int = 38) -> str:
    """Shorten in the middle, so both the node and the date stay readable."""
    if len(label) <= limit:
        return label
    head = (limit - 1) // 2
    return label[:head] + "…" + label[len(label) - (limit - 1 - head):]


def server_latency_vs_limits(summary: pd.DataFrame, colors: Mapping[str, str] | None = None) -> Chart:
    """TTFT and TPOT p50/p90/p99 (ms) of the latest Server/Interactive run per group, each against its own p99
    limits (its LoadGen log's, else its benchmark's: `latency_rules`)."""
    key, title = "server_ttft_tpot", "Server and Interactive TTFT and TPOT against each run's own limits"
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
    """End-to-end sample latency p50/p90/p99 (ms) of the latest run per group, from the LoadGen summaries; a Server
    run judged on end-to-end latency (gpt-j) is drawn against its own target latency."""
    key, title = "latency_percentiles", "Sample latency percentiles (latest run per node and scenario)"
    runs = performance_runs(summary)
    if not runs.empty:
        runs = latest_per_group(runs[_col(runs, "latency_p99_ns").notna()])
    if runs.empty:
        return _missing(key, title, "no performance run reports latency percentiles")
    colors = dict(colors or node_colors(runs["node"]))
    return _percentile_dot_chart(key, title, runs, [("latency", "latency", "latency")], colors, limits=True)


def rouge_vs_target(summary: pd.DataFrame, colors: Mapping[str, str] | None = None) -> Chart:
    """ROUGE-1/2/L/Lsum of every accuracy result, one panel per metric, each run against the minimums of its own
    benchmark (`rouge_minimums`: 99% of the reference for llama3.1-8b and gptj-99, 99.9% for gptj-99.9)."""
    key, title = "rouge_vs_target", "ROUGE per run against its benchmark's accuracy targets"
    runs = summary[_col(summary, "rouge1").notna()] if not summary.empty else summary
    # The store shows a scenario's accuracy on all its runs: draw it once, on the accuracy run.
    accuracy_mode = _col(runs, "mode").astype(str).str.lower() == "accuracy"
    if accuracy_mode.any():
        runs = runs[accuracy_mode]
    if runs.empty:
        return _missing(key, title, "no run has accuracy (ROUGE) results")
    runs = sort_by_time(runs).reset_index(drop=True)
    colors = dict(colors or node_colors(runs["node"]))
    x_plotly, x_mpl, x_label = _x_values(runs)  # a time axis scales to hundreds of nightly runs
    metrics = [m for m in ROUGE_METRICS if m in runs.columns and runs[m].notna().any()]
    benchmarks = [None if isnull(b) else str(b) for b in _col(runs, "benchmark")]
    minimums = {b: rouge_minimums(b) for b in set(benchmarks)}
    target_names = {b: (t.benchmark, t.fraction) for b in minimums if (t := registry.accuracy_target(b))}
    verdicts = {"True": "PASS", "False": "FAIL", "None": "no verdict"}
    judged = runs[[c for c in ("accuracy_passed", "benchmark", *ROUGE_METRICS, "gen_len", "gen_num") if c in runs]]
    verdict = [verdicts[str(accuracy_verdict(r))] for _, r in _iterrows(judged)]
    run_ids = runs["run_id"].astype(str).tolist()
    nodes = runs["node"].astype(str).tolist()
    layout = _subplots_dict(title, metrics, 500, 0.06)
    traces: list[dict] = []
    seen: set[str] = set()
    mpl_panels = []
    by_node = runs.groupby(runs["node"].astype(str).to_numpy()).indices
    node_benchmarks: list[tuple[tuple[str, str | None], list[int]]] = []
    for node, positions in sorted(by_node.items()):
        split: dict[str | None, list[int]] = {}
        for i in positions:
            split.setdefault(benchmarks[i], []).append(int(i))
        node_benchmarks += [((node, bench), pos) for bench, pos in sorted(split.items(), key=lambda kv: str(kv[0]))]
    by_benchmark = pd.Series(benchmarks, dtype=object).groupby(
        pd.Series([b or "" for b in benchmarks])).indices
    for col, metric in enumerate(metrics):
        suffix = _axis_suffix(col)
        values = _clean(pd.to_numeric(runs[metric], errors="coerce"))
        # One trace per node and benchmark: the benchmark and its target are the trace's (`meta`), so each point
        # carries only its run id and verdict (thousands of nightly runs, four panels).
        for (node, bench), positions in node_benchmarks:
            color = colors.get(node, PALETTE[0])
            traces.append({"type": "scatter", "mode": "markers", "name": node, "legendgroup": node,
                           "showlegend": node not in seen, "x": [x_plotly[i] for i in positions],
                           "y": [values[i] for i in positions], "marker": {"color": color, "size": 10},
                           "customdata": [[run_ids[i], verdict[i]] for i in positions],
                           "meta": [bench or "?", _target_text(minimums.get(bench), metric)],
                           "xaxis": f"x{suffix}", "yaxis": f"y{suffix}",
                           "hovertemplate": (f"run %{{customdata[0]}}<br>node {_escape_template(node)} · %{{meta[0]}}"
                                             f"<br>{metric} %{{y:.4f}}<br>target %{{meta[1]}}<br>accuracy "
                                             "%{customdata[1]}<extra></extra>")})
            seen.add(node)
        segments = []  # one target per benchmark, spanning its runs
        for bench, positions in sorted(by_benchmark.items()):
            target = minimums.get(bench or None, {}).get(metric)
            if target is None:
                continue
            name, fraction = target_names[bench]
            xs = sorted({x_plotly[i] for i in positions})
            label = f"{name} target ({fraction:.1%})"
            traces.append({"type": "scatter", "mode": "lines+markers", "name": label, "legendgroup": f"_t{name}",
                           "showlegend": f"_t{name}" not in seen, "x": [xs[0], xs[-1]], "y": [target, target],
                           "line": {"color": TARGET_COLOR, "width": 2, "dash": "dash"},
                           "marker": {"symbol": "line-ew-open", "size": 22, "color": TARGET_COLOR,
                                      "line": {"width": 2, "color": TARGET_COLOR}},
                           "xaxis": f"x{suffix}", "yaxis": f"y{suffix}",
                           "hovertemplate": f"{label}: {metric} ≥ {target:.4f}<extra></extra>"})
            seen.add(f"_t{name}")
            mpl_x = sorted({x_mpl[i] for i in positions})
            segments.append((label, target, mpl_x[0], mpl_x[-1]))
        layout[f"yaxis{suffix}"]["title"] = {"text": f"{metric} (F1 × 100)"}
        layout[f"xaxis{suffix}"].update(title={"text": x_label}, tickangle=30)
        mpl_panels.append((metric, values, segments))
    by_node_sorted = sorted(by_node.items())
    node_handles = {n: colors.get(n, PALETTE[0]) for n in sorted(set(nodes))}

    def render():
        from matplotlib.lines import Line2D

        fig_m = _mpl_figure(3.4 * len(metrics) + 0.6 + LEGEND_WIDTH_IN, 5.0, right=LEGEND_WIDTH_IN, bottom=1.2,
                            wspace=0.45)
        axes = fig_m.subplots(1, len(metrics), squeeze=False)[0]
        target_labels: dict[str, str] = {}
        for ax, (metric, values, segments) in zip(axes, mpl_panels):
            for node, positions in by_node_sorted:  # markers (Agg's fast path), one line artist per node
                keep = [i for i in positions if values[i] is not None]
                ax.plot([x_mpl[i] for i in keep], [values[i] for i in keep], linestyle="", marker="o",
                        markersize=6, color=colors.get(node, PALETTE[0]))
            for label, target, x0, x1 in segments:
                ax.plot([x0, x1], [target, target], color=TARGET_COLOR, linestyle="--", marker="_", markersize=16,
                        markeredgewidth=2, linewidth=1.5)
                target_labels[label] = label
            ax.set_title(metric)
            ax.set_ylabel(f"{metric} (F1 × 100)")
            ax.set_xlabel(x_label, fontsize=8)
            ax.tick_params(axis="x", labelrotation=35, labelsize=6)
            ax.grid(alpha=0.3)
        fig_m.suptitle(title)
        handles = [Line2D([], [], linestyle="", marker="o", color=c, label=_short(n, 44))
                   for n, c in node_handles.items()]
        handles += [Line2D([], [], linestyle="--", marker="_", color=TARGET_COLOR, label=label)
                    for label in target_labels]
        _side_legend(fig_m, handles)
        return fig_m

    unknown = sorted({b or "unknown" for b in benchmarks if not minimums.get(b)})
    notes = [f"no accuracy target known for: {', '.join(unknown)} (drawn without a target, no verdict)"] if unknown \
        else []
    return Chart(key=key, title=title, figure_dict={"data": traces, "layout": layout}, render=render, notes=notes)


def _target_text(minimums: Mapping[str, float] | None, metric: str) -> str:
    value = (minimums or {}).get(metric)
    return "none known" if value is None else f"≥ {value:.4f}"


def rouge_minimums(benchmark: object) -> dict[str, float]:
    """The ROUGE minimums (99% or 99.9% of the reference) of any spelling of a benchmark, from the benchmark
    registry; {} for a benchmark it does not know (llama2-70b, mixtral...), which is then drawn without a target."""
    target = registry.accuracy_target(benchmark)
    if target is None:
        return {}
    return {m: float(low) for m, (low, _high) in target.thresholds().items() if m in ROUGE_METRICS}


@functools.lru_cache(maxsize=256)
def _thresholds(benchmark: str) -> dict[str, tuple[float, float | None]] | None:
    target = registry.accuracy_target(benchmark)
    return None if target is None else target.thresholds()


def accuracy_verdict(row: Mapping) -> bool | None:
    """`accuracy_passed` from the store; when it is absent (logs ingested without scoring, or the benchmark only
    known from the path), the run's figures against the benchmark's MLPerf thresholds (ROUGE minimums and gen_len
    bounds, from the benchmark registry); None when neither is known."""
    stored = row.get("accuracy_passed")
    if not isnull(stored):
        return bool(stored)
    if isnull(row.get("rouge1")) or isnull(row.get("benchmark")):
        return None
    thresholds = _thresholds(str(row.get("benchmark")))
    if thresholds is None:  # unknown benchmark (llama2-70b, mixtral...)
        return None
    checked = [(float(row.get(m)), low, high) for m, (low, high) in thresholds.items() if not isnull(row.get(m))]
    if not checked:
        return None
    return all(value >= low and (high is None or value <= high) for value, low, high in checked)


# ------------------------------------------------------------------------------- your runs vs published results

_NO_ACCELERATOR = {"", "n/a", "na", "none", "null", "-", "–", "cpu", "not applicable"}


def accelerator_family(name: object) -> str | None:
    """The accelerator model a name denotes, for matching runs on the same GPU: `NVIDIA H200-SXM-141GB`,
    `NVIDIA H200` -> `H200`; `AMD Instinct MI300X` -> `MI300X`; `NVIDIA GeForce RTX 4090` -> `RTX 4090`. A name
    without a model number is kept whole; None for no accelerator (`N/A`, CPU-only systems)."""
    if isnull(name):
        return None
    text = str(name).strip()
    if text.lower() in _NO_ACCELERATOR:
        return None
    prefix = ""
    for token in re.split(r"[\s_/,()+-]+", text.lower()):
        if token in ("rtx", "gtx"):
            prefix = token.upper() + " "
            continue
        if re.fullmatch(r"[a-z]{0,3}\d{2,4}[a-z]{0,3}", token) and not re.fullmatch(r"\d+(gb|g|tb|w)", token):
            return prefix + token.upper()
    return text


def workload(benchmark: object) -> str | None:
    """The benchmark a run's performance compares under: its accuracy variant (-99, -99.9) and the Interactive
    label set aside (`gptj-99.9` -> `gptj`, `llama3.1-8b-interactive` -> `llama3.1-8b`, `llama2-70b-99` ->
    `llama2-70b`); the registry's harness benchmark for names it knows."""
    if isnull(benchmark):
        return None
    target = registry.accuracy_target(benchmark)
    if target is not None:
        return target.family
    name = str(benchmark).strip().lower()
    name = re.sub(r"-interactive$", "", name)
    return re.sub(r"-99(\.9)?$", "", name) or None


def is_published(row: Mapping) -> bool:
    """A run from a published MLPerf results tree (a submitter or a results round is known), not one of yours."""
    return any(not isnull(row.get(k)) and str(row.get(k)) for k in ("submitter", "round"))


def accelerator_count(row: Mapping) -> int | None:
    """Accelerators the run used in all: accelerators per node x nodes (None when unknown or zero)."""
    per_node = _num(row.get("accelerators_per_node"))
    nodes = _num(row.get("number_of_nodes")) or 1.0
    if per_node is None or per_node <= 0:
        return None
    return int(per_node * max(nodes, 1.0))


def tokens_per_accelerator(row: Mapping) -> float | None:
    """Headline tokens/s per accelerator: run_summary's `tokens_per_second_per_accelerator`, else computed."""
    stored = _num(row.get("tokens_per_second_per_accelerator"))
    if stored is not None:
        return stored
    count, tps = accelerator_count(row), headline_tokens_per_second(row)
    return None if count is None or tps is None else tps / count


def published_context(summary: pd.DataFrame, colors: Mapping[str, str] | None = None) -> Chart:
    """Your runs beside the published MLPerf results for the same benchmark, scenario and accelerator:
    tokens/s per accelerator, with the submitter, round and division of each published point.

    Your runs are the latest performance run of each node/scenario/benchmark/backend that does not come from a
    published results tree (`is_published`); accelerators match by model (`accelerator_family`). When none of
    your runs has a known accelerator, the published results are shown by themselves. `.table` holds the rows,
    `.notes` says which runs have no known accelerator and why."""
    key, title = "published_context", "Your runs vs published results (tokens/s per accelerator)"
    runs = performance_runs(summary)
    if runs.empty:
        return _missing(key, title, "no performance runs")
    # Vectorised over every performance run (thousands of nightly runs); rows only for the runs that can be shown.
    published = ((_col(runs, "submitter").notna() & (_col(runs, "submitter").astype(str) != ""))
                 | (_col(runs, "round").notna() & (_col(runs, "round").astype(str) != ""))).to_numpy()
    accelerators = _col(runs, "accelerator")
    families = accelerators.map({v: accelerator_family(v) for v in accelerators.dropna().unique()})
    per_node = pd.to_numeric(_col(runs, "accelerators_per_node"), errors="coerce").astype("float64")
    nodes = pd.to_numeric(_col(runs, "number_of_nodes"), errors="coerce").astype("float64").fillna(1).clip(lower=1)
    per_acc = pd.to_numeric(_col(runs, "tokens_per_second_per_accelerator"), errors="coerce").astype("float64")
    per_acc = per_acc.fillna(headline_series(runs) / (per_node * nodes).where(per_node > 0))
    counted = (per_node > 0).to_numpy()
    known = families.notna().to_numpy() & counted
    usable = known & per_acc.notna().to_numpy()
    notes_col = [None if isnull(v) or not str(v) else str(v) for v in _col(runs, "system_note")]
    unknown: dict[tuple[str, str], int] = {}
    for i in np.flatnonzero(~usable):
        why = "no tokens/s in its logs" if known[i] else \
            "accelerator unknown: " + (notes_col[i] or "no systems JSON or GPU list known")
        who = "published" if published[i] else "yours"
        unknown[(who, why)] = unknown.get((who, why), 0) + 1
    rows = []
    for i, (_, r) in zip(np.flatnonzero(usable), _iterrows(runs[usable])):
        rows.append({**r, "_published": bool(published[i]), "_family": families.iloc[i],
                     "_per_acc": float(per_acc.iloc[i]),
                     "_group": (workload(r.get("benchmark")) or "?", scenario_kind(r), families.iloc[i])})
    notes = []
    for who in ("yours", "published"):
        reasons = {why: n for (w, why), n in unknown.items() if w == who}
        if reasons:
            total = sum(reasons.values())
            label = "of your runs" if who == "yours" else "published runs"
            notes.append(f"Left out: {total} {label}: "
                         + "; ".join(f"{why} ({n})" for why, n in sorted(reasons.items())) + ".")
    yours_all = pd.DataFrame([r for r in rows if not r["_published"]])
    yours = latest_per_group(yours_all) if not yours_all.empty else yours_all
    published = [r for r in rows if r["_published"]]
    groups = sorted({r["_group"] for _, r in _iterrows(yours)}) if not yours.empty else \
        sorted({r["_group"] for r in published})
    if not groups:
        missing = _missing(key, title, "no run with a known accelerator and tokens/s (systems JSON of a results "
                                       "tree, or the GPU list in run_manifest.json)")
        missing.notes = notes
        return missing
    colors = dict(colors or node_colors([r["node"] for r in rows]))
    table_rows, points = [], []
    for group in groups:
        mine = [r for _, r in _iterrows(yours) if r["_group"] == group] if not yours.empty else []
        theirs = sorted((r for r in published if r["_group"] == group), key=lambda r: -r["_per_acc"])
        best_mine = max((r["_per_acc"] for r in mine), default=None)
        for r in [*sorted(mine, key=lambda r: -r["_per_acc"]), *theirs]:
            mine_row = not r["_published"]
            count = accelerator_count(r)
            vs = "–" if best_mine is None or mine_row else f"{r['_per_acc'] / best_mine:,.2f}×"
            table_rows.append({
                "benchmark": group[0], "scenario": group[1], "accelerator": group[2],
                "run": "yours" if mine_row else "published",
                "node / system": (series_label(r, with_scenario=False) if mine_row
                                  else str(r.get("system") or r.get("node"))),
                "submitter": "–" if mine_row or isnull(r.get("submitter")) else str(r.get("submitter")),
                "round": "–" if isnull(r.get("round")) else str(r.get("round")),
                "division": "–" if isnull(r.get("division")) else str(r.get("division")),
                "accelerators": f"{count} × {r.get('accelerator')}",
                "validity": "–" if isnull(r.get("result_validity")) else str(r.get("result_validity")),
                "tokens/s": _fmt(headline_tokens_per_second(r)),
                "tokens/s per accelerator": _fmt(r["_per_acc"]),
                "vs your best": vs,
            })
            points.append((" · ".join(group), mine_row, r, count))
    table = pd.DataFrame(table_rows)
    if not any(mine for _, mine, _, _ in points):
        notes.insert(0, "None of your runs has a known accelerator: the published results are shown by themselves.")
    return _published_figure(key, title, groups, points, colors, table, notes)


def _published_figure(key: str, title: str, groups: list[tuple], points: list[tuple], colors: Mapping[str, str],
                      table: pd.DataFrame, notes: list[str]) -> Chart:
    labels = [" · ".join(g) for g in groups]
    values = [r["_per_acc"] for _, _, r, _ in points]
    log_x = _log_scale(values)
    traces: list[dict] = []
    division_symbols = {"closed": ("circle", "o"), "open": ("diamond", "D")}
    published_sets: dict[str, dict[str, list]] = {}
    mine_sets: dict[str, dict[str, list]] = {}
    for label, mine, r, count in points:
        if mine:
            node = str(r.get("node"))
            data = mine_sets.setdefault(node, {"x": [], "y": [], "custom": [],
                                               "name": f"{series_label(r, with_scenario=False)} (yours)"})
            data["custom"].append([str(r.get("run_id")), backend_label(r) or "?", str(r.get("started_at")),
                                   f"{count} × {r.get('accelerator')}", _fmt(headline_tokens_per_second(r))])
        else:
            division = str(r.get("division") or "").lower()
            name = f"published ({division})" if division else "published"
            data = published_sets.setdefault(name, {"x": [], "y": [], "custom": [], "division": division})
            data["custom"].append([str(r.get("system") or r.get("node")), str(r.get("submitter") or "?"),
                                   str(r.get("round") or "?"), str(r.get("division") or "?"),
                                   f"{count} × {r.get('accelerator')}", _fmt(headline_tokens_per_second(r))])
        data["x"].append(r["_per_acc"])
        data["y"].append(label)
    for name, data in sorted(published_sets.items()):
        symbol = division_symbols.get(data["division"], ("square", "s"))[0]
        traces.append({"type": "scatter", "mode": "markers", "name": name, "x": data["x"], "y": data["y"],
                       "marker": {"symbol": symbol, "size": 11, "color": PUBLISHED_COLOR, "opacity": 0.85,
                                  "line": {"width": 1, "color": "#555"}},
                       "customdata": data["custom"],
                       "hovertemplate": ("%{customdata[0]}<br>submitter %{customdata[1]} · round %{customdata[2]} · "
                                         "division %{customdata[3]}<br>%{customdata[4]}<br>tokens/s "
                                         "%{customdata[5]}<br>per accelerator %{x:,.1f}<extra>published</extra>")})
    for node, data in sorted(mine_sets.items()):
        color = colors.get(node, PALETTE[0])
        traces.append({"type": "scatter", "mode": "markers", "name": data["name"], "x": data["x"],
                       "y": data["y"], "customdata": data["custom"],
                       "marker": {"symbol": "star", "size": 16, "color": color, "line": {"width": 1, "color": "#222"}},
                       "hovertemplate": (f"{_escape_template(node)} · run %{{customdata[0]}}<br>backend "
                                         "%{customdata[1]} · started %{customdata[2]}<br>%{customdata[3]}<br>"
                                         "tokens/s %{customdata[4]}<br>per accelerator %{x:,.1f}"
                                         "<extra>yours</extra>")})
    height = 180 + 46 * len(labels)
    layout = _layout_dict(title, height)
    layout["margin"]["l"] = 90
    layout["xaxis"].update(title={"text": "tokens/s per accelerator" + (" (log scale)" if log_x else "")},
                           type="log" if log_x else "linear")
    layout["yaxis"].update(type="category", categoryorder="array", categoryarray=labels[::-1])  # labels say it
    mpl_published = [(data["division"], data["x"], data["y"]) for _, data in sorted(published_sets.items())]
    mpl_mine = [(data["name"], colors.get(node, PALETTE[0]), data["x"], data["y"])
                for node, data in sorted(mine_sets.items())]

    def render():
        from matplotlib.lines import Line2D

        fig_m = _mpl_figure(7.5 + 2.6 + LEGEND_WIDTH_IN, 1.6 + 0.45 * len(labels), left=2.6, right=LEGEND_WIDTH_IN,
                            bottom=0.8, top=0.5)
        ax = fig_m.add_subplot()
        position = {label: i for i, label in enumerate(labels[::-1])}
        handles = []
        for division, xs, ys in mpl_published:
            marker = division_symbols.get(division, ("square", "s"))[1]
            ax.scatter(xs, [position[y] for y in ys], marker=marker, s=50, color=PUBLISHED_COLOR, edgecolors="#555",
                       linewidths=0.6, alpha=0.85)
            handles.append(Line2D([], [], linestyle="", marker=marker, color=PUBLISHED_COLOR,
                                  label=f"published ({division})" if division else "published"))
        for name, color, xs, ys in mpl_mine:
            ax.scatter(xs, [position[y] for y in ys], marker="*", s=160, color=color, edgecolors="#222",
                       linewidths=0.6, zorder=3)
            handles.append(Line2D([], [], linestyle="", marker="*", markersize=10, color=color,
                                  label=_short(name, 44)))
        ax.set_yticks(range(len(labels)), [_short(lbl, 44) for lbl in labels[::-1]], fontsize=7)
        ax.set_ylim(-0.6, len(labels) - 0.4)
        ax.set_xlabel("tokens/s per accelerator" + (" (log scale)" if log_x else ""))
        if log_x:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.set_title(title)
        _side_legend(fig_m, handles)
        return fig_m

    return Chart(key=key, title=title, figure_dict={"data": traces, "layout": layout}, render=render, table=table,
                 notes=notes)


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

    Accuracy is taken from the newest accuracy result of the same group when the performance row has none, and
    judged against the run's own benchmark's targets; `held to (p99 limits)` says which latency limits the run was
    held to and where they come from (`latency_rules`).
    """
    runs = performance_runs(summary)
    if runs.empty:
        return pd.DataFrame()
    latest = latest_per_group(runs)
    accuracy_rows = summary[_col(summary, "rouge1").notna() | _col(summary, "accuracy_passed").notna()]
    newest = latest_per_group(accuracy_rows) if not accuracy_rows.empty else accuracy_rows  # per group
    latest_accuracy = {group_key(r): accuracy_verdict(r) for _, r in _iterrows(newest)}
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
            **telemetry_text(r),  # J/token, GPU util (%): runs with GPU telemetry
            "held to (p99 limits)": latency_rules(r).describe(),
        }
        if regressions is not None:
            row["regression"] = "; ".join(regressions.get(str(r.get("run_id")), [])) or "–"
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("J/token", "GPU util (%)"):  # shown when any run has it; "–" for the others
        if column in table.columns:
            table[column] = table[column].fillna("–")
    columns = [c for c in table.columns if c not in ("J/token", "GPU util (%)", "held to (p99 limits)", "regression")]
    columns += [c for c in ("J/token", "GPU util (%)", "held to (p99 limits)", "regression") if c in table.columns]
    return table[columns].sort_values(["node", "scenario", "benchmark", "backend"], kind="stable").reset_index(
        drop=True)


def _stamp(value: object) -> str:
    when = _as_timestamp(value)
    return when.strftime("%Y-%m-%d %H:%M") if when is not None else "–"


# ------------------------------------------------------------------------------------ charts from the harness's data


def per_sample_latencies(samples: pd.DataFrame) -> pd.DataFrame:
    """Per-sample latency, TTFT and TPOT in ms (LoadGen's definitions) from `sample_timings` rows."""
    issue = _float_array(samples, "issue_ns")
    complete = _float_array(samples, "complete_ns")
    first = _float_array(samples, "first_token_ns")
    tokens = _float_array(samples, "output_tokens")
    ttft = first - issue
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(tokens > 1, (complete - first) / (tokens - 1), np.nan)
    return pd.DataFrame({
        "run_id": samples["run_id"].to_numpy(dtype=object),
        "latency_ms": (complete - issue) / NS_PER_MS,
        "ttft_ms": ttft / NS_PER_MS,
        "tpot_ms": tpot / NS_PER_MS,
    })


def _float_array(df: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column as float64 with NaN for missing values (nullable ints included), or all NaN if absent."""
    if name not in df.columns:
        return np.full(len(df), np.nan)
    column = df[name]
    try:
        return column.to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


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
    layout = _subplots_dict(title, [p[0] for p in panels], 520, 0.08)
    by_run = {rid: g for rid, g in per_sample.groupby("run_id")}
    rows = [r for _, r in _iterrows(runs)]
    labels = unique_labels([run_label(r) for r in rows])
    traces: list[dict] = []
    seen: set[str] = set()
    mpl_panels = []
    for col, (panel, column) in enumerate(panels):
        suffix = _axis_suffix(col)
        stats_list, positions, box_colors = [], [], []
        boxes: dict[str, dict] = {}
        all_values: list[float] = []
        for i, r in enumerate(rows):
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
            traces.append({
                "type": "box", "x": box["x"], "q1": [float(b["q1"]) for b in st],
                "median": [float(b["med"]) for b in st], "q3": [float(b["q3"]) for b in st],
                "lowerfence": [float(b["whislo"]) for b in st], "upperfence": [float(b["whishi"]) for b in st],
                "mean": [float(b["mean"]) for b in st], "customdata": box["custom"], "name": name,
                "legendgroup": name, "showlegend": name not in seen, "marker": {"color": box["color"]},
                "line": {"color": box["color"]}, "xaxis": f"x{suffix}", "yaxis": f"y{suffix}",
                "hovertemplate": ("%{x}<br>run %{customdata[0]}<br>n=%{customdata[1]}<br>"
                                  "p1 %{lowerfence:.2f} · p25 %{q1:.2f} · p50 %{median:.2f}<br>"
                                  "p75 %{q3:.2f} · p99 %{upperfence:.2f} · mean %{mean:.2f} ms<extra></extra>"),
            })
            seen.add(name)
        log_y = _log_scale(all_values)
        y_label = f"{panel} (ms{', log scale' if log_y else ''})"
        layout[f"yaxis{suffix}"].update(title={"text": y_label}, type="log" if log_y else "linear")
        layout[f"xaxis{suffix}"].update(tickangle=30, type="category")
        mpl_panels.append((panel, y_label, log_y, stats_list, positions, box_colors))

    def render():
        # Panels stacked over one shared run axis: the run labels are drawn once.
        fig_m = _mpl_figure(max(7.0, 0.45 * len(labels) + 2.0), 2.3 * len(panels) + 2.2, left=1.0, bottom=1.7)
        fig_m.subplots_adjust(hspace=0.2)
        axes = fig_m.subplots(len(panels), 1, squeeze=False, sharex=True)[:, 0]
        for ax, (panel, y_label, log_y, stats_list, positions, box_colors) in zip(axes, mpl_panels):
            if stats_list:
                artists = ax.bxp(stats_list, positions=positions, showfliers=False, patch_artist=True,
                                 showmeans=True)
                for patch, color in zip(artists["boxes"], box_colors):
                    patch.set_facecolor(color)
                    patch.set_alpha(0.55)
            ax.set_ylabel(y_label)
            if log_y:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[-1].set_xticks(range(len(labels)), [_short(lbl, 30) for lbl in labels], rotation=30, ha="right",
                            fontsize=7)
        fig_m.suptitle(title)
        return fig_m

    return Chart(key=key, title=title, figure_dict={"data": traces, "layout": layout}, render=render,
                 needs_harness_data=True)


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
    columns = {c: per_sample[c].to_numpy(dtype="float64") for c in ("latency_ms", "ttft_ms", "tpot_ms")}
    columns = {c: v[~np.isnan(v)] for c, v in columns.items()}
    panels = [(p, c) for p, c in (("latency", "latency_ms"), ("TTFT", "ttft_ms"), ("TPOT", "tpot_ms"))
              if columns[c].size]
    layout = _dict_axes(f"Per-sample latencies of {run_label(run)}", 380)
    layout["grid"] = {"rows": 1, "columns": len(panels), "pattern": "independent"}
    data = []
    for i, (panel, column) in enumerate(panels):
        suffix = "" if i == 0 else str(i + 1)
        counts, edges = np.histogram(columns[column], bins=bins)
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
    key, title = "throughput_timeline", "Throughput within a run (from progress)"
    if progress is None or progress.empty or runs.empty:
        return _missing(key, title, "no progress data (progress.jsonl from our harness)", needs_harness_data=True)
    runs = sort_by_time(runs[runs["run_id"].isin(progress["run_id"].unique())])
    if runs.empty:
        return _missing(key, title, "no progress data (progress.jsonl from our harness)", needs_harness_data=True)
    colors = dict(colors or node_colors(runs["node"]))
    by_run = {rid: g.sort_values("elapsed_s") for rid, g in progress.groupby("run_id")}
    traces, lines = [], []
    for _, r in _iterrows(runs):
        points = by_run[r["run_id"]]
        if len(points) > max_points:  # keep the figure small: even thinning, last point kept
            idx = np.unique(np.linspace(0, len(points) - 1, max_points).round().astype(int))
            points = points.iloc[idx]
        name = run_label(r)
        color = colors.get(str(r["node"]), PALETTE[0])
        dash = SCENARIO_DASHES.get(scenario_kind(r), ("solid", "-"))
        xs, ys = _clean(points["elapsed_s"]), _clean(points["tokens_per_s"])
        traces.append({"type": "scatter", "x": xs, "y": ys, "name": name, "mode": "lines",
                       "line": {"color": color, "dash": dash[0]}, "customdata": _clean(_col(points, "completed")),
                       "hovertemplate": f"{_escape_template(name)}<br>%{{x:.1f}} s: %{{y:,.1f}} tokens/s<br>"
                                        "%{customdata} samples done<extra></extra>"})
        lines.append((xs, ys, color, dash[1], _short(name, 60)))
    layout = _layout_dict(title)
    layout["xaxis"]["title"] = {"text": "elapsed (s)"}
    layout["yaxis"].update(title={"text": "tokens/s"}, rangemode="tozero")

    def render():
        fig_m = _mpl_figure(9.0 + 3.4, 4.8, right=3.6)
        ax = fig_m.add_subplot()
        for xs, ys, color, dash, label in lines:
            ax.plot(xs, [np.nan if y is None else y for y in ys], color=color, linestyle=dash, label=label)
        ax.set_title(title)
        ax.set_xlabel("elapsed (s)")
        ax.set_ylabel("tokens/s")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        return fig_m

    return Chart(key=key, title=title, figure_dict={"data": traces, "layout": layout}, render=render,
                 needs_harness_data=True)


# ---------------------------------------------------------------------------------------------- capacity search

QPS_SEARCH_KEY = "qps_search"
QPS_SEARCH_TITLE = "Capacity search: target QPS against p99 TTFT / TPOT"
_SEARCH_PANELS = (("TTFT p99", "ttft"), ("TPOT p99", "tpot"), ("latency p99", "latency"))


def _search_heads(steps: pd.DataFrame) -> pd.DataFrame:
    """One row per search: node, scenario, its newest step's time (``last``) and how far it got (``stage``: 2 it has
    its result, 1 a measured probe, 0 neither: stopped before its first probe)."""
    last = steps.groupby("search_id")["recorded_at"].max()
    kinds = steps.groupby("search_id")["kind"].agg(set)
    stage = kinds.map(lambda k: 2 if "result" in k else 1 if k & {"probe", "confirm"} else 0)
    return steps.drop_duplicates("search_id").set_index("search_id")[["node", "scenario"]].assign(last=last,
                                                                                                  stage=stage)


def latest_searches(steps: pd.DataFrame) -> pd.DataFrame:
    """The `qps_search` rows of one search per node and scenario: the latest complete one (with its result); where
    none is complete, the latest with a measured probe, else the latest. A newer search that was interrupted never
    hides a complete one (:func:`hidden_searches` says which were passed over)."""
    if steps.empty:
        return steps
    heads = _search_heads(steps)
    keep = heads.sort_values(["stage", "last"]).groupby(["node", "scenario"], dropna=False).tail(1).index
    return steps[steps["search_id"].isin(keep)].sort_values(["node", "scenario", "step"], kind="stable")


def hidden_searches(steps: pd.DataFrame) -> list[str]:
    """One line per node and scenario whose newest search is not the one :func:`latest_searches` shows."""
    if steps.empty:
        return []
    heads = _search_heads(steps)
    shown = set(latest_searches(steps)["search_id"])
    lines = []
    for (node, scenario), group in heads.sort_values("last").groupby(["node", "scenario"], dropna=False, sort=False):
        newest = group.index[-1]
        if newest not in shown:
            what = "before its first probe" if group.loc[newest, "stage"] == 0 else "before its result"
            other = group.index[group.index.isin(shown)][0]
            which = "complete one" if group.loc[other, "stage"] == 2 else "one with a measured probe"
            lines.append(f"{node} · {scenario}: the newest search {newest} stopped {what} (run search-qps again to "
                         f"resume it); shown: the latest {which}, {other}")
    return lines


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
    interrupted = "" if (rows["kind"] == "result").any() else " · interrupted (no result yet)"
    return f"{first.get('node')} · {first.get('scenario')}" + (f" · {shown}" if shown else "") + interrupted


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
    hidden = hidden_searches(steps)
    steps = latest_searches(steps)
    measured = steps[steps["kind"].isin(["probe", "confirm"])]
    def has(column: str) -> bool:
        return column in measured.columns and bool(measured[column].notna().any())

    # the p99s the searches were judged by (those with a limit), else whatever was measured
    panels = [(name, prefix) for name, prefix in _SEARCH_PANELS if has(f"{prefix}_limit_ns") and has(f"{prefix}_p99_ns")]
    panels = panels or [(name, prefix) for name, prefix in _SEARCH_PANELS if has(f"{prefix}_p99_ns")]
    if measured.empty or not panels:
        return _missing(key, title, "the stored searches have no measured probe yet")
    notes: list[str] = list(hidden)
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.1)
    fig_m = Figure(figsize=(5.2 * len(panels) + 2.8, 4.8))
    fig_m.subplots_adjust(left=0.9 / fig_m.get_figwidth(), right=1 - 2.9 / fig_m.get_figwidth(), bottom=0.16,
                          top=0.86, wspace=0.3)
    axes = fig_m.subplots(1, len(panels), squeeze=False)[0]
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


def search_charts(steps: Iterable[Mapping], colors: Mapping[str, str] | None = None) -> list[Chart]:
    """The report's capacity-search chart from the store's `qps_search` rows, or [] when it holds no search."""
    rows = list(steps)
    return [qps_search_chart(pd.DataFrame(rows), colors)] if rows else []


def drop_probe_runs(summary: pd.DataFrame, probe_run_ids: Iterable[str]) -> pd.DataFrame:
    """`summary` (run_summary rows) without the capacity search's short probes and estimate probes
    (`store.search_probe_run_ids`): they stay in the store, but are not a node's latest result (nor history for
    its regression checks)."""
    ids = set(probe_run_ids)
    if not ids or summary.empty or "run_id" not in summary.columns:
        return summary
    return summary[~summary["run_id"].astype(str).isin(ids)]


# ---------------------------------------------------------------------------------------------- GPU telemetry

TELEMETRY_KEY_PREFIX = "run_telemetry_"
NO_GPU_TELEMETRY = "No GPU telemetry was recorded for this run"
WINDOW_COLOR = "#f28e2b"
_TELEMETRY_PANELS = (  # (title, y-axis label, [(column, legend label or None for one per GPU)], source)
    ("GPU utilisation", "GPU util (%)", [("gpu_util_pct", None)], "gpu"),
    ("GPU power", "power (W)", [("power_w", None)], "gpu"),
    ("KV-cache use", "KV cache (%)", [("kv_cache_usage_pct", "KV cache")], "engine"),
    ("Requests in the engine", "requests", [("requests_running", "running"), ("requests_waiting", "waiting")],
     "engine"),
    ("Generation throughput", "tokens/s", [("generation_tokens_per_s", "generation tokens/s")], "engine"),
)
_ENGINE_LINE_COLORS = {"kv_cache_usage_pct": "#76b7b2", "requests_running": "#4e79a7",
                       "requests_waiting": "#e15759", "generation_tokens_per_s": "#59a14f"}


def telemetry_chart_key(run_id: object) -> str:
    """The report's picture of one run's telemetry: `run_telemetry_<12 hex digits of the run id>.png`."""
    return TELEMETRY_KEY_PREFIX + hashlib.sha1(str(run_id).encode()).hexdigest()[:12]


def no_gpu_telemetry_sentence(info: Mapping | None) -> str:
    """Why a run has no GPU telemetry, in one sentence (a CPU node, telemetry off, or a run from before it)."""
    if not info:
        return f"{NO_GPU_TELEMETRY} (a run from before telemetry, or not our harness's)."
    if info.get("enabled") is False:
        return f"{NO_GPU_TELEMETRY} (telemetry was switched off)."
    reason = info.get("reason")
    why = f": {reason}" if not isnull(reason) and str(reason) else ""
    return f"{NO_GPU_TELEMETRY} (CPU node{why})."


def _thin(points: pd.DataFrame, max_points: int) -> pd.DataFrame:
    if len(points) <= max_points:
        return points
    return points.iloc[np.unique(np.linspace(0, len(points) - 1, max_points).round().astype(int))]


def _telemetry_series(telemetry: pd.DataFrame, info: Mapping | None, max_points: int):
    """(x axis title, test window (x0, x1) or None, panels [(title, y label, [(label, colour, xs, ys)])])."""
    df = telemetry
    t_test = pd.to_numeric(_col(df, "t_test_s"), errors="coerce")
    relative = bool(len(df)) and t_test.notna().all()
    x_all = t_test if relative else pd.to_numeric(_col(df, "t_s"), errors="coerce")
    df = df.assign(_x=x_all.astype("float64")).sort_values("_x", kind="stable")
    info = info or {}
    start, end = _num(info.get("test_start_s")), _num(info.get("test_end_s"))
    window = None
    if start is not None and end is not None:
        window = (0.0, end - start) if relative else (start, end)
    source = _col(df, "source").astype(str)
    panels = []
    for title, y_label, columns, kind in _TELEMETRY_PANELS:
        rows = df[source == kind]
        lines = []
        for column, label in columns:
            if column not in rows.columns or not rows[column].notna().any():
                continue
            if label is None:  # one line per GPU
                for gpu, g in rows.groupby(pd.to_numeric(rows["gpu"], errors="coerce")):
                    g = _thin(g[g[column].notna()], max_points)
                    color = PALETTE[int(gpu) % len(PALETTE)]
                    lines.append((f"GPU {int(gpu)}", color, _clean(g["_x"]), _clean(g[column])))
            else:
                g = _thin(rows[rows[column].notna()], max_points)
                lines.append((label, _ENGINE_LINE_COLORS.get(column, PALETTE[0]), _clean(g["_x"]), _clean(g[column])))
        if lines:
            panels.append((title, y_label, lines))
    x_title = "seconds since LoadGen's test started" if relative else "seconds since the sampler started"
    return x_title, window, panels


def run_telemetry_figure(telemetry: pd.DataFrame, run: Mapping, info: Mapping | None = None,
                         max_points: int = 600) -> dict | None:
    """One run's telemetry over the run as a plain plotly figure dict: GPU utilisation and power per GPU, KV-cache
    use, running/waiting requests and generation tokens/s, stacked on one time axis, LoadGen's timed window
    shaded. None when the run has no telemetry rows with a value (a CPU node: say so with
    `no_gpu_telemetry_sentence`). `info`: the run's `run_telemetry` row (test_start_s, test_end_s)."""
    if telemetry is None or telemetry.empty:
        return None
    x_title, window, panels = _telemetry_series(telemetry, info, max_points)
    if not panels:
        return None
    n = len(panels)
    gap = 0.06 if n > 1 else 0.0
    height = (1 - gap * (n - 1)) / n
    layout = _dict_axes(f"Over the run: {run_label(run)}", 150 + 170 * n)
    layout.update(showlegend=True, legend={"font": {"size": 11}, "tracegroupgap": 12}, shapes=[], annotations=[])
    data = []
    for i, (title, y_label, lines) in enumerate(panels):
        suffix = _axis_suffix(i)
        top = 1 - i * (height + gap)
        layout[f"yaxis{suffix}"] = {"title": {"text": y_label}, "domain": [top - height, top], "rangemode": "tozero",
                                    "gridcolor": "#ebf0f8", "anchor": f"x{suffix}"}
        layout[f"xaxis{suffix}"] = {"anchor": f"y{suffix}", "gridcolor": "#ebf0f8", "showticklabels": i == n - 1,
                                    **({"matches": "x"} if i else {}),
                                    **({"title": {"text": x_title}} if i == n - 1 else {})}
        layout["annotations"].append({"text": title, "xref": "paper", "x": 0, "xanchor": "left", "yref": "paper",
                                      "y": top, "yanchor": "bottom", "showarrow": False, "font": {"size": 12}})
        if window is not None:
            layout["shapes"].append({"type": "rect", "xref": f"x{suffix}", "x0": window[0], "x1": window[1],
                                     "yref": f"y{suffix} domain", "y0": 0, "y1": 1, "fillcolor": WINDOW_COLOR,
                                     "opacity": 0.12, "line": {"width": 0}, "layer": "below"})
        for label, color, xs, ys in lines:
            data.append({"type": "scatter", "mode": "lines", "x": xs, "y": ys, "name": label,
                         "legendgroup": f"{title}", "line": {"color": color, "width": 1.5},
                         "xaxis": f"x{suffix}", "yaxis": f"y{suffix}",
                         "hovertemplate": f"{_escape_template(label)} %{{x:.1f}} s: %{{y:,.1f}} "
                                          f"{_escape_template(y_label)}<extra></extra>"})
    if window is not None:
        layout["annotations"].append({"text": "shaded: LoadGen's timed test", "xref": "paper", "x": 1,
                                      "xanchor": "right", "yref": "paper", "y": 1, "yanchor": "bottom",
                                      "showarrow": False, "font": {"size": 11, "color": "#8a5a1b"}})
    return {"data": data, "layout": layout}


def run_telemetry_chart(telemetry: pd.DataFrame, run: Mapping, info: Mapping | None = None,
                        max_points: int = 600) -> Chart:
    """The report's picture of `run_telemetry_figure` (same panels, matplotlib); `available=False` with
    `no_gpu_telemetry_sentence` when there is nothing to draw."""
    key = telemetry_chart_key(run.get("run_id"))
    title = f"Over the run: {run_label(run)}"
    figure = run_telemetry_figure(telemetry, run, info, max_points)
    if figure is None:
        return _missing(key, title, no_gpu_telemetry_sentence(info).rstrip("."), needs_harness_data=True)
    x_title, window, panels = _telemetry_series(telemetry, info, max_points)
    notes = []
    if window is None:
        notes.append("No test_start/test_end markers: the timed window is not shaded.")

    def render():
        fig_m = _mpl_figure(9.0 + 1.6, 1.9 * len(panels) + 1.3, right=1.9, top=0.5, bottom=0.6)
        fig_m.subplots_adjust(hspace=0.35)
        axes = fig_m.subplots(len(panels), 1, squeeze=False, sharex=True)[:, 0]
        for ax, (panel, y_label, lines) in zip(axes, panels):
            if window is not None:
                ax.axvspan(window[0], window[1], color=WINDOW_COLOR, alpha=0.12, linewidth=0)
            for label, color, xs, ys in lines:
                ax.plot(xs, [np.nan if y is None else y for y in ys], color=color, linewidth=1.2, label=label)
            ax.set_title(panel, fontsize=9, loc="left")
            ax.set_ylabel(y_label, fontsize=8)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        axes[-1].set_xlabel(x_title + ("  (shaded: LoadGen's timed test)" if window is not None else ""))
        fig_m.suptitle(title, fontsize=11)
        return fig_m

    return Chart(key=key, title=title, figure_dict=figure, render=render, notes=notes, needs_harness_data=True)


def telemetry_text(row: Mapping) -> dict[str, str]:
    """J/token and mean GPU utilisation of a run_summary row, formatted ({} when the run has neither)."""
    out = {}
    energy, util = _num(row.get("energy_per_output_token_j")), _num(row.get("mean_gpu_util_pct"))
    if energy is not None:
        out["J/token"] = f"{energy:,.4f}" if energy < 10 else f"{energy:,.1f}"
    if util is not None:
        out["GPU util (%)"] = f"{util:,.1f}"
    return out
