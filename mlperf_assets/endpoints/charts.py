"""MLPerf Endpoints charts from ``endpoint_points`` rows (pure: DataFrames in, :class:`mlperf_assets.charts.Chart` out).

- the official chart (rules §4.2, §5.2): ``system_tps`` against ``tps_per_user`` as a step function through the
  curve's Pareto-optimal points, no interpolation (vertical then horizontal, as mlperf-viz draws it:
  ``stepDirection: "before"``), the dedicated Offline point a labelled throughput ceiling (§5.7.3), never a step;
- the three secondary charts against concurrency (``system_tps``, ``ttft_p90_ms``, ``tps_per_user``) with the plan's
  region bands shaded;
- GPU energy per output token from the point's telemetry (where recorded) beside what the provisioned power
  (``system_power.json``) implies: ``provisioned W / system_tps`` J/token.

Every chart is a plotly figure dict and a matplotlib drawing (PNG); :func:`charts_html` puts them in one offline
HTML page that marks ``body[data-rendered-charts]`` when plotly has drawn them.
"""

from __future__ import annotations

import html
import json
import math
from typing import Mapping, Sequence

import pandas as pd

from mlperf_assets.charts import PALETTE, Chart, _layout_dict, _missing, _mpl_figure

OFFLINE_COLOR = "#e15759"
BAND_COLORS = {"low_latency": "#f1f5fb", "low_concurrency": "#e8f1e4", "med_concurrency": "#fdf3e1",
               "high_concurrency": "#f6e6ec", "margin": "#eeeeee"}
SECONDARY = (("system_tps", "System TPS (output tokens/s)", "System TPS vs. concurrency"),
             ("ttft_p90_ms", "TTFT P90 (ms)", "Time to first token P90 vs. concurrency"),
             ("tps_per_user", "Tokens/s per user (1000 / TPOT P90 ms)", "Tokens/s per user vs. concurrency"))


def _is_offline(row: Mapping) -> bool:
    return row.get("role") == "offline" or row.get("concurrency") is None or (
        isinstance(row.get("concurrency"), float) and math.isnan(row["concurrency"]))


def _num(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def split_points(points: pd.DataFrame) -> tuple[list[dict], dict | None]:
    """(the fixed-concurrency points with both axes, by concurrency; the Offline point or None)."""
    rows = points.to_dict("records") if len(points) else []
    offline = next((r for r in rows if _is_offline(r)), None)
    curve = [r for r in rows if not _is_offline(r) and _num(r.get("system_tps")) is not None]
    return sorted(curve, key=lambda r: int(r["concurrency"])), offline


def pareto_frontier(points: Sequence[Mapping]) -> list[Mapping]:
    """The points no other point beats on both axes (higher ``tps_per_user`` and higher ``system_tps``), by
    ``tps_per_user`` ascending (so ``system_tps`` descends)."""
    usable = [p for p in points if _num(p.get("tps_per_user")) and _num(p.get("system_tps")) is not None]
    ordered = sorted(usable, key=lambda p: (-float(p["tps_per_user"]), -float(p["system_tps"])))
    frontier, best = [], -math.inf
    for p in ordered:  # from the most interactive point down, keep each that raises throughput
        if float(p["system_tps"]) > best:
            frontier.append(p)
            best = float(p["system_tps"])
    return frontier[::-1]


def step_xy(frontier: Sequence[Mapping]) -> tuple[list[float], list[float]]:
    """The step function's vertices through the frontier (x ascending): at each point's ``tps_per_user`` it drops
    vertically to the next point's ``system_tps``, then runs flat to that point. No interpolation."""
    xs: list[float] = []
    ys: list[float] = []
    for i, p in enumerate(frontier):
        x, y = float(p["tps_per_user"]), float(p["system_tps"])
        if i:
            xs.append(xs[-1])
            ys.append(y)
        xs.append(x)
        ys.append(y)
    return xs, ys


def pareto_chart(points: pd.DataFrame, *, title: str = "System TPS vs. tokens/s per user (official step function)"
                 ) -> Chart:
    curve, offline = split_points(points)
    if "official" in points and (points["official"] == False).any():  # noqa: E712 - a pandas comparison
        title = f"UNOFFICIAL (shortened curve): {title}"
    frontier = pareto_frontier(curve)
    if not frontier:
        return _missing("endpoints_pareto", title, "no point with both system_tps and tps_per_user (TPOT P90)")
    xs, ys = step_xy(frontier)
    on = {id(p) for p in frontier}
    label = [f"c={int(p['concurrency'])}" for p in curve]
    traces: list[dict] = [
        {"type": "scatter", "mode": "lines", "x": xs, "y": ys, "name": "Pareto step (official)",
         "line": {"color": PALETTE[0], "width": 2}, "hoverinfo": "skip"},
        {"type": "scatter", "mode": "markers+text", "x": [float(p["tps_per_user"]) for p in curve if p.get(
            "tps_per_user")], "y": [float(p["system_tps"]) for p in curve if p.get("tps_per_user")],
         "text": [lbl for p, lbl in zip(curve, label) if p.get("tps_per_user")], "textposition": "top right",
         "name": "measured points", "marker": {"size": 8, "color": [PALETTE[0] if id(p) in on else "#bab0ac"
                                                                    for p in curve if p.get("tps_per_user")]}},
    ]
    layout = _layout_dict(title)
    layout["xaxis"].update(title={"text": "Tokens/s per user (1000 / TPOT P90 ms)"})
    layout["yaxis"].update(title={"text": "System TPS (output tokens/s)"}, rangemode="tozero")
    ceiling = _num(offline.get("system_tps")) if offline else None
    notes = []
    if ceiling is not None:
        text = f"Offline ceiling: {ceiling:,.0f} tokens/s"
        layout["shapes"] = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": ceiling, "y1": ceiling,
                             "line": {"color": OFFLINE_COLOR, "dash": "dot", "width": 2}}]
        layout["annotations"] = [{"text": text, "xref": "paper", "x": 1, "y": ceiling, "xanchor": "right",
                                  "yanchor": "bottom", "showarrow": False, "font": {"color": OFFLINE_COLOR}}]
        notes.append(text)

    def render():
        fig = _mpl_figure(8, 5)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(xs, ys, color=PALETTE[0], lw=2, label="Pareto step (official)")
        for p, lbl in zip(curve, label):
            if p.get("tps_per_user"):
                ax.plot(float(p["tps_per_user"]), float(p["system_tps"]), "o",
                        color=PALETTE[0] if id(p) in on else "#bab0ac")
                ax.annotate(lbl, (float(p["tps_per_user"]), float(p["system_tps"])), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        if ceiling is not None:
            ax.axhline(ceiling, color=OFFLINE_COLOR, ls=":", lw=2, label=f"Offline ceiling ({ceiling:,.0f})")
        ax.set_xlabel("Tokens/s per user (1000 / TPOT P90 ms)")
        ax.set_ylabel("System TPS (output tokens/s)")
        ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
        return fig

    table = pd.DataFrame([{"concurrency": int(p["concurrency"]), "tps_per_user": p.get("tps_per_user"),
                           "system_tps": p["system_tps"], "pareto": id(p) in on} for p in curve])
    return Chart("endpoints_pareto", title, figure_dict={"data": traces, "layout": layout}, render=render,
                 table=table, notes=notes)


def concurrency_chart(points: pd.DataFrame, metric: str, *, regions: Mapping[str, tuple[int, int]] | None = None
                      ) -> Chart:
    """One of the three secondary charts: ``metric`` against concurrency (log axis), region bands shaded."""
    ylabel, title = next((y, t) for m, y, t in SECONDARY if m == metric)
    key = f"endpoints_{metric}_vs_concurrency"
    curve, _ = split_points(points)
    curve = [p for p in curve if _num(p.get(metric)) is not None]
    if not curve:
        return _missing(key, title, f"no point has {metric}")
    xs = [int(p["concurrency"]) for p in curve]
    ys = [float(p[metric]) for p in curve]
    text = [str(p.get("region") or p.get("role") or "") for p in curve]
    bands = [(name, lo, hi) for name, (lo, hi) in (regions or {}).items()]
    layout = _layout_dict(title)
    layout["xaxis"].update(title={"text": "Concurrency"}, type="log")
    layout["yaxis"].update(title={"text": ylabel}, rangemode="tozero")
    layout["shapes"] = [{"type": "rect", "xref": "x", "yref": "paper", "x0": lo, "x1": hi, "y0": 0, "y1": 1,
                         "fillcolor": BAND_COLORS.get(name, "#f4f4f4"), "opacity": 0.7, "layer": "below",
                         "line": {"width": 0}} for name, lo, hi in bands]
    layout["annotations"] = [{"text": name, "xref": "x", "yref": "paper", "x": math.log10(math.sqrt(lo * hi)),
                              "y": 1, "showarrow": False, "yanchor": "bottom", "font": {"size": 9}}
                             for name, lo, hi in bands]
    traces = [{"type": "scatter", "mode": "lines+markers", "x": xs, "y": ys, "text": text, "name": metric,
               "hovertemplate": "c=%{x}<br>%{y:.4g}<br>%{text}<extra></extra>", "line": {"color": PALETTE[0]}}]

    def render():
        fig = _mpl_figure(8, 4.5)
        ax = fig.add_subplot(1, 1, 1)
        for name, lo, hi in bands:
            ax.axvspan(lo, hi, color=BAND_COLORS.get(name, "#f4f4f4"), alpha=0.9, lw=0)
            ax.text(math.sqrt(lo * hi), 1.01, name, transform=ax.get_xaxis_transform(), ha="center", fontsize=6)
        ax.plot(xs, ys, "o-", color=PALETTE[0])
        ax.set_xscale("log")
        ax.set_xlabel("Concurrency")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10, pad=14)
        return fig

    return Chart(key, title, figure_dict={"data": traces, "layout": layout}, render=render,
                 table=pd.DataFrame({"concurrency": xs, metric: ys}))


def energy_chart(points: pd.DataFrame, *, provisioned_kw: float | None = None) -> Chart:
    """J per output token: measured (GPU telemetry, NVML) where recorded, and implied by the provisioned power."""
    title = "Energy per output token: measured GPU energy and provisioned power"
    curve, offline = split_points(points)
    rows = curve + ([offline] if offline else [])
    names = [f"c={int(r['concurrency'])}" if not _is_offline(r) else "Offline" for r in rows]
    measured = [_num(r.get("energy_j_per_token")) for r in rows]
    provisioned = [provisioned_kw * 1000 / float(r["system_tps"]) if provisioned_kw and _num(r.get("system_tps"))
                   else None for r in rows]
    if not any(v is not None for v in measured + provisioned):
        return _missing("endpoints_energy", title, "no GPU telemetry recorded and no provisioned power "
                        "(system_power.json) given")
    traces = []
    if any(v is not None for v in measured):
        traces.append({"type": "bar", "x": names, "y": measured, "name": "measured GPU energy (NVML)",
                       "marker": {"color": PALETTE[4]}})
    if any(v is not None for v in provisioned):
        traces.append({"type": "bar", "x": names, "y": provisioned,
                       "name": f"provisioned power ({provisioned_kw:g} kW) / system_tps",
                       "marker": {"color": PALETTE[1]}})
    layout = _layout_dict(title)
    layout["barmode"] = "group"
    layout["yaxis"].update(title={"text": "J per output token"})

    def render():
        import numpy as np

        fig = _mpl_figure(8, 4.5)
        ax = fig.add_subplot(1, 1, 1)
        idx = np.arange(len(names))
        width = 0.4 if len(traces) == 2 else 0.6
        for i, t in enumerate(traces):
            ax.bar(idx + (i - (len(traces) - 1) / 2) * width, [v or 0 for v in t["y"]], width,
                   label=t["name"], color=t["marker"]["color"])
        ax.set_xticks(idx, names, fontsize=7)
        ax.set_ylabel("J per output token")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
        return fig

    return Chart("endpoints_energy", title, figure_dict={"data": traces, "layout": layout}, render=render,
                 table=pd.DataFrame({"point": names, "measured_j_per_token": measured,
                                     "provisioned_j_per_token": provisioned}))


def endpoints_charts(points: pd.DataFrame, *, regions: Mapping[str, tuple[int, int]] | None = None,
                     provisioned_kw: float | None = None) -> list[Chart]:
    """Every Endpoints chart of one curve, the official Pareto first."""
    return [pareto_chart(points), *(concurrency_chart(points, m, regions=regions) for m, _, _ in SECONDARY),
            energy_chart(points, provisioned_kw=provisioned_kw)]


_PAGE_SCRIPT = """
(async () => {
  const charts = JSON.parse(document.getElementById("chart-data").textContent);
  let rendered = 0;
  try {
    for (const c of charts) {
      await Plotly.newPlot(c.key, c.figure.data, c.figure.layout, {displaylogo: false, responsive: true});
      rendered += 1;
    }
    document.body.setAttribute("data-rendered-charts", String(rendered));
  } catch (e) {
    document.body.setAttribute("data-render-error", String(e));
  }
})();
"""


def charts_html(charts: Sequence[Chart], *, title: str = "MLPerf Endpoints curve", plotly_js: str | None = None
                ) -> str:
    """One self-contained page (plotly.js inlined, nothing fetched) of the available charts, with a line per chart
    that is missing and why."""
    if plotly_js is None:
        from plotly.offline import get_plotlyjs

        plotly_js = get_plotlyjs()
    shown = [c for c in charts if c.available and c.figure_dict is not None]
    data = json.dumps([{"key": c.key, "figure": c.figure_dict} for c in shown]).replace("</", "<\\/")
    missing = "".join(f"<li>{html.escape(c.title)}: {html.escape(c.reason or '')}</li>"
                      for c in charts if not c.available)
    notes = "".join(f"<li>{html.escape(n)}</li>" for c in shown for n in c.notes)
    divs = "".join(f'<div id="{html.escape(c.key)}" class="chart"></div>' for c in shown)
    script = plotly_js.replace("</script", "<\\/script")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:20px}.chart{max-width:1000px}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><ul>{notes}</ul>{divs}"
            + (f"<h2>Not drawn</h2><ul>{missing}</ul>" if missing else "")
            + f"<script>{script}</script>"
            f'<script id="chart-data" type="application/json">{data}</script>'
            f"<script>{_PAGE_SCRIPT}</script></body></html>")
